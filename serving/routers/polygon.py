"""A Polygon/Massive-compatible subset (aggregate bars, last trade), so existing
clients such as the official `massive` Python client work against this platform unchanged."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from core.db import query
from core.intervals import INTERVALS, LONGEST_MARKET_DAY, market_midnight
from serving.auth import ReadAuth
from serving.deps import LATEST, AppSettings, PathSymbol, Pool, Registry, known_symbol, shifted
from serving.errors import refusals
from serving.polygon_compat import Bar, request_id

router = APIRouter(
    prefix="/v2", tags=["polygon compatible"], dependencies=[ReadAuth], responses=refusals(401)
)

Timespan = Literal["minute", "hour", "day", "week", "month", "quarter", "year"]
EPOCH_MS = re.compile(r"^-?\d+$")


class Aggregates(BaseModel):
    ticker: str
    queryCount: int
    resultsCount: int
    adjusted: bool
    results: list[Bar] | None = None
    """Absent when there are no bars."""
    status: str
    request_id: str
    count: int
    next_url: str | None = None
    """Absent on the last page."""


class LastTradeResult(BaseModel):
    T: str
    p: float
    s: float
    t: int
    """Trade time, Unix nanoseconds."""
    y: int
    q: int
    i: str
    source: str


class LastTrade(BaseModel):
    status: str
    request_id: str
    results: LastTradeResult


class NotFound(BaseModel):
    """Polygon's answer when a ticker has no data."""

    status: Literal["NOT_FOUND"]
    request_id: str
    message: str


@dataclass(frozen=True)
class BarShape:
    """How bars of `multiplier` times `timespan` are made from a stored base interval."""

    base: str
    align: str  # day | epoch | monday | months
    width: timedelta
    months: int

    @property
    def base_per_bar(self) -> int:
        """The most base buckets one bar can hold (a day-aligned bar ends with its market day)."""
        if self.align == "months":
            return 31 * self.months
        span = min(self.width, LONGEST_MARKET_DAY) if self.align == "day" else self.width
        return span // INTERVALS[self.base]


def bar_shape(multiplier: int, timespan: str) -> BarShape:
    """Minute and hour bars from the market day's midnight; day, week (from Monday) and month
    bars group whole market days (docs/design.md §5)."""
    if timespan in ("minute", "hour"):
        width = (
            timedelta(minutes=multiplier) if timespan == "minute" else timedelta(hours=multiplier)
        )
        base = next(i for i in ("1h", "15m", "5m", "1m") if width % INTERVALS[i] == timedelta(0))
        return BarShape(base, "day", width, 0)
    if timespan == "day":
        return BarShape("1d", "epoch", timedelta(days=multiplier), 0)
    if timespan == "week":
        return BarShape("1d", "monday", timedelta(weeks=multiplier), 0)
    months = {"month": 1, "quarter": 3, "year": 12}[timespan] * multiplier
    return BarShape("1d", "months", timedelta(0), months)


def _bound(value: str, *, end: bool, zone: tzinfo) -> datetime:
    """`from`/`to` as Unix milliseconds (a bar starting at `to` is included) or a market date
    (whole market days in `zone`, `to` inclusive); the result is a half-open bound."""
    try:
        if EPOCH_MS.match(value):
            start = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(value))
            return shifted(start, timedelta(milliseconds=1)) if end else start
        day = date.fromisoformat(value)
        if not end:
            return market_midnight(day, zone)
        return LATEST if day == date.max else market_midnight(day + timedelta(days=1), zone)
    except (ValueError, OverflowError) as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"{value!r} is neither YYYY-MM-DD nor Unix milliseconds within the years 1 to 9999",
        ) from exc


def _not_found() -> JSONResponse:
    body = NotFound(status="NOT_FOUND", request_id=request_id(), message="Data not found.")
    return JSONResponse(body.model_dump(), status_code=status.HTTP_404_NOT_FOUND)


@router.get(
    "/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{from_}/{to}",
    response_model=Aggregates,
    response_model_exclude_none=True,
    responses=refusals(422, 503),
)
async def aggregates(
    request: Request,
    pool: Pool,
    registry: Registry,
    settings: AppSettings,
    ticker: PathSymbol,
    multiplier: Annotated[int, Path(ge=1, le=100_000)],
    timespan: Timespan,
    from_: str,
    to: str,
    adjusted: bool = True,
    sort: Literal["asc", "desc"] = "asc",
    limit: Annotated[int, Query(ge=1, le=50_000)] = 5000,
) -> Response:
    """Aggregate bars (`o h l c v vw n t`) as Polygon serves them; an unknown ticker gives
    `resultsCount: 0`. `adjusted` is accepted and echoed (trades here are never split-adjusted)."""
    zone = settings.market_zone
    start, end = _bound(from_, end=False, zone=zone), _bound(to, end=True, zone=zone)
    if start >= end:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "from is after to")
    envelope: dict[str, Any] = {
        "ticker": ticker,
        "queryCount": 0,
        "resultsCount": 0,
        "adjusted": adjusted,
        "status": "OK",
        "request_id": request_id(),
        "count": 0,
    }
    try:
        await known_symbol(registry, ticker)
    except HTTPException:
        return JSONResponse(envelope)
    shape = bar_shape(multiplier, timespan)
    params = {
        "symbol": ticker,
        "base": shape.base,
        "base_width": INTERVALS[shape.base],
        "start": start,
        "end": end,
        "align": shape.align,
        "width": shape.width,
        "months": shape.months,
        "sign": 1 if sort == "asc" else -1,
        "limit": limit,
        "reach": (limit + 1) * shape.base_per_bar,
    }
    async with pool.connection() as conn:
        row = await (await conn.execute(query("polygon_aggs"), params)).fetchone()
    assert row is not None
    results, count, last_t, more = row
    envelope.update(queryCount=count, resultsCount=count, count=count)
    if more:
        next_from, next_to = (str(last_t + 1), to) if sort == "asc" else (from_, str(last_t - 1))
        path = f"/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{next_from}/{next_to}"
        query_string = f"adjusted={str(adjusted).lower()}&sort={sort}&limit={limit}"
        envelope["next_url"] = f"{str(request.base_url).rstrip('/')}{path}?{query_string}"
    if not count:
        return JSONResponse(envelope)
    head = json.dumps(envelope, separators=(",", ":"))[:-1]  # without its closing brace
    return Response(f'{head},"results":{results}}}', media_type="application/json")


@router.get(
    "/last/trade/{ticker}",
    response_model=LastTrade,
    responses={
        status.HTTP_404_NOT_FOUND: {"model": NotFound, "description": "No trade for this ticker"},
        **refusals(422, 503),
    },
)
async def last_trade(registry: Registry, pool: Pool, ticker: PathSymbol) -> Response:
    """The latest trade, Polygon-style (times in Unix nanoseconds, `q` the acceptance order)."""
    try:
        await known_symbol(registry, ticker)
    except HTTPException:
        return _not_found()
    async with pool.connection() as conn:
        row = await (await conn.execute(query("latest_trade"), {"symbol": ticker})).fetchone()
    if row is None:
        return _not_found()
    ts, price, volume, source, event_id, seq = row
    nanos = (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000
    result = LastTradeResult(
        T=ticker, p=price, s=volume, t=nanos, y=nanos, q=seq, i=event_id, source=source
    )
    return JSONResponse(
        LastTrade(status="OK", request_id=request_id(), results=result).model_dump()
    )
