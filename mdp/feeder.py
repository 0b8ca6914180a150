"""The synthetic multi-source feeder: random-walk trades from several exchange-like sources, with
their own latency, sale conditions, and a share of duplicate, out-of-order and late ticks, POSTed
until acked."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import httpx

log = logging.getLogger(__name__)

SOURCE_NAMES = ["XNAS", "ARCX", "BATS", "IEXG", "EDGX", "MEMX", "XCHI", "LTSE"]
RETRYABLE = {408, 425, 429, 500, 502, 503, 504}
# Sale conditions roughly as a consolidated US tape carries them: mostly regular trades, odd lots
# (37) and intermarket sweeps (14), and a few prints priced away from the market that must not
# move a bar's prices: average price (2) and derivatively priced (10) trades.
CONDITION_MIX: tuple[tuple[list[int] | None, float], ...] = (
    (None, 0.70),
    ([37], 0.14),
    ([14], 0.08),
    ([14, 37], 0.04),
    ([14, 41], 0.02),
    ([2], 0.01),
    ([10], 0.01),
)
ODD_LOT = 37
AWAY_FROM_MARKET = {2, 10}


@dataclass
class FeedConfig:
    url: str
    symbols: list[str]
    rate: float = 50.0
    sources: int = 3
    duration: float | None = None
    batch_size: int = 20
    duplicate_share: float = 0.01
    out_of_order_share: float = 0.05
    late_share: float = 0.005
    username: str | None = None
    password: str | None = None
    ack_log: Path | None = None
    seed: int | None = None


@dataclass
class FeedStats:
    batches: int = 0
    ticks: int = 0
    duplicates: int = 0
    late: int = 0
    retries: int = 0
    rejected: int = 0
    ack_ms: list[float] = field(default_factory=list, repr=False)
    """The latency of each acked POST (the last attempt's, when it was retried)."""


@dataclass
class Source:
    """One venue: its own event-id sequence and network latency.

    The sequence goes on across runs, as a feed handler's does after a restart: a run starts it at
    the current time in microseconds, beyond any number an earlier run reached (no source sends a
    million ticks a second), so a restarted feeder never reuses an identity."""

    name: str
    latency: float
    rng: random.Random
    next_id: int = field(default_factory=lambda: time.time_ns() // 1000)
    sent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=200))

    def event_id(self) -> str:
        self.next_id += 1
        return f"{self.name}-{self.next_id}"


class PriceWalk:
    """Per-symbol geometric random walk shared by all sources (they quote the same market)."""

    def __init__(self, symbols: list[str], rng: random.Random) -> None:
        self.rng = rng
        self.prices = {s: rng.uniform(20, 500) for s in symbols}

    def step(self, symbol: str) -> float:
        price = self.prices[symbol] * math.exp(self.rng.gauss(0, 0.0005))
        self.prices[symbol] = price
        return round(price, 4)


def make_batch(
    cfg: FeedConfig, source: Source, walk: PriceWalk, stats: FeedStats
) -> list[dict[str, Any]]:
    rng = source.rng
    now = datetime.now(UTC) - timedelta(seconds=source.latency)
    batch: list[dict[str, Any]] = []
    for _ in range(cfg.batch_size):
        if source.sent and rng.random() < cfg.duplicate_share:
            batch.append(rng.choice(source.sent))  # a resend: same identity, same payload
            stats.duplicates += 1
            continue
        ts = now
        roll = rng.random()
        if roll < cfg.late_share:
            ts = now - timedelta(seconds=rng.uniform(60, 36 * 3600))  # may land on yesterday
            stats.late += 1
        elif roll < cfg.late_share + cfg.out_of_order_share:
            ts = now - timedelta(seconds=rng.uniform(0, 5))
        symbol = rng.choice(cfg.symbols)
        [conditions] = rng.choices(*zip(*CONDITION_MIX, strict=True))
        price, volume = walk.step(symbol), rng.randint(100, 500)
        if conditions and ODD_LOT in conditions:
            volume = rng.randint(1, 99)
        if conditions and AWAY_FROM_MARKET & set(conditions):
            price = round(price * rng.uniform(0.99, 1.01), 4)
        tick = {
            "symbol": symbol,
            "price": price,
            "volume": volume,
            "ts": ts.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "source": source.name,
            "event_id": source.event_id(),
        }
        if conditions:
            tick["conditions"] = conditions
        source.sent.append(tick)
        batch.append(tick)
    if rng.random() < cfg.out_of_order_share:
        rng.shuffle(batch)
    return batch


async def post_until_acked(
    client: httpx.AsyncClient, batch: list[dict[str, Any]], stats: FeedStats, stop: asyncio.Event
) -> bool:
    """POST one batch until it is acked (202): a refusal that may pass (RETRYABLE: a 503 while
    the database is away or the API holds all the ingest bytes it may, …) is sent again after its
    Retry-After, or a capped exponential backoff when it gives none, as is a failed connection."""
    delay = 0.1
    while True:
        pause = delay
        try:
            started = time.perf_counter()
            response = await client.post("/ingest/ticks", json=batch)
            if response.status_code == 202:
                stats.ack_ms.append((time.perf_counter() - started) * 1000)
                return True
            if response.status_code not in RETRYABLE:
                log.error("batch refused with %s: %s", response.status_code, response.text[:500])
                stats.rejected += len(batch)
                return False
            pause = retry_pause(response, delay)
        except httpx.TransportError as exc:
            log.debug("ingest unreachable (%s); retrying", type(exc).__name__)
        stats.retries += 1
        if stop.is_set() and delay > 5:
            return False
        await asyncio.sleep(pause)
        delay = min(delay * 2, 5.0)


def retry_pause(response: httpx.Response, backoff: float) -> float:
    """How long to wait before sending a refused batch again: the seconds its Retry-After asks,
    plus up to half as much again, so that clients refused together do not all come back in the
    same instant; `backoff` when it does not say."""
    asked = response.headers.get("Retry-After", "")
    if not asked.isdigit():
        return backoff
    return int(asked) * (1 + random.random() / 2)


async def run_source(
    cfg: FeedConfig,
    source: Source,
    walk: PriceWalk,
    client: httpx.AsyncClient,
    stats: FeedStats,
    ack_log: TextIO | None,
    stop: asyncio.Event,
) -> None:
    interval = cfg.batch_size * cfg.sources / cfg.rate
    next_at = time.monotonic()
    while not stop.is_set():
        batch = make_batch(cfg, source, walk, stats)
        await asyncio.sleep(source.latency)
        if await post_until_acked(client, batch, stats, stop):
            stats.batches += 1
            stats.ticks += len(batch)
            if ack_log is not None:
                ack_log.writelines(f"{t['source']}\t{t['event_id']}\n" for t in batch)
                ack_log.flush()
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def run_feed(cfg: FeedConfig, stop: asyncio.Event | None = None) -> FeedStats:
    stop = stop or asyncio.Event()
    rng = random.Random(cfg.seed)
    walk = PriceWalk(cfg.symbols, rng)
    names = SOURCE_NAMES + [f"SRC{i}" for i in range(len(SOURCE_NAMES) + 1, cfg.sources + 1)]
    sources = [
        Source(name, latency=0.002 + 0.004 * i, rng=random.Random(rng.random()))
        for i, name in enumerate(names[: cfg.sources])
    ]
    stats = FeedStats()
    auth = (cfg.username, cfg.password) if cfg.username and cfg.password else None
    ack_log = cfg.ack_log.open("a", encoding="utf-8") if cfg.ack_log else None
    try:
        async with httpx.AsyncClient(base_url=cfg.url, auth=auth, timeout=10.0) as client:
            tasks = [
                asyncio.create_task(run_source(cfg, s, walk, client, stats, ack_log, stop))
                for s in sources
            ]
            if cfg.duration is not None:
                with_timeout = asyncio.create_task(asyncio.sleep(cfg.duration))
                with_timeout.add_done_callback(lambda _: stop.set())
            await asyncio.gather(*tasks)
    finally:
        if ack_log is not None:
            ack_log.close()
    return stats
