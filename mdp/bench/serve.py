"""Serving benchmark, on a market of 2,000 symbols with a year of history (mdp/bench/market.py):
a mix of reads of random symbols and ranges (a day of 1m to a year of 1d, tickers, Polygon bars),
first cold (the API just started: nothing cached) then warm (the same reads again), with the
cache's hit ratio; the whole market's day bars (Polygon grouped daily) and every symbol's current
bar (`/candles/latest`); one cached URL, as the first measurements had it; each against the same
server's liveness probe, and a day of 1m bars against computing them from `trades`."""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from core.config import Settings
from core.db import connect, query
from core.intervals import market_date
from mdp.bench.load import LoadResult, request_bytes, run_load
from mdp.bench.market import candles_path, market_symbols, random_read, seed_history
from mdp.processes import api_server

MIX_READS = 2000  # distinct reads of the mix, each made once cold and once warm
REQUESTS = 3000  # requests of each one-URL measure
GROUPED_REQUESTS = 200
CONCURRENCY = 16
SQL_ROUNDS = 20


def bench_serve(url: str, settings: Settings, *, workers: int = 1) -> dict[str, Any]:
    symbols = market_symbols()
    with connect(url) as conn:
        conn.execute("TRUNCATE trade_inbox, trades, candles, ingest_batches, candle_updates")
    seed_history(url, symbols)
    now = datetime.now(UTC)
    rng = random.Random(1)
    mix = [random_read(rng, symbols, now)[1] for _ in range(MIX_READS)]
    one_day = candles_path(symbols[0], "1m", now, timedelta(days=1))
    today = market_date(now, ZoneInfo(settings.market_timezone))
    grouped = f"/v2/aggs/grouped/locale/us/market/stocks/{today}"
    env = {"DATABASE_URL": url, "INGEST_USERNAME": "bench", "INGEST_PASSWORD": secrets.token_hex(8)}
    with api_server(env, workers=workers) as api:

        def load(paths: Callable[[int], str], total: int) -> LoadResult:
            return asyncio.run(
                run_load(api, lambda i: request_bytes(api, "GET", paths(i)), total=total,
                         concurrency=CONCURRENCY)
            )  # fmt: skip

        liveness = load(lambda _: "/health/liveness", REQUESTS)
        before = _cache_reads(api)
        cold = load(mix.__getitem__, len(mix))
        after_cold = _cache_reads(api)
        warm = load(mix.__getitem__, len(mix))
        after_warm = _cache_reads(api)
        market_day = load(lambda _: grouped, GROUPED_REQUESTS)
        latest = load(lambda _: "/candles/latest?interval=1m", REQUESTS)
        single = load(lambda _: one_day, REQUESTS)
        bars = len(httpx.get(f"{api}{one_day}").json()["candles"])
    from_trades_s = _from_trades_seconds(url, symbols[0], now)

    def measure(result: LoadResult) -> dict[str, Any]:
        return {
            **result.summary(),
            "ratio_vs_liveness": round(result.per_second / liveness.per_second, 3),
        }

    return {
        "api_workers": workers,
        "concurrency": CONCURRENCY,
        "market": f"{len(symbols)} symbols, a year of history",
        "liveness": liveness.summary(),
        "mix_cold": {**measure(cold), "cache": _hit_ratio(before, after_cold)},
        "mix_warm": {**measure(warm), "cache": _hit_ratio(after_cold, after_warm)},
        "grouped_daily_all_symbols": measure(market_day),
        "candles_latest_all_symbols": measure(latest),
        "one_cached_url": {**measure(single), "bars_per_response": bars},
        "from_trades_per_request_ms": round(from_trades_s * 1000, 1),
        "one_url_speedup_vs_from_trades": round(single.per_second * from_trades_s, 1),
        "note": "closed loop; the mix: random symbols among 2,000, a day of 1m, three days of 5m, "
        "a month of 1h, a year of 1d, /tickers and two days of Polygon 5-minute bars; cold right "
        "after the API started, warm the same reads again; load generator, API and PostgreSQL "
        "share the machine",
    }


def _cache_reads(api: str) -> dict[str, float]:
    """The API's `mdp_candle_cache_reads_total` by outcome (hit, built, direct)."""
    text = httpx.get(f"{api}/metrics", headers={"Accept": "text/plain"}).text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("mdp_candle_cache_reads_total{"):
            labels, value = line.rsplit(" ", 1)
            outcome = labels.split('outcome="', 1)[1].split('"', 1)[0]
            counts[outcome] = counts.get(outcome, 0.0) + float(value)
    return counts


def _hit_ratio(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    reads = {k: int(after.get(k, 0) - before.get(k, 0)) for k in after.keys() | before.keys()}
    total = sum(reads.values())
    return {
        "candle_reads": reads,
        "hit_ratio": round(reads.get("hit", 0) / total, 3) if total else None,
    }


def _from_trades_seconds(url: str, symbol: str, now: datetime) -> float:
    """A day of 1m bars computed from `trades` by PostgreSQL, as a request without candles would."""
    start, end = now - timedelta(days=1), now
    params = {
        "interval": "1m",
        "width": timedelta(minutes=1),
        "start": start,
        "end": end,
        "symbol": symbol,
    }
    with connect(url) as conn:
        started = time.perf_counter()
        for _round in range(SQL_ROUNDS):
            conn.execute(query("candles_by_sql"), params).fetchall()
        return (time.perf_counter() - started) / SQL_ROUNDS
