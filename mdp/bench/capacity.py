"""Capacity: the whole platform as `mdp up` runs it (no feeder) under open-loop load, in steps of
offered ticks/s. Batches are posted on a fixed schedule from as many connections as it takes, and
each latency counts from the batch's scheduled send time, so a slow server cannot slow the load
down and hide its own queueing.

The default load is shaped like a market: 2,000 registered symbols with a year of history, ticks
spread over them by a Zipf law, 20 reads a second (open loop) of a random mix of `/candles` (a day
of 1m, three days of 5m, a month of 1h, a year of 1d), `/tickers` and `/v2/aggs` for symbols
drawn at random (most miss any cache), and 50 `/stream` subscribers on Zipf-drawn symbols; two
minutes a step. `simple=True` is the friendly load of the first measurements: five symbols, one
cached `/candles` URL 5 times a second and one subscriber. Per step: what was acked, latencies,
ack → materialized, errors, and the CPU each part of the machine used; then the highest rate that
held."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import msgspec

from core.config import Settings
from core.db import connect
from mdp.bench.load import exchange, percentiles, request_bytes
from mdp.bench.market import (
    ZIPF,
    candles_path,
    market_symbols,
    random_read,
    seed_history,
    zipf_draws,
)
from mdp.bench.up import RunningPlatform, cpu_seconds, running_platform
from pipelines.candles import recompute_day

BATCH = 500  # ticks per POST
SETTLE_TIMEOUT = 60.0  # seconds a step's trades may take to be materialized after it ends
HELD = {"acked_share": 0.95, "ack_p99_ms": 250, "read_p99_ms": 250, "materialized_p99_s": 10}
MARKET_READS_PER_SECOND = 20
SUBSCRIBERS, SYMBOLS_EACH = 50, 2
# Per step, the trades accepted during it (inbox received_at, just before the 202) to the commit
# of the micro-batch that made them canonical and merged them into their candles.
ACK_TO_MATERIALIZED = """
SELECT count(*), percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY lag)
FROM (
    SELECT extract(epoch FROM b.finished_at - t.received_at) AS lag
    FROM trades t JOIN ingest_batches b USING (batch_id)
    WHERE t.source = 'CAPACITY' AND t.received_at >= %(start)s AND t.received_at < %(end)s
) l
"""


@dataclass(frozen=True)
class Load:
    """What a step offers besides its ticks: the symbols ticks go to, the reads and the
    subscribers."""

    name: str
    symbols: list[str]
    zipf: bool
    """Ticks by the Zipf law over `symbols`; else round robin."""
    reads_per_second: float
    read: Callable[[random.Random, datetime], tuple[str, str]]
    """A read's kind and path, at random."""
    follows: list[list[str]]
    """One `/stream` subscriber per entry, following those symbols."""

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "symbols": len(self.symbols),
            "ticks": f"Zipf law, exponent {ZIPF}" if self.zipf else "round robin",
            "reads_per_second": self.reads_per_second,
            "stream_subscribers": len(self.follows),
        }


@dataclass
class Step:
    offered: int
    seconds: float
    ack_ms: list[float] = field(default_factory=list)
    read_ms: list[float] = field(default_factory=list)
    read_ms_by_kind: dict[str, list[float]] = field(default_factory=dict)
    acked_ticks: int = 0
    ingest_errors: Counter[str] = field(default_factory=Counter)
    read_errors: Counter[str] = field(default_factory=Counter)
    """What went wrong, by HTTP status or exception."""
    connections: int = 0


class Connections:
    """Keep-alive HTTP/1.1 connections to the API, opened whenever none is idle: an open-loop
    load never waits for a connection to come free. One idle for longer than the server keeps
    it (uvicorn: 5 s) is not reused."""

    MAX_IDLE_SECONDS = 2.0

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.idle: list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0

    async def send(self, request: bytes) -> tuple[int, bytes]:
        while self.idle:
            since, reader, writer = self.idle.pop()
            if time.monotonic() - since < self.MAX_IDLE_SECONDS:
                break
            writer.close()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self.opened += 1
        try:
            answer = await exchange(reader, writer, request)
        except BaseException:
            writer.close()
            raise
        self.idle.append((time.monotonic(), reader, writer))
        return answer

    def close(self) -> None:
        for _, _, writer in self.idle:
            writer.close()
        self.idle.clear()


def bench_capacity(
    url: str,
    settings: Settings,
    *,
    steps: list[int] | None = None,
    step_seconds: float = 120.0,
    simple: bool = False,
) -> dict[str, Any]:
    with running_platform(url, feed=False) as platform:
        load = simple_load(url, settings.symbol_list) if simple else market_load(url)
        results = []
        for rate in steps or [2000, 5000, 10_000, 15_000, 20_000]:
            result = _run_step(url, platform, load, rate, step_seconds)
            results.append(result)
            if not result["held"]:
                break
    held = [r["offered_ticks_per_s"] for r in results if r["held"]]
    return {
        "load": load.describe(),
        "batch_ticks": BATCH,
        "step_seconds": step_seconds,
        "criteria": HELD,
        "steps": results,
        "highest_rate_held": max(held) if held else None,
    }


def simple_load(url: str, symbols: list[str]) -> Load:
    """Five symbols, one `/candles` URL (a day of 1m bars, served from memory) 5 times a second,
    one subscriber."""
    _seed_a_day_of_minutes(url, symbols)

    def read(_: random.Random, now: datetime) -> tuple[str, str]:
        return "candles_1m_day", candles_path(symbols[0], "1m", now, timedelta(days=1))

    return Load("simple", symbols, False, 5, read, [[symbols[0]]])


def market_load(url: str) -> Load:
    """MARKET_SYMBOLS symbols with a year of history; reads of random symbols and ranges."""
    symbols = market_symbols()
    seed_history(url, symbols)
    draws = zipf_draws(symbols, seed=7)
    follows: list[list[str]] = []
    while len(follows) < SUBSCRIBERS:
        chosen = sorted(set(itertools.islice(draws, SYMBOLS_EACH)))
        if len(chosen) == SYMBOLS_EACH and chosen not in follows:
            follows.append(chosen)

    def read(rng: random.Random, now: datetime) -> tuple[str, str]:
        return random_read(rng, symbols, now)

    return Load("market", symbols, True, MARKET_READS_PER_SECOND, read, follows)


def _run_step(
    url: str, platform: RunningPlatform, load: Load, rate: int, seconds: float
) -> dict[str, Any]:
    cpu_before = cpu_seconds(url, platform.process.pid)
    started_at = datetime.now(UTC)
    step, stream = asyncio.run(_load(platform, load, rate, seconds))
    ended_at = datetime.now(UTC)
    cpu_after = cpu_seconds(url, platform.process.pid)
    materialized = _ack_to_materialized(url, started_at, ended_at, step.acked_ticks)
    cores = {
        part: round((cpu_after[part] - cpu_before[part]) / step.seconds, 3)
        for part in cpu_after.keys() & cpu_before.keys()
    }
    acked_per_s = step.acked_ticks / step.seconds
    ack, read = _percentiles(step.ack_ms), _percentiles(step.read_ms)
    errors = {
        "ingest": step.ingest_errors.total(),
        "reads": step.read_errors.total(),
        "stream_dropped": stream["dropped"],
        "not_materialized": materialized["missing"],
    }
    checks = {
        "acked_share": acked_per_s >= HELD["acked_share"] * rate,
        "no_errors": not any(errors.values()),
        "ack_p99": ack.get("p99", float("inf")) <= HELD["ack_p99_ms"],
        "read_p99": read.get("p99", float("inf")) <= HELD["read_p99_ms"],
        "materialized_p99": (materialized["p99_s"] or float("inf")) <= HELD["materialized_p99_s"],
    }
    return {
        "offered_ticks_per_s": rate,
        "acked_ticks_per_s": round(acked_per_s, 1),
        "ack_ms": ack,
        "read_ms": read,
        "read_ms_by_kind": {k: _percentiles(v) for k, v in sorted(step.read_ms_by_kind.items())},
        "ack_to_materialized_s": {k: v for k, v in materialized.items() if k != "missing"},
        "errors": errors,
        "error_reasons": {"ingest": dict(step.ingest_errors), "reads": dict(step.read_errors)},
        "stream_events": stream["events"],
        "connections": step.connections,
        "cpu_cores": cores,
        "cpu_us_per_tick": {
            part: round(used * 1e6 / acked_per_s, 1)
            for part, used in cores.items()
            if acked_per_s and part != "load_generator"
        },
        "held": all(checks.values()),
        "failed_checks": [name for name, ok in checks.items() if not ok],
    }


async def _load(
    platform: RunningPlatform, load: Load, rate: int, seconds: float
) -> tuple[Step, dict[str, int]]:
    step = Step(rate, seconds)
    stream = {"events": 0, "dropped": 0}
    ingest, reads = Connections(platform.api), Connections(platform.api)
    headers = platform.ingest_headers
    ticks = fresh_ticks(load.symbols, zipf=load.zipf)
    rng = random.Random(rate)

    def ingest_failed(reason: str) -> None:
        step.ingest_errors[reason] += 1

    def read_failed(reason: str) -> None:
        step.read_errors[reason] += 1

    async def post(_: int) -> None:
        body = msgspec.json.encode([next(ticks) for _ in range(BATCH)])
        status, _body = await ingest.send(
            request_bytes(platform.api, "POST", "/ingest/ticks", body, headers)
        )
        if status == 202:
            step.acked_ticks += BATCH
        else:
            ingest_failed(f"HTTP {status}")

    async def get(i: int) -> None:
        kind, path = load.read(rng, datetime.now(UTC))
        started = time.perf_counter()
        status, _body = await reads.send(request_bytes(platform.api, "GET", path))
        if status != 200:
            read_failed(f"{kind}: HTTP {status}")
            return
        elapsed = (time.perf_counter() - started) * 1000
        step.read_ms_by_kind.setdefault(kind, []).append(elapsed)

    listening = [asyncio.create_task(_follow(platform.api, s, stream)) for s in load.follows]
    started = time.perf_counter()
    await asyncio.gather(
        open_loop(started, seconds, rate / BATCH, post, step.ack_ms, ingest_failed),
        open_loop(started, seconds, load.reads_per_second, get, step.read_ms, read_failed),
    )
    step.seconds = time.perf_counter() - started
    for task in listening:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    step.connections = ingest.opened + reads.opened
    ingest.close()
    reads.close()
    return step, stream


async def open_loop(
    started: float,
    seconds: float,
    per_second: float,
    action: Callable[[int], Awaitable[None]],
    latencies: list[float],
    failed: Callable[[str], None],
) -> None:
    """Start `action(i)` at `started + i / per_second` for `seconds`, however long earlier ones
    take; each latency (ms) counts from the scheduled start. Waits for every action to end."""

    async def timed(i: int, scheduled: float) -> None:
        try:
            await action(i)
        except (OSError, asyncio.IncompleteReadError) as exc:
            failed(type(exc).__name__)
            return
        latencies.append((time.perf_counter() - scheduled) * 1000)

    running = set()
    for i in itertools.count():
        scheduled = started + i / per_second
        if scheduled - started >= seconds:
            break
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        task = asyncio.create_task(timed(i, scheduled))
        running.add(task)
        task.add_done_callback(running.discard)
    await asyncio.gather(*running)


async def _follow(api: str, symbols: list[str], stream: dict[str, int]) -> None:
    """Read `/stream` for `symbols` until cancelled; a stream that ends early counts as dropped."""
    parts = urlsplit(api)
    while True:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            writer.write(request_bytes(api, "GET", f"/stream?symbols={','.join(symbols)}"))
            while line := await reader.readline():
                if line.startswith(b"data:"):
                    stream["events"] += 1
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
        stream["dropped"] += 1


def fresh_ticks(symbols: list[str], *, zipf: bool = False) -> Iterator[dict[str, Any]]:
    """Ticks with identities of their own, at the time they are made (epoch ms): by the Zipf law
    over `symbols`, or round robin."""
    rng = random.Random(42)
    prices = {s: rng.uniform(50, 500) for s in symbols}
    chosen = zipf_draws(symbols, seed=11) if zipf else itertools.cycle(symbols)
    run = f"{time.time_ns():x}"
    for n in itertools.count():
        symbol = next(chosen)
        prices[symbol] *= 1 + rng.gauss(0, 0.0005)
        yield {
            "symbol": symbol,
            "price": round(prices[symbol], 4),
            "volume": 1 + n % 500,
            "ts": time.time_ns() // 1_000_000,
            "source": "CAPACITY",
            "event_id": f"{run}-{n}",
        }


def _seed_a_day_of_minutes(url: str, symbols: list[str]) -> None:
    """Six trades a minute for each symbol over the last day, with their candles: what the
    reader's day of 1m bars is made of."""
    now = datetime.now(UTC)
    with connect(url) as conn:
        conn.execute(
            "INSERT INTO trades (source, event_id, seq, symbol, ts, price, volume, received_at,"
            " batch_id)"
            " SELECT 'SEED', s || '-' || i, -(i * 1000 + k), s,"
            "   %(now)s - i * interval '10 seconds', 100 + random(), 1 + floor(random() * 100),"
            "   now(), 0"
            " FROM generate_series(1, 8640) i,"
            "   unnest(%(symbols)s::text[]) WITH ORDINALITY AS u(s, k)",
            {"now": now, "symbols": symbols},
        )
        conn.commit()
        for day in {(now - timedelta(days=1)).date(), now.date()}:
            recompute_day(conn, url, day)


def _ack_to_materialized(
    url: str, start: datetime, end: datetime, acked: int
) -> dict[str, float | int | None]:
    """Waits (up to SETTLE_TIMEOUT) until the step's trades are materialized; their lag."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    with connect(url, autocommit=True) as conn:
        while True:
            [(count, quantiles)] = conn.execute(
                ACK_TO_MATERIALIZED, {"start": start, "end": end}
            ).fetchall()
            if count >= acked or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    p50, p99 = quantiles or (None, None)
    return {
        "trades": count,
        "missing": max(0, acked - count),
        "p50_s": round(p50, 2) if p50 is not None else None,
        "p99_s": round(p99, 2) if p99 is not None else None,
    }


def _percentiles(milliseconds: list[float]) -> dict[str, float]:
    found = percentiles(milliseconds, 50, 99)
    return {"count": len(milliseconds), **found} if found else {}
