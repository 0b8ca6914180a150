"""A small HTTP/1.1 load generator on raw asyncio streams: keep-alive connections, closed loop,
so that the client costs little next to the server it measures."""

from __future__ import annotations

import asyncio
import resource
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    requests: int
    seconds: float
    latencies_ms: list[float]
    statuses: dict[int, int]
    client_cpu_seconds: float

    @property
    def succeeded(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def per_second(self) -> float:
        """Requests answered with success per second: a refusal is not work done."""
        return self.succeeded / self.seconds

    def summary(self) -> dict[str, float | int | dict[int, int]]:
        q = statistics.quantiles(self.latencies_ms, n=100, method="inclusive")
        return {
            "requests": self.requests,
            "succeeded": self.succeeded,
            "req_per_s": round(self.per_second, 1),
            "p50_ms": round(q[49], 3),
            "p99_ms": round(q[98], 3),
            "statuses": self.statuses,
            "load_generator_cores": round(self.client_cpu_seconds / self.seconds, 2),
        }


def allow_open_files(count: int) -> None:
    """Let this process hold `count` sockets (as far as the hard limit allows)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count)), hard))


class Deliveries:
    """When each event was sent, and how long after its sending each copy of it arrived at a
    subscriber (milliseconds). The send time is noted before the request that carries the event
    goes out (in an open loop: the time its batch was due to be posted), so every copy that
    arrives has one and none can count as 0; a copy of an event this load never sent is counted
    apart (`unsent`), never timed."""

    def __init__(self) -> None:
        self.sent: dict[str, float] = {}
        self.delivery_ms: list[float] = []
        self.unsent = 0

    def sending(self, event_ids: Iterable[str], at: float) -> None:
        for event_id in event_ids:
            self.sent[event_id] = at

    def arrived(self, event_id: str, now: float) -> None:
        sent = self.sent.get(event_id)
        if sent is None:
            self.unsent += 1
        else:
            self.delivery_ms.append((now - sent) * 1000)


def percentiles(values: Sequence[float], *ps: int) -> dict[str, float]:
    """The `pNN` percentiles of `values`, to 0.1; empty with fewer than two values."""
    if len(values) < 2:
        return {}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {f"p{p}": round(q[p - 1], 1) for p in ps}


def request_bytes(
    url: str, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    host = urlsplit(url).netloc
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    """Send one request on a keep-alive connection; its status and body."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return status, await reader.readexactly(length)


async def run_load(
    url: str, make_request: Callable[[int], bytes], *, total: int, concurrency: int
) -> LoadResult:
    """Send `total` requests over `concurrency` connections; request i is `make_request(i)`."""
    parts = urlsplit(url)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(total))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            for i in counter:
                request = make_request(i)
                started = time.perf_counter()
                status, _ = await exchange(reader, writer, request)
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return LoadResult(
        total, time.perf_counter() - started, latencies, statuses, time.process_time() - cpu
    )
