"""Liveness (no dependencies) and readiness (database reachable, schema migrated)."""

from __future__ import annotations

import time

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from serving.deps import App
from serving.errors import DATABASE_UNAVAILABLE

router = APIRouter(prefix="/health", tags=["ops"])


class Liveness(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    database: bool
    migrations_pending: list[str]
    db_latency_ms: float | None = None
    reason: str | None = None


@router.get("/liveness")
async def liveness() -> Liveness:
    return Liveness(status="alive")


@router.get(
    "/readiness",
    response_model=Readiness,
    responses={
        503: {"model": Readiness, "description": "Database unreachable or migrations pending"}
    },
)
async def readiness(app: App) -> JSONResponse:
    expected = app.expected_migrations
    try:
        async with app.pool.connection() as conn:
            started = time.perf_counter()
            cur = await conn.execute(
                "SELECT migration_id FROM _yoyo_migration WHERE migration_id = ANY(%s)", (expected,)
            )
            applied = {r[0] for r in await cur.fetchall()}
            latency = (time.perf_counter() - started) * 1000
    except DATABASE_UNAVAILABLE as exc:
        report = Readiness(
            ready=False, database=False, migrations_pending=expected, reason=type(exc).__name__
        )
        return JSONResponse(report.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    pending = [m for m in expected if m not in applied]
    report = Readiness(
        ready=not pending,
        database=True,
        migrations_pending=pending,
        db_latency_ms=round(latency, 3),
        reason="migrations pending; run `mdp db migrate`" if pending else None,
    )
    code = status.HTTP_200_OK if report.ready else status.HTTP_503_SERVICE_UNAVAILABLE
    return JSONResponse(report.model_dump(), status_code=code)
