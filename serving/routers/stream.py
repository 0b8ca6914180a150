"""`GET /stream`: Server-Sent Events of accepted trades and changed candles, resumable with
Last-Event-ID; `GET /ws`: the same events over a WebSocket, resumable with `last_event_id`;
`POST /internal/agg-update`: announce changed candles to the stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import (
    APIRouter,
    Header,
    HTTPException,
    Query,
    Request,
    WebSocket,
    status,
)
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse

from core.db import LOCK_CANDLES, query
from core.intervals import Interval
from serving.auth import IngestAuth, ReadAuth, read_key_accepted
from serving.bodies import model_schema, parsed, read_body, request_body
from serving.deps import AppSettings, Feed, Pool, Registry, Stream, known_symbol, services
from serving.errors import refusals
from serving.metrics import STREAMS, STREAMS_ENDED
from serving.stream import HEARTBEAT_SECONDS, KINDS
from serving.symbols import SymbolRegistry
from serving.websocket import counted, until_one_ends

router = APIRouter(tags=["stream"])

RETRY_SECONDS = "5"
_FULL = "this server follows as many streams as it may (MDP_STREAMS_PER_PROCESS); retry later"


def _resume_from(last_event_id: str | None) -> tuple[int, int] | None:
    if not last_event_id:
        return None
    trade, _, candle = last_event_id.partition(".")
    try:
        return int(trade), int(candle)
    except ValueError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "Last-Event-ID is not one we sent"
        ) from exc


async def _subscription(
    registry: SymbolRegistry, symbols: str | None, events: str | None
) -> tuple[frozenset[str], list[str] | None]:
    """The event kinds and symbols asked for (None: all symbols); a 422 or 404 otherwise."""
    kinds = frozenset((events or "trade,candle").split(","))
    if not kinds or not kinds <= KINDS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "events is a comma list of trade, candle"
        )
    wanted = sorted(set(symbols.split(","))) if symbols else None
    for symbol in wanted or []:
        await known_symbol(registry, symbol)
    return kinds, wanted


@router.get(
    "/stream",
    response_class=EventSourceResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "An event stream that lasts until the client leaves",
        },
        **refusals(401, 404, 422, 503),
    },
    dependencies=[ReadAuth],
)
async def stream(
    registry: Registry,
    feed: Feed,
    symbols: str | None = None,
    events: str | None = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    """`trade` events as ticks are accepted and `candle` events as candles change (`data` is
    JSON), optionally only for `symbols` and `events` (comma-separated). Every event's id is a
    cursor: reconnect with it as Last-Event-ID to get exactly the events missed. Candle changes
    are kept for 15 minutes: a resume after some were pruned gets a `gap` event first (read the
    candles again). A comment line every 15 s keeps idle connections open. `503` when this server
    follows as many streams as it may (MDP_STREAMS_PER_PROCESS)."""
    kinds, wanted = await _subscription(registry, symbols, events)
    if feed.full:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, _FULL, headers={"Retry-After": RETRY_SECONDS}
        )
    cursor = _resume_from(last_event_id) or await feed.start_cursor()

    async def follow() -> AsyncIterator[bytes]:
        STREAMS.inc()
        try:
            async for batch in feed.follow(cursor, wanted, kinds):
                if batch:
                    yield b"".join(e.sse for e in batch)
        except (asyncio.CancelledError, GeneratorExit):
            STREAMS_ENDED.labels("client").inc()
            raise
        except Exception:
            STREAMS_ENDED.labels("error").inc()
            raise
        finally:
            STREAMS.dec()

    return EventSourceResponse(follow(), ping=int(HEARTBEAT_SECONDS))


@router.websocket("/ws")
async def ws(
    websocket: WebSocket,
    symbols: str | None = None,
    events: str | None = None,
    last_event_id: str | None = None,
    api_key: Annotated[str | None, Query(alias="apiKey")] = None,
) -> None:
    """`/stream`'s events over a WebSocket, for browsers and services that prefer one: `symbols`
    and `events` as for `/stream`. Each message is a JSON array of events, `{"id", "event",
    "data"}` in order; reconnect with `?last_event_id=` the last id received to get exactly the
    events missed. With READ_API_KEYS set, a key as `?apiKey=` or a Bearer header. A refused
    subscription is closed with code 1008 and the reason; a server following as many streams as
    it may closes with 1013 (try again later)."""
    shared = services(websocket.app)
    try:  # the place in the stream is taken first: the events committed once it is open are its
        cursor = _resume_from(last_event_id) or await shared.feed.start_cursor()
    except HTTPException as exc:
        await websocket.accept()
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason=str(exc.detail))
        return
    await websocket.accept()
    scheme, bearer = get_authorization_scheme_param(websocket.headers.get("authorization"))
    if not read_key_accepted(shared.settings, bearer if scheme.lower() == "bearer" else api_key):
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason="authentication failed")
        return
    try:
        kinds, wanted = await _subscription(shared.symbols, symbols, events)
    except HTTPException as exc:
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason=str(exc.detail))
        return
    if shared.feed.full:
        await websocket.close(code=status.WS_1013_TRY_AGAIN_LATER, reason=_FULL)
        return

    async def send() -> None:
        async for batch in shared.feed.follow(cursor, wanted, kinds):
            if batch:
                await websocket.send_text(f"[{','.join(e.ws for e in batch)}]")

    async def until_closed() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass  # messages from the client are not part of this protocol

    async with counted(websocket) as ending:
        if await until_one_ends(send(), until_closed()):
            ending.reason = "error"


class ChangedCandle(BaseModel):
    symbol: str
    interval: Interval
    bucket_start: datetime


class AggUpdate(BaseModel):
    candles: list[ChangedCandle] = Field(min_length=1, max_length=100_000)


class Announced(BaseModel):
    announced: int


@router.post(
    "/internal/agg-update",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[IngestAuth],
    tags=["internal"],
    responses=refusals(400, 401, 404, 413, 422, 503),
    openapi_extra=request_body({"application/json": {"schema": model_schema(AggUpdate)}}),
)
async def agg_update(
    request: Request, settings: AppSettings, registry: Registry, pool: Pool, stream: Stream
) -> Announced:
    """A pipeline announces candles it changed; /stream readers get their current values."""
    # Read here, once the credentials are checked, and within the body limit.
    body = await read_body(request, settings.ingest_max_body_bytes)
    update = parsed(AggUpdate, body)
    for symbol in {c.symbol for c in update.candles}:
        await known_symbol(registry, symbol)
    if any(c.bucket_start.tzinfo is None for c in update.candles):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "bucket_start needs a zone offset"
        )
    params = {
        "symbol": [c.symbol for c in update.candles],
        "interval": [c.interval for c in update.candles],
        "bucket_start": [c.bucket_start for c in update.candles],
    }
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(LOCK_CANDLES)
        await conn.execute(query("announce_candles"), params)
    stream.committed()
    return Announced(announced=len(update.candles))
