"""Soak: the platform as `mdp up` runs it (API, Dagster daemon and webserver) under a steady feed
from the synthetic feeder and steady readers for `--minutes`. Reports sustained ticks/s, errors,
p99 latencies and the resident memory of the API and the Dagster daemon over time, then waits for
the pipeline to catch up and reconciles: every acked tick is one trade, every candle exact."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil

from core.config import Settings
from core.db import connect
from mdp.bench.freshness import ack_to_materialized
from mdp.bench.load import percentiles
from mdp.bench.up import RunningPlatform, cpu_seconds, running_platform
from mdp.feeder import FeedConfig, FeedStats, run_feed
from mdp.reconcile import candle_differences, read_ack_log, unpromoted

READERS = 4  # concurrent readers, each pausing READ_PAUSE between requests
READ_PAUSE = 0.05
MAX_SAMPLE_EVERY = 30.0  # seconds between memory samples (at least 10 samples per run)
CATCH_UP_TIMEOUT = 300.0

# What the readers ask, in turn, for each symbol: the dashboard's and analysts' reads.
READS = {
    "/candles 1m": "/candles?symbol={symbol}&interval=1m",
    "/candles 1h": "/candles?symbol={symbol}&interval=1h",
    "/tickers": "/tickers/{symbol}",
    "/v2/aggs 5m": "/v2/aggs/ticker/{symbol}/range/5/minute/{yesterday}/{today}",
    "/status/ingestion": "/status/ingestion",
    "/metrics": "/metrics",
}


@dataclass
class Reads:
    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failed: int = 0
    stale_seen: int = 0
    stream_events: int = 0
    stream_dropped: int = 0


def bench_soak(
    url: str, settings: Settings, *, minutes: float = 10.0, rate: float = 1000.0
) -> dict[str, Any]:
    """`rate`: ticks/s offered by the feeder (4 sources, batches of 50)."""
    with tempfile.TemporaryDirectory(prefix="mdp-soak-") as scratch:
        ack_log = Path(scratch) / "acked.tsv"
        with running_platform(url, feed=False) as platform:
            started, cpu_before = time.monotonic(), cpu_seconds(url, platform.process.pid)
            stats, reads, memory = asyncio.run(
                _load(platform, settings.symbol_list, minutes * 60, rate, ack_log)
            )
            seconds = time.monotonic() - started
            cpu_after = cpu_seconds(url, platform.process.pid)
            catch_up_s = _wait_for_empty_inbox(url)
            runs = _run_statuses(platform.dagster_database)
        with connect(url, autocommit=True) as conn:
            lag = ack_to_materialized(conn)["ack_to_materialized_s"]
            [(promoted,)] = conn.execute("SELECT count(*) FROM trades").fetchall()
            reconciliation = unpromoted(conn, read_ack_log(ack_log))
            reconciliation["candle_differences"] = len(candle_differences(conn))
    errors = {
        "feed_rejected": stats.rejected,
        "reads_failed": reads.failed,
        "stream_dropped": reads.stream_dropped,
        "runs_failed": runs.get("FAILURE", 0),
    }
    return {
        "minutes": round(seconds / 60, 2),
        "offered_ticks_per_s": rate,
        "acked_ticks_per_s": round(stats.ticks / seconds, 1),
        "promoted_trades_per_s": round(promoted / seconds, 1),
        "errors": {**errors, "total": sum(errors.values())},
        "feed_retries": stats.retries,
        "ingest_batch_ack_ms": _percentiles(stats.ack_ms),
        "reads_ms": {route: _percentiles(ms) for route, ms in reads.latencies_ms.items()},
        "reads_per_s": round(sum(map(len, reads.latencies_ms.values())) / seconds, 1),
        "stream_events": reads.stream_events,
        "status_stale_answers": reads.stale_seen,
        "ack_to_materialized_s": lag,
        "catch_up_after_feed_s": catch_up_s,
        "dagster_runs": runs,
        "cpu_cores_used": {
            part: round((cpu_after[part] - cpu_before[part]) / seconds, 2)
            for part in cpu_after.keys() & cpu_before.keys()
        },
        "memory_mib": memory,
        "reconciliation": reconciliation,
    }


async def _load(
    platform: RunningPlatform, symbols: list[str], seconds: float, rate: float, ack_log: Path
) -> tuple[FeedStats, Reads, dict[str, Any]]:
    stop = asyncio.Event()
    user, password = platform.credentials
    feed_config = FeedConfig(
        url=platform.api,
        symbols=symbols,
        rate=rate,
        sources=4,
        batch_size=50,
        username=user,
        password=password,
        ack_log=ack_log,
    )
    reads = Reads()
    samples = []
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=platform.api, timeout=30) as client:
        tasks = [asyncio.create_task(_read(client, symbols, reads, stop)) for _ in range(READERS)]
        tasks.append(asyncio.create_task(_listen(client, reads, stop)))
        feed = asyncio.create_task(run_feed(feed_config, stop))
        every = min(MAX_SAMPLE_EVERY, seconds / 10)
        while (elapsed := time.monotonic() - started) < seconds:
            samples.append(_sample(elapsed, platform.process.pid))
            await asyncio.sleep(min(every, seconds - elapsed))
        samples.append(_sample(time.monotonic() - started, platform.process.pid))
        stop.set()
        stats = await feed
        await asyncio.gather(*tasks)
    return stats, reads, _memory_report(samples)


async def _read(
    client: httpx.AsyncClient, symbols: list[str], reads: Reads, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        today = datetime.now(UTC).date()
        dates = {"yesterday": today - timedelta(days=1), "today": today}
        for symbol in symbols:
            for route, path in READS.items():
                started = time.perf_counter()
                try:
                    response = await client.get(path.format(symbol=symbol, **dates))
                except httpx.HTTPError:
                    reads.failed += 1
                    continue
                reads.latencies_ms[route].append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    reads.failed += 1
                elif route == "/status/ingestion" and response.json()["status"] != "alive":
                    reads.stale_seen += 1
                await asyncio.sleep(READ_PAUSE)
                if stop.is_set():
                    return


async def _listen(client: httpx.AsyncClient, reads: Reads, stop: asyncio.Event) -> None:
    """Follow /stream; a stream that ends or fails before the stop counts as dropped."""

    async def follow() -> None:
        async with client.stream("GET", "/stream", timeout=None) as stream:
            async for line in stream.aiter_lines():
                if line.startswith("data:"):
                    reads.stream_events += 1

    while not stop.is_set():
        following = asyncio.create_task(follow())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({following, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await following
            return
        stopping.cancel()
        reads.stream_dropped += 1


def _sample(elapsed: float, platform_pid: int) -> dict[str, float]:
    """Resident memory in MiB of the API (with its workers), the Dagster daemon, and the code
    server where sensors run and runs are launched from (children of `mdp up`, looked up at every
    sample)."""
    sample = {"t_s": round(elapsed, 1)}
    with contextlib.suppress(psutil.Error):  # a process gone meanwhile: left out of this sample
        for child in psutil.Process(platform_pid).children():
            command = " ".join(child.cmdline())
            if "mdp serve" in command:
                sample["api"] = _mib([child, *child.children(recursive=True)])
            elif "dagster-daemon" in command:
                sample["dagster_daemon"] = _mib([child])
            elif "dagster api grpc" in command:
                sample["dagster_code_server"] = _mib([child])
    return sample


def _mib(processes: list[psutil.Process]) -> float:
    rss: int = sum(p.memory_info().rss for p in processes)
    return round(rss / 2**20, 1)


def _memory_report(samples: list[dict[str, float]]) -> dict[str, Any]:
    """RSS per process over time, and its growth after warm-up: from the first sample past a
    quarter of the run to the last one."""
    warm = next(s for s in samples if s["t_s"] >= samples[-1]["t_s"] / 4)
    growth = {
        name: round(samples[-1][name] - warm[name], 1)
        for name in samples[-1].keys() & warm.keys() - {"t_s"}
    }
    return {"growth_after_warm_up": growth, "samples": samples}


def _wait_for_empty_inbox(url: str) -> float:
    """Seconds from the end of the feed until the pipeline has promoted everything."""
    started = time.monotonic()
    with connect(url, autocommit=True) as conn:
        while conn.execute("SELECT count(*) > 0 FROM trade_inbox").fetchone() == (True,):
            if time.monotonic() - started > CATCH_UP_TIMEOUT:
                raise TimeoutError("the pipeline did not catch up with the feed")
            time.sleep(0.5)
    return round(time.monotonic() - started, 1)


def _run_statuses(dagster_database: str) -> dict[str, int]:
    with connect(dagster_database) as conn:
        rows = conn.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall()
    return dict(rows)


def _percentiles(milliseconds: list[float]) -> dict[str, float]:
    found = percentiles(milliseconds, 50, 99)
    if not found:
        return {}
    return {"count": len(milliseconds), **found, "max": round(max(milliseconds), 1)}
