"""Request metrics that hold across API worker processes: prometheus-client in multiprocess mode
(`mdp serve` points PROMETHEUS_MULTIPROC_DIR at a fresh folder shared by its workers). The JSON
`/metrics` document reads its per-route latency percentiles from the same histograms."""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.samples import Sample
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Exponential buckets from 0.25 ms to ~16 s: fine enough for percentile estimates.
LATENCY_BUCKETS = tuple(0.00025 * 2**i for i in range(17))
STREAMING_ROUTES = frozenset({"/stream"})  # a stream's duration is its lifetime, not a latency

REQUEST_SECONDS = Histogram(
    "mdp_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
REQUESTS = Counter(
    "mdp_http_requests", "HTTP requests answered, by route template and status.",
    ["route", "method", "status"],
)  # fmt: skip
SLOWEST_SECONDS = Gauge(
    "mdp_http_request_slowest_seconds",
    "The slowest answer so far, by route template.",
    ["route", "method"],
    multiprocess_mode="max",
)
_slowest: dict[tuple[str, str], float] = {}
STREAMS = Gauge(
    "mdp_stream_subscribers",
    "Open /stream, /ws and /stocks connections.",
    multiprocess_mode="livesum",
)
STREAMS_ENDED = Counter(
    "mdp_streams_ended",
    "Ended /stream and /stocks connections, by why: the client left, an error cut it, or it"
    " fell too far behind (slow).",
    ["reason"],
)
STREAM_READS = Counter(
    "mdp_stream_reads",
    "Reads of /stream and /ws events from the database: by the process's one shared reader, or by"
    " a connection catching up on its own cursor (resumed from long ago, or fell behind).",
    ["reader"],
)
STREAMS_FELL_BEHIND = Counter(
    "mdp_streams_fell_behind",
    "/stream and /ws connections that fell too far behind the shared reader and went on with"
    " reads of their own (nothing is lost: they resume from their cursor).",
)


class RequestMetrics:
    """Pure ASGI middleware (no buffering, so streams pass through untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", None)
            if route is not None and route not in STREAMING_ROUTES:
                _observe(route, scope["method"], status, time.perf_counter() - started)


def _observe(route: str, method: str, status: int, seconds: float) -> None:
    REQUEST_SECONDS.labels(route, method).observe(seconds)
    REQUESTS.labels(route, method, str(status)).inc()
    if seconds > _slowest.get((route, method), 0.0):
        _slowest[route, method] = seconds
        SLOWEST_SECONDS.labels(route, method).set(seconds)


def registry() -> CollectorRegistry:
    """A registry of every worker's metrics (or this process's alone without multiprocess)."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return merged
    from prometheus_client import REGISTRY

    return REGISTRY


def latency_summary(source: CollectorRegistry) -> dict[str, dict[str, Any]]:
    """Per route (`METHOD /template`): count, and p50/p95/p99 (interpolated within histogram
    buckets) and max, in milliseconds."""
    buckets: dict[str, list[tuple[float, float]]] = {}
    slowest: dict[str, float] = {}
    for family in source.collect():
        for sample in family.samples:
            key = _route_key(sample)
            if key is None:
                continue
            if sample.name == "mdp_http_request_duration_seconds_bucket":
                buckets.setdefault(key, []).append((float(sample.labels["le"]), sample.value))
            elif sample.name == "mdp_http_request_slowest_seconds":
                slowest[key] = max(slowest.get(key, 0.0), sample.value)
    summary = {}
    for key, cumulative in sorted(buckets.items()):
        cumulative.sort()
        count = cumulative[-1][1]
        if not count:
            continue
        worst = round(slowest.get(key, 0.0) * 1000, 3)
        summary[key] = {
            "count": int(count),
            # Interpolation inside a wide bucket can overshoot the slowest answer actually seen.
            **{f"p{q}": min(_quantile(cumulative, q / 100), worst) for q in (50, 95, 99)},
            "max": worst,
        }
    return summary


def _route_key(sample: Sample) -> str | None:
    if "route" not in sample.labels:
        return None
    return f"{sample.labels['method']} {sample.labels['route']}"


def _quantile(cumulative: list[tuple[float, float]], q: float) -> float:
    """The q-quantile in ms from cumulative (upper bound, count) pairs, linear within a bucket."""
    target = q * cumulative[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for upper_bound, count in cumulative:
        if count >= target:
            if upper_bound == float("inf"):
                return round(lower_bound * 1000, 3)
            share = (target - lower_count) / (count - lower_count) if count > lower_count else 1
            return round((lower_bound + share * (upper_bound - lower_bound)) * 1000, 3)
        lower_bound, lower_count = upper_bound, count
    return round(lower_bound * 1000, 3)
