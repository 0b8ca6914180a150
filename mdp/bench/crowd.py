"""Crowd: the platform as `mdp up` runs it (no feeder), ticks posted open loop over a market of
SYMBOLS symbols (drawn by a Zipf law), first with nobody following, then with `subscribers`
`/stream` and as many `/ws` connections, each on its own set of SYMBOLS_EACH symbols (drawn by
the same law: a crowd watches what trades). Per phase: acks (p50/p99 from the scheduled send
time) and, with the crowd, every event's delivery from its ack, whether every connection got
exactly its events in acceptance order, and what the API spends per connection (CPU and memory).

The crowd reads in a process of its own, so that parsing its events never delays the reading of
an ack; both processes' CPU is reported (the load generator is never the hidden limit), and
deliveries are matched to acks by the system-wide monotonic clock both read."""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import itertools
import multiprocessing
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

import msgspec
from websockets.asyncio.client import ClientConnection, connect

from core.config import Settings
from core.db import seed_symbols
from mdp.bench.capacity import Connections, open_loop
from mdp.bench.load import allow_open_files, percentiles, request_bytes
from mdp.bench.market import ZIPF, follow_sets, zipf_draws
from mdp.bench.stream import BATCH, CONNECT_AT_ONCE, SETTLE_SECONDS, SYMBOLS
from mdp.bench.up import RunningPlatform, api_process, cpu_seconds, running_platform

SYMBOLS_EACH = 2  # symbols each connection follows
TARGETS = {"ack_p99_ms": 250, "ack_p99_vs_no_crowd": 1.5}

_decode = msgspec.json.Decoder().decode


def bench_crowd(
    url: str,
    settings: Settings,
    *,
    rate: float = 1000.0,
    subscribers: int = 1000,
    step_seconds: float = 120.0,
) -> dict[str, Any]:
    market = [f"SYM{i:04d}" for i in range(SYMBOLS)]
    seed_symbols(url, market)
    follows = follow_sets(market, 2 * subscribers, SYMBOLS_EACH, whole=True)
    with running_platform(url, feed=False) as platform:
        alone = _phase(platform, url, market, [], rate, step_seconds)
        crowd = _phase(platform, url, market, follows, rate, step_seconds)
    ratio = crowd["ack_ms"].get("p99", 1e9) / max(alone["ack_ms"].get("p99", 1e9), 1.0)
    return {
        "ticks_per_s": rate,
        "batch_ticks": BATCH,
        "seconds": step_seconds,
        "market": f"{SYMBOLS} symbols; ticks and each connection's {SYMBOLS_EACH} symbols drawn "
        f"by a Zipf law (exponent {ZIPF}), every connection's set distinct",
        "targets": TARGETS,
        "no_subscribers": alone,
        "crowd": crowd,
        "ack_p99_vs_no_crowd": round(ratio, 2),
        "met": {
            "ack_p99": crowd["ack_ms"].get("p99", 1e9) <= TARGETS["ack_p99_ms"],
            "ack_p99_vs_no_crowd": ratio <= TARGETS["ack_p99_vs_no_crowd"],
            "every_event_in_order": crowd["connections_wrong"] == 0,
        },
    }


def _phase(
    platform: RunningPlatform,
    url: str,
    market: list[str],
    follows: list[frozenset[str]],
    rate: float,
    seconds: float,
) -> dict[str, Any]:
    api = api_process(platform.process.pid)
    memory_before = api.memory_info().rss
    crowd: Crowd | None = Crowd(platform.api, follows) if follows else None
    memory_crowd = api.memory_info().rss
    ticks = _ticks(market)
    acked: dict[int, float] = {}  # tick number → when its ack came
    acked_per_symbol: collections.Counter[str] = collections.Counter()
    ack_ms: list[float] = []
    errors: list[str] = []

    async def ingest() -> None:
        connections = Connections(platform.api)

        async def post(_: int) -> None:
            batch = [next(ticks) for _ in range(BATCH)]
            body = msgspec.json.encode(batch)
            request = request_bytes(
                platform.api, "POST", "/ingest/ticks", body, platform.ingest_headers
            )
            status, _body = await connections.send(request)
            if status != 202:
                errors.append(f"HTTP {status}")
                return
            now = time.perf_counter()
            for tick in batch:
                acked[_number(tick["event_id"])] = now
                acked_per_symbol[tick["symbol"]] += 1

        await open_loop(time.perf_counter(), seconds, rate / BATCH, post, ack_ms, errors.append)
        connections.close()

    cpu_before = cpu_seconds(url, platform.process.pid)
    started = time.perf_counter()
    asyncio.run(ingest())
    elapsed = time.perf_counter() - started
    cpu_after = cpu_seconds(url, platform.process.pid)
    cores = {
        part: round((cpu_after[part] - cpu_before[part]) / elapsed, 3)
        for part in cpu_after.keys() & cpu_before.keys()
    }
    result: dict[str, Any] = {
        "connections": {"stream": len(follows) // 2, "ws": len(follows) - len(follows) // 2},
        "acked_ticks_per_s": round(len(acked) / elapsed, 1),
        "ack_ms": percentiles(ack_ms, 50, 99),
        "ingest_errors": len(errors),
        "cpu_cores": cores,
        "api_memory_mib": round(memory_crowd / 2**20, 1),
    }
    if crowd is None:
        return result
    expected = [sum(acked_per_symbol[s] for s in symbols) for symbols in follows]
    seen = crowd.finish(expected)
    delivery_ms = [
        max(0.0, at - acked[number]) * 1000
        for number, at in zip(seen.numbers, seen.arrivals, strict=True)
        if number in acked
    ]
    cores["crowd_reader"] = round(seen.cpu_seconds / elapsed, 3)
    return {
        **result,
        "events_expected": sum(expected),
        "events_received": len(seen.numbers),
        "connections_wrong": seen.wrong,
        "connections_ended_by_server": seen.ended_by_server,
        "delivery_ms": percentiles(delivery_ms, 50, 95, 99),
        "api_memory_kib_per_connection": round(
            (memory_crowd - memory_before) / len(follows) / 1024, 1
        ),
        "api_cpu_us_per_event": round(
            cores.get("api", 0) * elapsed * 1e6 / max(len(seen.numbers), 1), 2
        ),
    }


def _ticks(market: list[str]) -> Any:
    """Ticks with identities of their own, symbols by the Zipf law, at the time they are made."""
    symbols = zipf_draws(market, seed=11)
    run = f"{time.time_ns():x}"
    for n in itertools.count():
        yield {
            "symbol": next(symbols),
            "price": 100.0 + n % 100 / 100,
            "volume": 1 + n % 500,
            "ts": time.time_ns() // 1_000_000,
            "source": "CROWD",
            "event_id": f"{run}-{n}",
        }


def _number(event_id: str) -> int:
    return int(event_id.rpartition("-")[2])


@dataclass
class Seen:
    """What the crowd got: each event's tick number and arrival (perf_counter), connections that
    missed, repeated or reordered events, connections the server ended, the reader's CPU."""

    numbers: array.array[int] = field(default_factory=lambda: array.array("q"))
    arrivals: array.array[float] = field(default_factory=lambda: array.array("d"))
    wrong: int = 0
    ended_by_server: int = 0
    cpu_seconds: float = 0.0


class Crowd:
    """The subscribers, reading in a process of their own: connected when built, stopped by
    `finish` once each connection got what it should have (or SETTLE_SECONDS passed)."""

    def __init__(self, api: str, follows: list[frozenset[str]]) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, theirs = context.Pipe()
        self._process = context.Process(target=_crowd_process, args=(api, follows, theirs))
        self._process.start()
        # Every connection is open, its place in the stream taken; the reader's CPU so far.
        self._cpu_from: float = self._pipe.recv()

    def finish(self, expected: list[int]) -> Seen:
        self._pipe.send(expected)
        seen: Seen = self._pipe.recv()
        self._process.join()
        seen.cpu_seconds -= self._cpu_from
        return seen


@dataclass
class _Follower:
    received: int = 0
    last_seq: int = 0
    out_of_order: int = 0


def _crowd_process(api: str, follows: list[frozenset[str]], pipe: Connection) -> None:
    allow_open_files(2 * len(follows) + 1024)
    asyncio.run(_crowd(api, follows, pipe))


async def _crowd(api: str, follows: list[frozenset[str]], pipe: Connection) -> None:
    seen = Seen()
    followers = [_Follower() for _ in follows]
    half = len(follows) // 2
    opened: list[tuple[str, Any]] = []
    for i in range(0, len(follows), CONNECT_AT_ONCE):
        group = range(i, min(i + CONNECT_AT_ONCE, len(follows)))
        opened += await asyncio.gather(
            *(_open(api, follows[n], "sse" if n < half else "ws") for n in group)
        )

    def got(follower: _Follower, trade: dict[str, Any], now: float) -> None:
        follower.received += 1
        if trade["seq"] <= follower.last_seq:
            follower.out_of_order += 1
        follower.last_seq = trade["seq"]
        seen.numbers.append(_number(trade["event_id"]))
        seen.arrivals.append(now)

    async def read(kind: str, connection: Any, follower: _Follower) -> None:
        if kind == "sse":
            await _read_sse(connection, lambda trade, now: got(follower, trade, now))
        else:
            await _read_ws(connection, lambda trade, now: got(follower, trade, now))
        seen.ended_by_server += 1

    readers = [
        asyncio.create_task(read(kind, connection, follower))
        for (kind, connection), follower in zip(opened, followers, strict=True)
    ]
    pipe.send(time.process_time())
    loop = asyncio.get_running_loop()
    expected: list[int] = await loop.run_in_executor(None, pipe.recv)
    with contextlib.suppress(TimeoutError):  # the last events on their way
        async with asyncio.timeout(SETTLE_SECONDS):
            while len(seen.numbers) < sum(expected):  # noqa: ASYNC110 - counted by the readers
                await asyncio.sleep(0.1)
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    for kind, connection in opened:
        if kind == "sse":
            connection[1].close()
        else:
            await connection.close()
    seen.wrong = sum(
        f.received != count or f.out_of_order > 0
        for f, count in zip(followers, expected, strict=True)
    )
    seen.cpu_seconds = time.process_time()
    pipe.send(seen)


async def _open(api: str, symbols: frozenset[str], kind: str) -> tuple[str, Any]:
    """A connection following `symbols`' trades, its place in the stream taken."""
    parts = urlsplit(api)
    path = f"events=trade&symbols={','.join(sorted(symbols))}"
    if kind == "ws":
        ws = await connect(f"ws://{parts.netloc}/ws?{path}", max_size=None, ping_interval=None)
        return kind, ws
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(request_bytes(api, "GET", f"/stream?{path}"))
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"/stream refused: {head[:100]!r}")
    return kind, (reader, writer)


async def _read_sse(
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter], got: Any
) -> None:
    """A chunked event stream, a chunk (one or more events) at a time, until it ends."""
    reader, _ = connection
    with contextlib.suppress(OSError, asyncio.IncompleteReadError, ValueError):
        while size := int(await reader.readline(), 16):
            chunk = await reader.readexactly(size + 2)
            now = time.perf_counter()
            for line in chunk.split(b"\n"):
                if line.startswith(b"data: "):
                    got(_decode(line[6:]), now)


async def _read_ws(ws: ClientConnection, got: Any) -> None:
    with contextlib.suppress(Exception):
        async for message in ws:
            now = time.perf_counter()
            for event in _decode(message):
                got(event["data"], now)
