"""Streaming: the platform as `mdp up` runs it (no feeder), ticks posted open loop at `rate`/s in
small batches, and WebSocket subscribers on `/stocks`. First one subscriber to every trade: ack →
`T` event. Then `subscribers` connections at once, each following one symbol's trades: event
delivery from the ack, events missing, and what the API spends per connection (CPU and memory),
next to the load generator's own CPU (it decodes every frame of every connection)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any
from urllib.parse import urlsplit

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from core.config import Settings
from mdp.bench.capacity import Connections, fresh_ticks, open_loop
from mdp.bench.load import Deliveries, allow_open_files, percentiles, request_bytes
from mdp.bench.up import RunningPlatform, api_process, cpu_seconds, running_platform

BATCH = 10  # ticks per POST: the ack of a small batch is what a live feed sees
CONNECT_AT_ONCE = 50  # subscribers connecting concurrently while the crowd gathers
TARGETS = {"ack_to_t_p95_ms": 50, "fanout_delivery_p99_ms": 250}

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
    symbols = settings.symbol_list
    with running_platform(url, feed=False) as platform:
        one = asyncio.run(_phase(platform, url, ["T.*"], rate, step_seconds))
        channels = [f"T.{symbols[i % len(symbols)]}" for i in range(subscribers)]
        crowd = asyncio.run(_phase(platform, url, channels, rate, step_seconds))
    return {
        "ticks_per_s": rate,
        "batch_ticks": BATCH,
        "seconds": step_seconds,
        "targets": TARGETS,
        "one_subscriber_all_trades": one,
        "fan_out": crowd,
        "met": {
            "ack_to_t_p95": (one["delivery_ms"].get("p95") or 1e9) <= TARGETS["ack_to_t_p95_ms"],
            "fanout_delivery_p99": (crowd["delivery_ms"].get("p99") or 1e9)
            <= TARGETS["fanout_delivery_p99_ms"],
        },
    }


class _Crowd(Deliveries):
    """The subscribers' view: what they got, and how long after each trade's ack."""

    def __init__(self) -> None:
        super().__init__()
        self.expected: dict[str, int] = {}  # acknowledged trades per symbol
        self.received = 0
        self.frames = 0
        self.ended_by_server = 0

    def got(self, frame: str | bytes) -> None:
        now = time.perf_counter()
        self.frames += 1
        for event in _decode(frame):
            if event.get("ev") != "T":
                continue
            self.received += 1
            self.arrived(event["i"], now)


async def _phase(
    platform: RunningPlatform, url: str, channels: list[str], rate: float, seconds: float
) -> dict[str, Any]:
    crowd = _Crowd()
    api = api_process(platform.process.pid)
    memory_before = api.memory_info().rss
    clients: list[ClientConnection] = []
    for i in range(0, len(channels), CONNECT_AT_ONCE):
        clients += await asyncio.gather(
            *(_subscribe(platform.api, c) for c in channels[i : i + CONNECT_AT_ONCE])
        )
    memory_per_connection = (api.memory_info().rss - memory_before) / len(clients)
    readers = [asyncio.create_task(_read(client, crowd)) for client in clients]

    ingest = Connections(platform.api)
    headers = platform.ingest_headers
    ticks = fresh_ticks(sorted({c.split(".", 1)[1] for c in channels} - {"*"}) or ["AAPL"])
    ack_ms: list[float] = []
    errors: list[str] = []

    async def post(_: int) -> None:
        batch = [next(ticks) for _ in range(BATCH)]
        body = msgspec.json.encode(batch)
        status, _body = await ingest.send(
            request_bytes(platform.api, "POST", "/ingest/ticks", body, headers)
        )
        if status != 202:
            errors.append(f"HTTP {status}")
            return
        now = time.perf_counter()
        for tick in batch:
            crowd.acked[tick["event_id"]] = now
            crowd.expected[tick["symbol"]] = crowd.expected.get(tick["symbol"], 0) + 1

    cpu_before = cpu_seconds(url, platform.process.pid)
    started = time.perf_counter()
    await open_loop(started, seconds, rate / BATCH, post, ack_ms, errors.append)
    elapsed = time.perf_counter() - started
    cpu_after = cpu_seconds(url, platform.process.pid)
    expected = sum(crowd.expected.get(c.split(".", 1)[1], 0) for c in channels if c != "T.*")
    expected += sum(crowd.expected.values()) * channels.count("T.*")
    with contextlib.suppress(TimeoutError):  # the last events on their way
        async with asyncio.timeout(10):
            while crowd.received < expected:  # noqa: ASYNC110 - counted by the readers
                await asyncio.sleep(0.1)
    ingest.close()
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    crowd.settle()
    cores = {
        part: round((cpu_after[part] - cpu_before[part]) / elapsed, 3)
        for part in cpu_after.keys() & cpu_before.keys()
    }
    return {
        "subscribers": len(clients),
        "channels": sorted(set(channels)),
        "acked_ticks_per_s": round(len(crowd.acked) / elapsed, 1),
        "ack_ms": percentiles(ack_ms, 50, 95, 99),
        "events_expected": expected,
        "events_received": crowd.received,
        "frames_received": crowd.frames,
        "ended_by_server": crowd.ended_by_server,
        "ingest_errors": len(errors),
        "delivery_ms": percentiles(crowd.delivery_ms, 50, 95, 99),
        "cpu_cores": cores,
        "api_cpu_us_per_event": round(
            cores.get("api", 0) * elapsed * 1e6 / max(crowd.received, 1), 2
        ),
        "api_memory_kib_per_connection": round(memory_per_connection / 1024, 1),
    }


async def _subscribe(api: str, channel: str) -> ClientConnection:
    """A /stocks connection, authenticated and subscribed to `channel` (its reply awaited)."""
    parts = urlsplit(api)
    client = await connect(f"ws://{parts.netloc}/stocks", max_size=None, ping_interval=None)
    await client.send(msgspec.json.encode({"action": "auth", "params": "bench"}).decode())
    await client.send(msgspec.json.encode({"action": "subscribe", "params": channel}).decode())
    while b"subscribed to" not in (frame := await client.recv(decode=False)):
        if b"auth_failed" in frame:
            raise RuntimeError(frame.decode())
    return client


async def _read(client: ClientConnection, crowd: _Crowd) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for frame in client:
            crowd.got(frame)
    crowd.ended_by_server += 1  # the server ended it (a slow consumer, say)
