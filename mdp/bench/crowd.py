"""Crowd: the platform as `mdp up` runs it (no feeder), ticks posted open loop over a market of
SYMBOLS symbols (drawn by a Zipf law), first with nobody following, then with `subscribers`
`/stream` and as many `/ws` connections, each on its own set of SYMBOLS_EACH symbols (drawn by
the same law: a crowd watches what trades). Per phase: acks (p50/p99 from the scheduled send
time) and, with the crowd, every event's delivery from its ack, whether every connection got
exactly its events in acceptance order, and what the API spends per connection (CPU and memory),
next to the load generator's own CPU (it parses every event of every connection)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import random
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import msgspec
from websockets.asyncio.client import ClientConnection, connect

from core.config import Settings
from core.db import connect as connect_database
from mdp.bench.capacity import Connections, open_loop
from mdp.bench.load import Deliveries, allow_open_files, percentiles, request_bytes
from mdp.bench.up import Platform, api_process, cpu_seconds, running_platform

SYMBOLS = 1000  # the market's registered symbols
SYMBOLS_EACH = 2  # symbols each connection follows
ZIPF = 1.0  # the exponent of both draws: the k-th most traded symbol is 1/k as popular
BATCH = 10  # ticks per POST: the ack of a small batch is what a live feed sees
CONNECT_AT_ONCE = 50  # connections opening concurrently while the crowd gathers
SETTLE_SECONDS = 30.0  # how long the last events may take to arrive after the load ends
TARGETS = {"ack_p99_ms": 250, "ack_p99_vs_no_crowd": 1.5}

_decode = msgspec.json.Decoder().decode


def bench_crowd(
    url: str,
    settings: Settings,
    *,
    rate: float,
    subscribers: int,
    step_seconds: float,
    **_: Any,
) -> dict[str, Any]:
    allow_open_files(4 * subscribers + 1024)
    market = [f"SYM{i:04d}" for i in range(SYMBOLS)]
    with connect_database(url) as conn:
        conn.execute(
            "INSERT INTO symbols (symbol) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
            [market],
        )
        conn.commit()
    follows = _symbol_sets(market, 2 * subscribers)
    with running_platform(url, feed=False) as platform:
        alone = asyncio.run(_phase(platform, url, market, [], rate, step_seconds))
        crowd = asyncio.run(_phase(platform, url, market, follows, rate, step_seconds))
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


def _zipf(market: list[str], seed: int) -> Any:
    rng = random.Random(seed)
    weights = list(itertools.accumulate(1 / (k + 1) ** ZIPF for k in range(len(market))))
    while True:
        yield rng.choices(market, cum_weights=weights, k=256)


def _symbol_sets(market: list[str], count: int) -> list[frozenset[str]]:
    """`count` distinct sets of SYMBOLS_EACH symbols, each symbol drawn by the Zipf law."""
    draws = itertools.chain.from_iterable(_zipf(market, seed=7))
    sets: dict[frozenset[str], None] = {}
    while len(sets) < count:
        chosen = frozenset(itertools.islice(draws, SYMBOLS_EACH))
        if len(chosen) == SYMBOLS_EACH:
            sets[chosen] = None
    return list(sets)


@dataclass
class _Follower:
    symbols: frozenset[str]
    received: int = 0
    last_seq: int = 0
    out_of_order: int = 0


class _Crowd(Deliveries):
    """The connections' view: what they got, and how long after each trade's ack."""

    def __init__(self) -> None:
        super().__init__()
        self.acked_per_symbol: collections.Counter[str] = collections.Counter()
        self.received = 0
        self.ended_by_server = 0

    def got(self, follower: _Follower, event_id: str, seq: int, now: float) -> None:
        self.received += 1
        follower.received += 1
        if seq <= follower.last_seq:
            follower.out_of_order += 1
        follower.last_seq = seq
        self.arrived(event_id, now)


async def _phase(
    platform: Platform,
    url: str,
    market: list[str],
    follows: list[frozenset[str]],
    rate: float,
    seconds: float,
) -> dict[str, Any]:
    crowd = _Crowd()
    api = api_process(platform.process.pid)
    memory_before = api.memory_info().rss
    followers = [_Follower(symbols) for symbols in follows]
    half = len(followers) // 2
    readers: list[asyncio.Task[None]] = []
    opened: list[Any] = []
    for i in range(0, len(followers), CONNECT_AT_ONCE):
        group = list(enumerate(followers[i : i + CONNECT_AT_ONCE], start=i))
        opened += await asyncio.gather(
            *(_open(platform.api, f, "sse" if n < half else "ws") for n, f in group)
        )
    for (kind, connection), follower in zip(opened, followers, strict=True):
        reading = _read_sse(connection, follower, crowd) if kind == "sse" else (
            _read_ws(connection, follower, crowd)
        )  # fmt: skip
        readers.append(asyncio.create_task(reading))
    memory_crowd = api.memory_info().rss

    ingest = Connections(platform.api)
    headers = platform.ingest_headers
    ticks = _ticks(market)
    ack_ms: list[float] = []
    errors: list[str] = []

    async def post(_: int) -> None:
        batch = [next(ticks) for _ in range(BATCH)]
        status, _body = await ingest.send(
            request_bytes(
                platform.api, "POST", "/ingest/ticks", msgspec.json.encode(batch), headers
            )
        )
        if status != 202:
            errors.append(f"HTTP {status}")
            return
        now = time.perf_counter()
        for tick in batch:
            crowd.acked[tick["event_id"]] = now
            crowd.acked_per_symbol[tick["symbol"]] = (
                crowd.acked_per_symbol.get(tick["symbol"], 0) + 1
            )

    cpu_before = cpu_seconds(url, platform.process.pid)
    started = time.perf_counter()
    await open_loop(started, seconds, rate / BATCH, post, ack_ms, errors.append)
    elapsed = time.perf_counter() - started
    cpu_after = cpu_seconds(url, platform.process.pid)
    expected = [sum(crowd.acked_per_symbol.get(s, 0) for s in f.symbols) for f in followers]
    with contextlib.suppress(TimeoutError):  # the last events on their way
        async with asyncio.timeout(SETTLE_SECONDS):
            while crowd.received < sum(expected):  # noqa: ASYNC110 - counted by the readers
                await asyncio.sleep(0.1)
    ingest.close()
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    for kind, connection in opened:
        if kind == "sse":
            connection[1].close()
        else:
            await connection.close()
    crowd.settle()
    cores = {
        part: round((cpu_after[part] - cpu_before[part]) / elapsed, 3)
        for part in cpu_after.keys() & cpu_before.keys()
    }
    wrong = [
        f for f, count in zip(followers, expected, strict=True)
        if f.received != count or f.out_of_order
    ]  # fmt: skip
    return {
        "connections": {"stream": half, "ws": len(followers) - half},
        "acked_ticks_per_s": round(len(crowd.acked) / elapsed, 1),
        "ack_ms": percentiles(ack_ms, 50, 99),
        "ingest_errors": len(errors),
        "events_expected": sum(expected),
        "events_received": crowd.received,
        "connections_wrong": len(wrong),
        "connections_ended_by_server": crowd.ended_by_server,
        "delivery_ms": percentiles(crowd.delivery_ms, 50, 95, 99),
        "cpu_cores": cores,
        "api_memory_mib": round(memory_crowd / 2**20, 1),
        **(
            {
                "api_memory_kib_per_connection": round(
                    (memory_crowd - memory_before) / len(followers) / 1024, 1
                ),
                "api_cpu_us_per_event": round(
                    cores.get("api", 0) * elapsed * 1e6 / max(crowd.received, 1), 2
                ),
            }
            if followers
            else {}
        ),
    }


def _ticks(market: list[str]) -> Any:
    """Ticks with identities of their own, symbols by the Zipf law, at the time they are made."""
    symbols = itertools.chain.from_iterable(_zipf(market, seed=11))
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


async def _open(api: str, follower: _Follower, kind: str) -> tuple[str, Any]:
    """A connection following `follower`'s symbols' trades, its place in the stream taken."""
    parts = urlsplit(api)
    path = f"events=trade&symbols={','.join(sorted(follower.symbols))}"
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
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    follower: _Follower,
    crowd: _Crowd,
) -> None:
    """A chunked event stream, a chunk (one or more events) at a time."""
    reader, _ = connection
    try:
        while size := int(await reader.readline(), 16):
            chunk = await reader.readexactly(size + 2)
            now = time.perf_counter()
            for line in chunk.split(b"\n"):
                if line.startswith(b"data: "):
                    trade = _decode(line[6:])
                    crowd.got(follower, trade["event_id"], trade["seq"], now)
    except (OSError, asyncio.IncompleteReadError, ValueError):
        pass
    crowd.ended_by_server += 1


async def _read_ws(ws: ClientConnection, follower: _Follower, crowd: _Crowd) -> None:
    with contextlib.suppress(Exception):
        async for message in ws:
            now = time.perf_counter()
            for event in _decode(message):
                trade = event["data"]
                crowd.got(follower, trade["event_id"], trade["seq"], now)
    crowd.ended_by_server += 1
