"""Operations: `/status/ingestion` (the heartbeat freshness model) and `/metrics` (JSON by default,
Prometheus or OpenMetrics text when the Accept header prefers it)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics
from pydantic import BaseModel

from core.db import query
from serving.deps import App, Services
from serving.errors import DATABASE_UNAVAILABLE
from serving.metrics import latency_summary, registry

router = APIRouter(tags=["ops"])

IDLE_SECONDS = 60.0
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class Database(BaseModel):
    healthy: bool
    latency_ms: float | None


class IngestionStatus(BaseModel):
    status: Literal["alive", "stale", "unknown"]
    alive: bool
    heartbeat_at: datetime | None
    """End of the last ingestion cycle (a micro-batch, or a look at an empty inbox)."""
    heartbeat_age_seconds: float | None
    stale_threshold_seconds: float
    """3 times INGESTION_INTERVAL_SECONDS."""
    seconds_since_last_trade: float | None
    """Since the latest trade time accepted: promoted, still pending, or a resend dropped at
    promotion (it was accepted too)."""
    promoted_per_second: float | None
    """Trades the micro-batches of the last minute made canonical, per second."""
    duplicates_per_second: float | None
    """Ticks the micro-batches of the last minute dropped as resends of a known trade, per
    second. Above the promoted rate, a source is replaying identities it already sent."""
    idle: bool
    """Alive, but no trade for IDLE_SECONDS (a quiet market): the pipeline looks and finds nothing,
    which is not the same as `stale` (it stopped looking)."""
    oldest_pending_seconds: float | None
    """How long the oldest acknowledged tick still in the inbox has waited for promotion: the
    pipeline's lag (a second or two while it runs; null with nothing pending)."""
    db: Database
    uptime_seconds: float
    started_at: datetime


class Counts(BaseModel):
    trades: int | None
    candles: int | None
    symbols: int | None
    inbox_pending: int | None


class RouteLatency(BaseModel):
    count: int
    p50: float
    p95: float
    p99: float
    max: float


class Metrics(BaseModel):
    started_at: datetime
    uptime_seconds: float
    counts: Counts
    api_latency_ms: dict[str, RouteLatency]
    """Per `METHOD /route`, across all API workers; percentiles interpolated in buckets."""
    db: Database
    ingestion: IngestionStatus


@dataclass(frozen=True)
class Snapshot:
    """One look at the database; empty when it could not be reached."""

    latency_ms: float | None = None
    heartbeat_at: datetime | None = None
    last_trade_at: datetime | None = None
    counts: tuple[int | None, ...] = (None, None, None, None)
    duplicates: int | None = None
    last_minute: tuple[int, int] | None = None
    """Promoted and duplicates of the last minute's micro-batches."""
    oldest_pending_at: datetime | None = None
    now: datetime | None = None


async def _snapshot(app: Services) -> Snapshot:
    try:
        async with app.pool.connection() as conn:
            started = time.perf_counter()
            row = await (await conn.execute(query("platform_snapshot"))).fetchone()
            latency = (time.perf_counter() - started) * 1000
    except DATABASE_UNAVAILABLE:
        return Snapshot()
    assert row is not None
    heartbeat_at, last_trade_at, *counts, duplicates, promoted_1m, duplicates_1m, oldest, now = row
    return Snapshot(
        round(latency, 3),
        heartbeat_at,
        last_trade_at,
        tuple(counts),
        duplicates,
        (promoted_1m, duplicates_1m),
        oldest,
        now,
    )


def _status(app: Services, snap: Snapshot) -> IngestionStatus:
    settings, started_at = app.settings, app.started_at
    threshold = 3 * settings.ingestion_interval_seconds
    age = since_trade = waited = None
    if snap.now and snap.oldest_pending_at:
        waited = max(0.0, (snap.now - snap.oldest_pending_at).total_seconds())
    if snap.now and snap.heartbeat_at:
        age = max(0.0, (snap.now - snap.heartbeat_at).total_seconds())
    if snap.now and snap.last_trade_at:
        since_trade = max(0.0, (snap.now - snap.last_trade_at).total_seconds())
    promoted_rate = duplicates_rate = None
    if snap.last_minute is not None:
        promoted_rate, duplicates_rate = (round(n / 60, 3) for n in snap.last_minute)
    state: Literal["alive", "stale", "unknown"] = (
        "unknown" if age is None else "alive" if age <= threshold else "stale"
    )
    return IngestionStatus(
        status=state,
        alive=state == "alive",
        heartbeat_at=snap.heartbeat_at,
        heartbeat_age_seconds=age,
        stale_threshold_seconds=threshold,
        seconds_since_last_trade=since_trade,
        promoted_per_second=promoted_rate,
        duplicates_per_second=duplicates_rate,
        idle=state == "alive" and (since_trade is None or since_trade >= IDLE_SECONDS),
        oldest_pending_seconds=waited,
        db=Database(healthy=snap.now is not None, latency_ms=snap.latency_ms),
        uptime_seconds=round(time.time() - started_at.timestamp(), 3),
        started_at=started_at,
    )


@router.get(
    "/status/ingestion",
    response_model=IngestionStatus,
    responses={503: {"model": IngestionStatus, "description": "Database unreachable"}},
)
async def ingestion_status(app: App) -> JSONResponse:
    """Alive while the last ingestion cycle is younger than 3 times INGESTION_INTERVAL_SECONDS."""
    report = _status(app, await _snapshot(app))
    code = status.HTTP_200_OK if report.db.healthy else status.HTTP_503_SERVICE_UNAVAILABLE
    return JSONResponse(report.model_dump(mode="json"), status_code=code)


def _preferred(accept: str) -> str:
    """The best of JSON, OpenMetrics and Prometheus text for an Accept header; JSON on a tie."""
    offers = {"application/json": 0.0, "application/openmetrics-text": 0.0, "text/plain": 0.0}
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        for offer in offers:
            if media in (offer, "*/*", offer.split("/")[0] + "/*"):
                exact = media == offer
                offers[offer] = max(offers[offer], weight + (0.001 if exact else 0.0))
    best = max(offers.values())
    return (
        "application/json"
        if offers["application/json"] == best
        else max(offers, key=offers.__getitem__)
    )


def _platform_families(report: Metrics, duplicates: int | None) -> list[Metric]:
    counts = report.counts
    ingestion = report.ingestion
    values: list[tuple[str, str, float | int | None]] = [
        ("mdp_trades", "Canonical trades.", counts.trades),
        ("mdp_candles", "Stored candles, all intervals.", counts.candles),
        ("mdp_symbols", "Registered symbols.", counts.symbols),
        ("mdp_inbox_pending", "Accepted ticks waiting for promotion.", counts.inbox_pending),
        ("mdp_db_up", "1 when the database answered.", int(report.db.healthy)),
        ("mdp_db_latency_seconds", "Time of the status query.",
         report.db.latency_ms / 1000 if report.db.latency_ms is not None else None),
        ("mdp_ingestion_alive", "1 while the ingestion heartbeat is fresh.", int(ingestion.alive)),
        ("mdp_ingestion_idle", "1 while alive with no trade for a minute.", int(ingestion.idle)),
        ("mdp_ingestion_heartbeat_age_seconds", "Age of the last ingestion cycle.",
         ingestion.heartbeat_age_seconds),
        ("mdp_seconds_since_last_trade", "Since the latest accepted trade's time.",
         ingestion.seconds_since_last_trade),
        ("mdp_promoted_per_second", "Trades promoted per second over the last minute.",
         ingestion.promoted_per_second),
        ("mdp_duplicates_per_second", "Resent ticks dropped per second over the last minute.",
         ingestion.duplicates_per_second),
        ("mdp_oldest_pending_seconds", "How long the oldest tick in the inbox has waited.",
         (ingestion.oldest_pending_seconds or 0.0) if report.db.healthy else None),
        ("mdp_uptime_seconds", "Since this API worker started.", report.uptime_seconds),
    ]  # fmt: skip
    families: list[Metric] = [
        GaugeMetricFamily(name, help_text, value=value)
        for name, help_text, value in values
        if value is not None
    ]
    if duplicates is not None:
        families.append(
            CounterMetricFamily(
                "mdp_duplicate_ticks", "Resent ticks dropped at promotion.", value=duplicates
            )
        )
    return families


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


@router.get(
    "/metrics",
    response_model=Metrics,
    responses={
        200: {
            "description": "JSON, or Prometheus or OpenMetrics text as the Accept header asks",
            "content": {
                "text/plain": {"schema": {"type": "string"}},
                "application/openmetrics-text": {"schema": {"type": "string"}},
            },
        }
    },
)
async def metrics(request: Request, app: App) -> Response:
    snap = await _snapshot(app)
    ingestion = _status(app, snap)
    requests = registry()
    trades, candles, symbols, pending = snap.counts
    report = Metrics(
        started_at=ingestion.started_at,
        uptime_seconds=ingestion.uptime_seconds,
        counts=Counts(trades=trades, candles=candles, symbols=symbols, inbox_pending=pending),
        api_latency_ms={k: RouteLatency(**v) for k, v in latency_summary(requests).items()},
        db=ingestion.db,
        ingestion=ingestion,
    )
    wanted = _preferred(request.headers.get("accept", "application/json"))
    if wanted == "application/json":
        return JSONResponse(report.model_dump(mode="json"))
    platform = CollectorRegistry(auto_describe=False)
    platform.register(_Families(_platform_families(report, snap.duplicates)))
    if wanted == "application/openmetrics-text":
        body = openmetrics.generate_latest(requests).removesuffix(b"# EOF\n")  # type: ignore[no-untyped-call]
        body += openmetrics.generate_latest(platform)  # type: ignore[no-untyped-call]
        return Response(body, media_type=openmetrics.CONTENT_TYPE_LATEST)
    return Response(
        generate_latest(requests) + generate_latest(platform), media_type=PROMETHEUS_TEXT
    )
