"""POST /ingest/tick and /ingest/ticks: validate the whole body, append it durably, then ack 202.
POST /ingest/cancels: cancel trades by identity, their candles restated before the answer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec
from fastapi import APIRouter, Request, status
from pydantic import BaseModel, Field

from core.ticks import InboxRow, InvalidTicks, Tick, parse_ticks
from serving.auth import IngestAuth
from serving.bodies import model_schema, parsed, read_body, request_body
from serving.cancels import Outcome, cancel_trades
from serving.deps import App, Services
from serving.errors import refusals
from serving.symbols import SymbolRegistry

router = APIRouter(
    prefix="/ingest",
    tags=["ingest"],
    dependencies=[IngestAuth],
    responses=refusals(400, 401, 413, 422, 503),
)

MAX_CANCELS = 10_000  # identities per request
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/x-jsonlines")

# The body is read and validated by msgspec (core.ticks), so its schema comes from there too.
TICK_SCHEMA = msgspec.json.schema_components([Tick])[1]["Tick"]
TICK_EXAMPLE = {
    "symbol": "AAPL",
    "ts": "2025-11-20T14:30:00.123Z",
    "price": 187.25,
    "volume": 100,
    "source": "XNAS",
    "event_id": "XNAS-20251120-1",
}


class Accepted(BaseModel):
    accepted: int


@router.post(
    "/tick",
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=request_body(
        {"application/json": {"schema": TICK_SCHEMA, "example": TICK_EXAMPLE}}
    ),
)
async def ingest_tick(request: Request, app: App) -> Accepted:
    """One tick as a JSON object. `202` means it is committed in PostgreSQL."""
    return await _ingest(request, app, batch=False)


@router.post(
    "/ticks",
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=request_body(
        {
            "application/json": {
                "schema": {"type": "array", "items": TICK_SCHEMA, "minItems": 1},
                "example": [TICK_EXAMPLE],
            },
            **{ndjson: {"schema": {"type": "string"}} for ndjson in NDJSON_TYPES},
        }
    ),
)
async def ingest_ticks(request: Request, app: App) -> Accepted:
    """A JSON array of ticks, or NDJSON. Atomic: one bad tick refuses the batch."""
    return await _ingest(request, app, batch=True)


async def _ingest(request: Request, app: Services, *, batch: bool) -> Accepted:
    # The body's bytes stay reserved until the rows are committed: the memory they stand for
    # (the body, then its rows) is held until then.
    with app.ingest_budget.reservation() as reserve:
        body = await read_body(request, app.settings.ingest_max_body_bytes, reserve)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        rows = await _validate(
            app.symbols, body, batch=batch, ndjson=batch and content_type in NDJSON_TYPES
        )
        await app.inbox.append(rows)
    return Accepted(accepted=len(rows))


async def _validate(
    registry: SymbolRegistry, body: bytes, *, batch: bool, ndjson: bool
) -> list[InboxRow]:
    try:
        return _parse(registry, body, batch=batch, ndjson=ndjson)
    except InvalidTicks as exc:
        # A symbol or condition registered since the cache was filled is not unknown: look again.
        registered = ("symbol", "conditions")
        if not any(e.field in registered for e in exc.errors) or not await registry.refresh():
            raise
    return _parse(registry, body, batch=batch, ndjson=ndjson)


def _parse(registry: SymbolRegistry, body: bytes, *, batch: bool, ndjson: bool) -> list[InboxRow]:
    return parse_ticks(
        body,
        batch=batch,
        ndjson=ndjson,
        symbols=registry.symbols,
        conditions=registry.conditions,
        now=_now(),
    )


def _now() -> datetime:
    return datetime.now(UTC)


NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL


class Identity(BaseModel):
    source: Annotated[str, Field(min_length=1, max_length=64, pattern=NO_NUL)]
    event_id: Annotated[str, Field(min_length=1, max_length=128, pattern=NO_NUL)]


class CancelRequest(BaseModel):
    trades: Annotated[list[Identity], Field(min_length=1, max_length=MAX_CANCELS)]


class CancelOutcome(BaseModel):
    source: str
    event_id: str
    outcome: Outcome


class Cancelled(BaseModel):
    cancelled: int
    results: list[CancelOutcome]


@router.post(
    "/cancels",
    openapi_extra=request_body({"application/json": {"schema": model_schema(CancelRequest)}}),
)
async def cancel(request: Request, app: App) -> Cancelled:
    """Cancel trades by identity (`{trades: [{source, event_id}]}`); a correction is a cancel and
    a new trade. Applied before the answer: each cancelled trade stays in the record, marked,
    and has left every candle it was in (those are restated, their `revision` counted, and sent
    on /stream). Each identity is reported: `cancelled`, `already_cancelled` or `unknown`."""
    body = await read_body(request, app.settings.ingest_max_body_bytes)
    asked = parsed(CancelRequest, body).trades
    rows = await cancel_trades(app.pool, [(t.source, t.event_id) for t in asked])
    app.stream.committed()
    results = [CancelOutcome(source=s, event_id=e, outcome=o) for s, e, o in rows]
    return Cancelled(cancelled=sum(r.outcome == "cancelled" for r in results), results=results)
