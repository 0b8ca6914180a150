"""POST /ingest/tick and /ingest/ticks: validate the whole body, append it durably, then ack 202."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel

from serving.auth import IngestAuth
from serving.errors import Refusal
from serving.ticks import InboxRow, InvalidTicks, parse_ticks

router = APIRouter(prefix="/ingest", tags=["ingest"], dependencies=[IngestAuth])

NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/x-jsonlines")


class Accepted(BaseModel):
    accepted: int


REFUSALS: dict[int | str, dict[str, object]] = {
    400: {"model": Refusal, "description": "Malformed JSON"},
    401: {"model": Refusal, "description": "Missing or wrong credentials"},
    413: {"model": Refusal, "description": "Body above the configured limit"},
    422: {"model": Refusal, "description": "Invalid ticks; nothing was stored"},
    503: {"model": Refusal, "description": "Database unavailable; retry"},
}


@router.post("/tick", status_code=status.HTTP_202_ACCEPTED, responses=REFUSALS)
async def ingest_tick(request: Request) -> Accepted:
    """One tick as a JSON object. `202` means it is committed in PostgreSQL."""
    return await _ingest(request, batch=False)


@router.post("/ticks", status_code=status.HTTP_202_ACCEPTED, responses=REFUSALS)
async def ingest_ticks(request: Request) -> Accepted:
    """A JSON array of ticks, or NDJSON. Atomic: one bad tick refuses the batch."""
    return await _ingest(request, batch=True)


async def _ingest(request: Request, *, batch: bool) -> Accepted:
    body = await _read_body(request, request.app.state.settings.ingest_max_body_bytes)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    rows = await _validate(
        request, body, batch=batch, ndjson=batch and content_type in NDJSON_TYPES
    )
    await request.app.state.inbox.append(rows)
    return Accepted(accepted=len(rows))


async def _validate(request: Request, body: bytes, *, batch: bool, ndjson: bool) -> list[InboxRow]:
    registry = request.app.state.symbols
    try:
        return parse_ticks(body, batch=batch, ndjson=ndjson, symbols=registry.symbols, now=_now())
    except InvalidTicks as exc:
        # A symbol registered since the cache was filled is not unknown: look once more.
        if not any(e.field == "symbol" for e in exc.errors) or not await registry.refresh():
            raise
    return parse_ticks(body, batch=batch, ndjson=ndjson, symbols=registry.symbols, now=_now())


def _now() -> datetime:
    return datetime.now(UTC)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE, detail=f"body larger than the limit of {limit} bytes"
    )
