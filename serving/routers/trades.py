"""Polygon/Massive's trade history (`GET /v3/trades/{ticker}`, the official client's
`list_trades`): a symbol's trades that stand, promoted or just acknowledged, in pages of keyset
cursors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from psycopg import sql
from pydantic import BaseModel

from core.db import query
from core.intervals import EPOCH, market_midnight
from core.ticks import EARLIEST
from serving.auth import ReadAuth
from serving.deps import LATEST, AppSettings, PathSymbol, Pool, Registry
from serving.polygon_compat import PolygonRoute, polygon_refusals, registered, request_id

router = APIRouter(
    prefix="/v3/trades",
    tags=["polygon compatible"],
    dependencies=[ReadAuth],
    responses=polygon_refusals(401),
    route_class=PolygonRoute,
)

DEFAULT_LIMIT, MAX_LIMIT = 1000, 50_000
NANOS = re.compile(r"^-?\d+$")
RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|z|[+-]\d\d:\d\d)$")
CURSOR = re.compile(r"^(-?\d+)_(-?\d+)$")
MICROSECOND = timedelta(microseconds=1)
FIRST_SEQ, LAST_SEQ = -(2**63), 2**63 - 1


class TradeResult(BaseModel):
    """One trade. `exchange`, `tape`, `trf_id`, `correction` are never sent: the platform does
    not know them."""

    conditions: list[int] | None = None
    """Sale condition codes; absent for a regular trade."""
    id: str
    """The trade's `event_id` (unique within its source)."""
    participant_timestamp: int
    """The trade time, Unix nanoseconds (microsecond precision): the same as `sip_timestamp`."""
    sip_timestamp: int
    price: float
    size: float
    sequence_number: int
    """The platform's acceptance order (`seq`): increasing, not consecutive, negative for
    imported history."""


class Trades(BaseModel):
    results: list[TradeResult]
    status: str
    request_id: str
    next_url: str | None = None
    """Absent on the last page."""


@dataclass(frozen=True)
class Instant:
    """A `timestamp` value: a market day, or a moment in Unix nanoseconds."""

    day: date | None = None
    nanos: int = 0


def _instant(name: str, value: str) -> Instant:
    """`YYYY-MM-DD` (the market's day), Unix nanoseconds, or RFC 3339 with a zone offset."""
    if NANOS.match(value):
        return Instant(nanos=int(value))
    if moment := RFC3339.match(value):
        clock, fraction, offset = moment.groups()
        try:
            whole = datetime.fromisoformat(clock + ("+00:00" if offset in ("Z", "z") else offset))
            seconds = (whole.astimezone(UTC) - EPOCH) // timedelta(seconds=1)
        except (ValueError, OverflowError):
            pass
        else:
            return Instant(nanos=seconds * 10**9 + int((fraction or "").ljust(9, "0")))
    try:
        return Instant(day=date.fromisoformat(value))
    except ValueError:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"{name} {value!r} is neither YYYY-MM-DD, Unix nanoseconds nor RFC 3339 with a zone",
        ) from None


def _moment(micros: int) -> datetime:
    """Unix microseconds as a UTC time, held within the years 1 to 9999."""
    try:
        return EPOCH + micros * MICROSECOND
    except OverflowError:
        return LATEST if micros > 0 else EARLIEST


def _market_day(day: date, zone: tzinfo) -> tuple[datetime, datetime]:
    """The market day `day` as a half-open UTC range, held within the years 1 to 9999."""
    try:
        first = market_midnight(day, zone)
    except OverflowError:
        first = EARLIEST if day.year == 1 else LATEST
    try:
        after = market_midnight(day + timedelta(days=1), zone)
    except OverflowError:
        after = LATEST if day.year == 9999 else EARLIEST
    return first, after


def _window(bounds: dict[str, str | None], zone: tzinfo) -> tuple[datetime, datetime]:
    """The half-open UTC range the `timestamp` filters leave. Each value stands for a range: a
    date for its market day, a nanosecond time for the microseconds that equal it (none when it
    is not a whole microsecond: trades keep microseconds). `.gte` starts with that range, `.gt`
    after it, `.lte` ends with it, `.lt` before it."""
    start, end = EARLIEST, LATEST
    for kind, value in bounds.items():
        if value is None:
            continue
        at = _instant(f"timestamp{kind}", value)
        if at.day is not None:
            lower, upper = _market_day(at.day, zone)
        else:
            lower = _moment(-(-at.nanos // 1000))  # the first microsecond at or after it
            upper = _moment(at.nanos // 1000 + 1)  # the first microsecond after it
        if kind in ("", ".gte"):
            start = max(start, lower)
        if kind in ("", ".lte"):
            end = min(end, upper)
        if kind == ".gt":
            start = max(start, upper)
        if kind == ".lt":
            end = min(end, lower)
    return start, end


def _cursor(value: str) -> tuple[datetime, int]:
    found = CURSOR.match(value)
    if not found:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"cursor {value!r} is not one we gave")
    return _moment(int(found[1])), int(found[2])


@router.get(
    "/{ticker}",
    response_model=Trades,
    response_model_exclude_none=True,
    responses=polygon_refusals(400),
)
async def list_trades(
    request: Request,
    pool: Pool,
    registry: Registry,
    settings: AppSettings,
    ticker: PathSymbol,
    timestamp: str | None = None,
    timestamp_gte: Annotated[str | None, Query(alias="timestamp.gte")] = None,
    timestamp_gt: Annotated[str | None, Query(alias="timestamp.gt")] = None,
    timestamp_lte: Annotated[str | None, Query(alias="timestamp.lte")] = None,
    timestamp_lt: Annotated[str | None, Query(alias="timestamp.lt")] = None,
    order: Literal["asc", "desc"] = "desc",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    sort: Literal["timestamp"] = "timestamp",
    cursor: Annotated[str | None, Query(description="From `next_url`.")] = None,
) -> Response:
    """A symbol's trades, newest first unless `order=asc`, as Polygon lists them: acknowledged
    trades still waiting for promotion included, cancelled trades left out (they count in no
    bar; `GET /candles/trades` shows them). `timestamp` takes a date (the market's day in
    MARKET_TIMEZONE), Unix nanoseconds or RFC 3339; `.gte/.gt/.lte/.lt` bound it. An unknown
    ticker lists nothing."""
    start, end = _window(
        {"": timestamp, ".gte": timestamp_gte, ".gt": timestamp_gt,
         ".lte": timestamp_lte, ".lt": timestamp_lt},
        settings.market_zone,
    )  # fmt: skip
    forward = order == "asc"
    if cursor is not None:
        after_ts, after_seq = _cursor(cursor)
    else:
        after_ts, after_seq = (EARLIEST, FIRST_SEQ) if forward else (LATEST, LAST_SEQ)
    rows: list[tuple[Any, ...]] = []
    if await registered(registry, ticker):
        statement = sql.SQL(query("trades_page")).format(
            order=sql.SQL("ASC" if forward else "DESC"), beyond=sql.SQL(">" if forward else "<")
        )
        params = {"symbol": ticker, "from": start, "to": end, "ts": after_ts,
                  "seq": after_seq, "limit": limit + 1}  # fmt: skip
        async with pool.connection() as conn:
            rows = await (await conn.execute(statement, params)).fetchall()
    more, rows = len(rows) > limit, rows[:limit]
    results = [
        {**({"conditions": codes} if codes else {}), "id": event_id,
         "participant_timestamp": nanos, "sip_timestamp": nanos, "price": price, "size": volume,
         "sequence_number": seq}
        for nanos, _, seq, event_id, price, volume, codes in rows
    ]  # fmt: skip
    page: dict[str, Any] = {"results": results, "status": "OK", "request_id": request_id()}
    if more:
        last_ts, last_seq = rows[-1][1], rows[-1][2]
        micros = (last_ts - EPOCH) // MICROSECOND
        page["next_url"] = str(request.url.include_query_params(cursor=f"{micros}_{last_seq}"))
    return Response(msgspec.json.encode(page), media_type="application/json")
