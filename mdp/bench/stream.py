"""Streaming: the platform as `mdp up` runs it (no feeder) over a market of SYMBOLS registered
symbols, ticks drawn by a Zipf law and posted open loop at `rate`/s in batches of BATCH, and
WebSocket subscribers on `/stocks`. First one subscriber to every trade (`T.*`); then
`subscribers` connections at once, each on its own distinct set of one or two symbols drawn by
the same law (a crowd watches what trades), so the shared encoder meets as many subscriptions as
there are connections.

What is measured, from when to when:
- `ack_ms`: from a batch's scheduled send time (when the open loop was due to post it) to its 202.
- `send_to_delivery_ms`: from the scheduled send time of the batch that carried a trade to the
  moment its `T` event was read off a subscriber's socket, for every copy delivered. The send time
  is noted before the request goes out and an event exists only once the API has it, so no copy
  can count as 0. The subscribers are read by a process of their own (decoding a crowd's events
  in the sender's event loop delayed its sends and the reading of its acks, and counted that
  against the platform); both clocks are the system-wide monotonic one, and the reader's CPU is
  reported beside the sender's.
- Phase one starts after WARM_UP_SECONDS of the same load, unmeasured: Dagster's first runs take
  most of a core for a while after `mdp up`, and the phases measure the platform running.
- Per subscriber: the events it should have had (every acknowledged trade of its symbols) against
  the events it got, and whether they came in acceptance order (`q` increasing).
- What the API spends per connection: memory added while the crowd connected, CPU per event sent.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import multiprocessing
import statistics
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as PipeConnection
from typing import Any
from urllib.parse import urlsplit

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from core.config import Settings
from core.db import seed_symbols
from mdp.bench.capacity import Connections, fresh_ticks, open_loop
from mdp.bench.load import Deliveries, allow_open_files, percentiles, request_bytes
from mdp.bench.market import ZIPF, follow_sets, market_symbols
from mdp.bench.up import RunningPlatform, api_process, cpu_seconds, running_platform

# The market and its load, the crowd benchmark's too.
SYMBOLS = 1000  # the market's registered symbols
BATCH = 10  # ticks per POST: the ack of a small batch is what a live feed sees
CONNECT_AT_ONCE = 50  # connections opening concurrently while the crowd gathers
SETTLE_SECONDS = 30.0  # how long the last events may take to arrive after the load ends
WARM_UP_SECONDS = 30.0  # the load, unmeasured, before phase one
TARGETS = {"send_to_t_p95_ms": 50, "fanout_send_to_delivery_p99_ms": 250}

_decode = msgspec.json.Decoder().decode


def bench_stream(
    url: str,
    settings: Settings,
    *,
    rate: float = 1000.0,
    subscribers: int = 1000,
    step_seconds: float = 30.0,
) -> dict[str, Any]:
    allow_open_files(4 * subscribers)
    market = market_symbols()[:SYMBOLS]
    seed_symbols(url, market)
    with running_platform(url, feed=False) as platform:
        asyncio.run(_warm_up(platform, market, rate))
        one = asyncio.run(_phase(platform, url, market, [None], rate, step_seconds))
        crowd = asyncio.run(
            _phase(platform, url, market, follow_sets(market, subscribers, 2), rate, step_seconds)
        )
    one_p95 = one["send_to_delivery_ms"].get("p95") or 1e9
    crowd_p99 = crowd["send_to_delivery_ms"].get("p99") or 1e9
    return {
        "ticks_per_s": rate,
        "batch_ticks": BATCH,
        "seconds": step_seconds,
        "market": f"{SYMBOLS} symbols; ticks and each subscriber's 1-2 symbols drawn by a Zipf law"
        f" (exponent {ZIPF}), every subscriber's set distinct",
        "targets": TARGETS,
        "one_subscriber_all_trades": one,
        "fan_out": crowd,
        "met": {
            "send_to_t_p95": one_p95 <= TARGETS["send_to_t_p95_ms"],
            "fanout_send_to_delivery_p99": crowd_p99 <= TARGETS["fanout_send_to_delivery_p99_ms"],
            "every_event_in_order": one["subscribers_wrong"] + crowd["subscribers_wrong"] == 0,
        },
    }


@dataclass
class Follower:
    """One subscriber: the symbols it follows (None: every one) and what it got."""

    symbols: frozenset[str] | None
    received: int = 0
    last_seq: int = 0
    out_of_order: int = 0
    """Events that did not come after the one before in acceptance order (repeats included)."""
    foreign: int = 0
    """Events of a symbol it does not follow."""

    def got(self, symbol: str, seq: int) -> None:
        self.received += 1
        if self.symbols is not None and symbol not in self.symbols:
            self.foreign += 1
        if seq <= self.last_seq:
            self.out_of_order += 1
        self.last_seq = seq

    def expected(self, acked: Counter[str]) -> int:
        """Every acknowledged trade of its symbols."""
        if self.symbols is None:
            return acked.total()
        return sum(acked[s] for s in self.symbols)


def tally(followers: Iterable[Follower], acked: Counter[str]) -> dict[str, Any]:
    """Events expected and delivered, over all subscribers and per subscriber: `acked` counts the
    acknowledged trades by symbol. A subscriber is right when it got exactly its expected events,
    of its own symbols, in acceptance order."""
    expected, received, missing, extra, disordered, foreign, wrong = [], 0, 0, 0, 0, 0, 0
    for follower in followers:
        should = follower.expected(acked)
        expected.append(should)
        received += follower.received
        missing += follower.received < should
        extra += follower.received > should
        disordered += follower.out_of_order > 0
        foreign += follower.foreign > 0
        wrong += follower.received != should or follower.out_of_order > 0 or follower.foreign > 0
    return {
        "events_expected": sum(expected),
        "events_received": received,
        "events_expected_per_subscriber": {
            "min": min(expected, default=0),
            "median": statistics.median(expected) if expected else 0,
            "max": max(expected, default=0),
        },
        "subscribers_right": len(expected) - wrong,
        "subscribers_wrong": wrong,
        "subscribers_missing_events": missing,
        "subscribers_extra_events": extra,
        "subscribers_out_of_order": disordered,
        "subscribers_foreign_events": foreign,
    }


@dataclass
class _Heard:
    """What the subscribers got: each follower's tally, every `T` event's id and arrival
    (perf_counter: the system-wide monotonic clock, the same in every process), frames, the
    connections the server ended, and the reading process's CPU."""

    followers: list[Follower]
    event_ids: list[str] = field(default_factory=list)
    arrivals: array.array[float] = field(default_factory=lambda: array.array("d"))
    frames: int = 0
    ended_by_server: int = 0
    cpu_seconds: float = 0.0

    def got(self, follower: Follower, frame: str | bytes) -> None:
        now = time.perf_counter()
        self.frames += 1
        for event in _decode(frame):
            if event.get("ev") != "T":
                continue
            follower.got(event["sym"], event["q"])
            self.event_ids.append(event["i"])
            self.arrivals.append(now)


class _Subscribers:
    """The subscribers, reading in a process of their own, so that decoding a crowd's events
    never delays the load generator's sending or the reading of its acks: connected when built,
    stopped by `finish` once they got what they should have (or SETTLE_SECONDS passed)."""

    def __init__(self, api: str, follows: Sequence[frozenset[str] | None]) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, theirs = context.Pipe()
        self._process = context.Process(
            target=_subscribers_process, args=(api, list(follows), theirs)
        )
        self._process.start()
        self._cpu_from: float = self._pipe.recv()  # every connection subscribed; its CPU so far

    def finish(self, expected: int) -> _Heard:
        self._pipe.send(expected)
        heard: _Heard = self._pipe.recv()
        self._process.join()
        heard.cpu_seconds -= self._cpu_from
        return heard


def _subscribers_process(
    api: str, follows: list[frozenset[str] | None], pipe: PipeConnection
) -> None:
    allow_open_files(4 * len(follows) + 1024)
    asyncio.run(_subscribe_and_read(api, follows, pipe))


async def _subscribe_and_read(
    api: str, follows: list[frozenset[str] | None], pipe: PipeConnection
) -> None:
    heard = _Heard([Follower(symbols) for symbols in follows])
    clients: list[ClientConnection] = []
    for i in range(0, len(follows), CONNECT_AT_ONCE):
        clients += await asyncio.gather(
            *(_subscribe(api, _channels(f)) for f in follows[i : i + CONNECT_AT_ONCE])
        )

    async def read(client: ClientConnection, follower: Follower) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in client:
                heard.got(follower, frame)
        heard.ended_by_server += 1  # the server ended it (a slow consumer, say)

    readers = [
        asyncio.create_task(read(client, follower))
        for client, follower in zip(clients, heard.followers, strict=True)
    ]
    pipe.send(time.process_time())
    expected: int = await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
    with contextlib.suppress(TimeoutError):  # the last events on their way
        async with asyncio.timeout(SETTLE_SECONDS):
            while len(heard.arrivals) < expected:  # noqa: ASYNC110 - counted by the readers
                await asyncio.sleep(0.1)
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    heard.cpu_seconds = time.process_time()
    pipe.send(heard)


async def _warm_up(platform: RunningPlatform, market: list[str], rate: float) -> None:
    """The load with nobody subscribed, unmeasured, until Dagster's first runs are done: phase
    one measures the platform running, not starting."""
    ingest = Connections(platform.api)
    ticks = fresh_ticks(market, zipf=True)

    async def post(_: int) -> None:
        body = msgspec.json.encode([next(ticks) for _ in range(BATCH)])
        await ingest.send(
            request_bytes(platform.api, "POST", "/ingest/ticks", body, platform.ingest_headers)
        )

    refused: list[str] = []
    await open_loop(time.perf_counter(), WARM_UP_SECONDS, rate / BATCH, post, [], refused.append)
    ingest.close()


async def _phase(
    platform: RunningPlatform,
    url: str,
    market: list[str],
    follows: Sequence[frozenset[str] | None],
    rate: float,
    seconds: float,
) -> dict[str, Any]:
    api = api_process(platform.process.pid)
    memory_before = api.memory_info().rss
    subscribers = _Subscribers(platform.api, follows)
    memory_per_connection = (api.memory_info().rss - memory_before) / len(follows)

    deliveries = Deliveries()
    ingest = Connections(platform.api)
    headers = platform.ingest_headers
    ticks = fresh_ticks(market, zipf=True)
    acked: Counter[str] = Counter()
    ack_ms: list[float] = []
    errors: list[str] = []
    started = time.perf_counter()

    async def post(i: int) -> None:
        batch = [next(ticks) for _ in range(BATCH)]
        deliveries.sending((t["event_id"] for t in batch), started + i * BATCH / rate)
        body = msgspec.json.encode(batch)
        status, _body = await ingest.send(
            request_bytes(platform.api, "POST", "/ingest/ticks", body, headers)
        )
        if status != 202:
            errors.append(f"HTTP {status}")
            return
        acked.update(t["symbol"] for t in batch)

    cpu_before = cpu_seconds(url, platform.process.pid)
    await open_loop(started, seconds, rate / BATCH, post, ack_ms, errors.append)
    elapsed = time.perf_counter() - started
    cpu_after = cpu_seconds(url, platform.process.pid)
    ingest.close()
    expected = sum(Follower(symbols).expected(acked) for symbols in follows)
    heard = await asyncio.get_running_loop().run_in_executor(None, subscribers.finish, expected)
    for event_id, arrival in zip(heard.event_ids, heard.arrivals, strict=True):
        deliveries.arrived(event_id, arrival)
    cores = {
        part: round((cpu_after[part] - cpu_before[part]) / elapsed, 3)
        for part in cpu_after.keys() & cpu_before.keys()
    }
    cores["subscribers_reader"] = round(heard.cpu_seconds / elapsed, 3)
    sizes = Counter(len(f) if f is not None else "all" for f in follows)
    return {
        "subscribers": len(follows),
        "subscribers_by_symbols_followed": {str(k): n for k, n in sorted(sizes.items(), key=str)},
        "symbols_followed": len(market)
        if None in follows
        else len(set().union(*(f for f in follows if f is not None))),
        "acked_ticks_per_s": round(acked.total() / elapsed, 1),
        "ack_ms": percentiles(ack_ms, 50, 95, 99),
        **tally(heard.followers, acked),
        "events_never_sent": deliveries.unsent,
        "frames_received": heard.frames,
        "ended_by_server": heard.ended_by_server,
        "ingest_errors": len(errors),
        "send_to_delivery_ms": percentiles(deliveries.delivery_ms, 50, 95, 99),
        "cpu_cores": cores,
        "api_cpu_us_per_event": round(
            cores.get("api", 0) * elapsed * 1e6 / max(len(heard.arrivals), 1), 2
        ),
        "api_memory_kib_per_connection": round(memory_per_connection / 1024, 1),
    }


def _channels(symbols: frozenset[str] | None) -> str:
    return "T.*" if symbols is None else ",".join(f"T.{s}" for s in sorted(symbols))


async def _subscribe(api: str, channels: str) -> ClientConnection:
    """A /stocks connection, authenticated and subscribed to `channels` (every reply awaited)."""
    parts = urlsplit(api)
    client = await connect(f"ws://{parts.netloc}/stocks", max_size=None, ping_interval=None)
    await client.send(msgspec.json.encode({"action": "auth", "params": "bench"}).decode())
    await client.send(msgspec.json.encode({"action": "subscribe", "params": channels}).decode())
    waiting = channels.count(",") + 1
    while waiting:
        frame = await client.recv(decode=False)
        if b"auth_failed" in frame or b'"error"' in frame:
            raise RuntimeError(frame.decode())
        waiting -= frame.count(b"subscribed to")
    return client
