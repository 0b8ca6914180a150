"""Serving benchmark: `/candles` for one day of 1m bars against the same server's liveness probe,
and against computing those bars from `trades` on every request."""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import timedelta
from typing import Any

import httpx

from core.config import Settings
from core.db import connect, query
from core.intervals import day_window
from mdp.bench.candles import DAY, seed_day
from mdp.bench.load import request_bytes, run_load
from mdp.processes import api_server
from pipelines.candles import recompute_day

REQUESTS = 3000
CONCURRENCY = 16
SQL_ROUNDS = 20


def bench_serve(
    url: str, settings: Settings, *, trades: int = 1_000_000, workers: int = 1
) -> dict[str, Any]:
    symbol = settings.symbol_list[0]
    seed_day(url, trades, settings.symbol_list)
    with connect(url) as conn:
        recompute_day(conn, url, DAY)
    start, end = day_window(DAY)
    path = (
        f"/candles?symbol={symbol}&interval=1m&limit=1440"
        f"&start={start:%Y-%m-%dT%H:%M:%SZ}&end={end:%Y-%m-%dT%H:%M:%SZ}"
    )
    env = {"DATABASE_URL": url, "INGEST_USERNAME": "bench", "INGEST_PASSWORD": secrets.token_hex(8)}
    with api_server(env, workers=workers) as api:
        bars = len(httpx.get(f"{api}{path}").json()["candles"])
        candles = asyncio.run(
            run_load(api, lambda _: request_bytes(api, "GET", path), total=REQUESTS,
                     concurrency=CONCURRENCY)
        )  # fmt: skip
        probe = request_bytes(api, "GET", "/health/liveness")
        liveness = asyncio.run(
            run_load(api, lambda _: probe, total=REQUESTS, concurrency=CONCURRENCY)
        )
    # The same bars computed from the day's trades by PostgreSQL, as a request would have to.
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
        from_trades_s = (time.perf_counter() - started) / SQL_ROUNDS
    return {
        "api_workers": workers,
        "bars_per_response": bars,
        "trades_behind_them": trades // len(settings.symbol_list),
        "concurrency": CONCURRENCY,
        "candles": candles.summary(),
        "liveness": liveness.summary(),
        "ratio_candles_vs_liveness": round(candles.per_second / liveness.per_second, 3),
        "from_trades_per_request_ms": round(from_trades_s * 1000, 1),
        "speedup_vs_from_trades": round(candles.per_second * from_trades_s, 1),
        "note": "load generator, API and PostgreSQL share the machine",
    }
