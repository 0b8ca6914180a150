"""The market's day at a glance, Polygon/Massive-compatible: every symbol's day bar (grouped
daily), a ticker's previous day, one day's open and close, and snapshots (day, previous day,
latest minute, last trade, change, gainers and losers), so the official `massive` client's
`get_grouped_daily_aggs`, `get_previous_close_agg`, `get_daily_open_close_agg` and `get_snapshot_*`
work unchanged. Days are the market's (MARKET_TIMEZONE, docs/design.md §5) and every figure is
live: stored candles merged with the trades accepted moments ago (docs/design.md §11)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, tzinfo
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from pydantic import BaseModel, Field

from core.db import query
from core.intervals import day_window, market_date
from serving.auth import ReadAuth
from serving.deps import AppSettings, PathSymbol, Pool
from serving.polygon_compat import (
    Bar,
    PolygonRoute,
    SnapshotBar,
    polygon_refusals,
    request_id,
)

router = APIRouter(
    tags=["polygon compatible"],
    dependencies=[ReadAuth],
    responses=polygon_refusals(401),
    route_class=PolygonRoute,
)

MOVERS = 20
"""Gainers and losers list this many tickers, as Polygon does."""
MOVERS_MIN_VOLUME = 10_000
"""A ticker is a gainer or a loser only with this many shares traded in the day, as Polygon's."""
NEW_YORK = ("America/New_York", "US/Eastern")
"""Zones whose market day is a US trading day: pre-market and after-hours prices have a meaning."""
REGULAR_OPEN, REGULAR_CLOSE, AFTER_HOURS_END = time(9, 30), time(16), time(20)

MarketDate = Annotated[
    date, Path(alias="date", examples=["2026-11-20"], description="A market day, YYYY-MM-DD")
]
IncludeOtc = Annotated[
    bool, Query(description="Accepted for compatibility: no OTC securities are listed here.")
]
_encode = msgspec.json.Encoder().encode


class DayBar(Bar):
    """A day bar of one ticker; `t` is the market day's start (its midnight in
    MARKET_TIMEZONE)."""

    T: str


class GroupedDaily(BaseModel):
    adjusted: bool
    queryCount: int
    resultsCount: int
    results: list[DayBar] | None = None
    """Absent when no symbol has a bar that day."""
    status: str
    request_id: str


class PreviousClose(GroupedDaily):
    ticker: str


class DailyOpenClose(BaseModel):
    status: str
    symbol: str
    from_: str = Field(alias="from")
    """The market day, YYYY-MM-DD."""
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    volume: float
    preMarket: float | None = None
    """The last trade before 09:30 New York time; only when MARKET_TIMEZONE is New York's."""
    afterHours: float | None = None
    """The last trade from 16:00 to 20:00 New York time; only when MARKET_TIMEZONE is New York's."""


class MinuteBar(SnapshotBar):
    av: float
    """The day's volume so far."""
    n: int
    t: int
    """The minute's start, Unix milliseconds."""


class SnapshotTrade(BaseModel):
    i: str
    """Our event_id."""
    p: float
    s: float
    t: int
    """Trade time, Unix nanoseconds."""
    q: int
    """Acceptance order (our seq)."""
    c: list[int] | None = None
    """Sale conditions; absent for a regular trade."""


class TickerSnapshot(BaseModel):
    """Fields we have no data for (quotes, fair market value) are left out, and so is what a
    ticker does not have yet (a day bar before its first trade of the day, a change without a
    previous close)."""

    ticker: str
    day: SnapshotBar | None = None
    prevDay: SnapshotBar | None = None
    min: MinuteBar | None = None
    lastTrade: SnapshotTrade | None = None
    todaysChange: float | None = None
    """The day's close minus the previous day's close."""
    todaysChangePerc: float | None = None
    updated: int | None = None
    """The last trade's time, Unix nanoseconds."""


class Snapshots(BaseModel):
    status: str
    request_id: str
    count: int
    tickers: list[TickerSnapshot]


class Movers(BaseModel):
    status: str
    request_id: str
    tickers: list[TickerSnapshot]


class OneSnapshot(BaseModel):
    status: str
    request_id: str
    ticker: TickerSnapshot


Row = tuple[Any, ...]
"""A `ticker_snapshots.sql` row: symbol, then the day, previous day and latest minute bars and the
last trade, each a dict in Polygon's field names, or None when not asked for or not there."""


async def _market_rows(
    pool: Pool,
    symbols: list[str] | None,
    day: tuple[datetime, datetime],
    *parts: Literal["day", "prev", "minute", "last"],
) -> list[Row]:
    """The `parts` of each chosen symbol (all when `symbols` is None) that has any of them."""
    params = {
        "symbols": symbols,
        "day_start": day[0],
        "day_end": day[1],
        **{part: part in parts for part in ("day", "prev", "minute", "last")},
    }
    async with pool.connection() as conn:
        return await (await conn.execute(query("ticker_snapshots"), params)).fetchall()


def _today(zone: tzinfo) -> tuple[datetime, datetime]:
    return day_window(market_date(datetime.now(UTC), zone), zone)


def _day(day: date, zone: tzinfo) -> tuple[datetime, datetime]:
    try:
        return day_window(day, zone)
    except OverflowError:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"{day} is out of range in {zone}"
        ) from None


def _json(body: dict[str, Any]) -> Response:
    return Response(_encode(body), media_type="application/json")


def _day_bars(symbol_bars: list[tuple[str, dict[str, Any]]], adjusted: bool) -> dict[str, Any]:
    """The envelope of grouped daily and previous close bars (`results` absent when none)."""
    envelope: dict[str, Any] = {
        "adjusted": adjusted,
        "queryCount": len(symbol_bars),
        "resultsCount": len(symbol_bars),
        "status": "OK",
        "request_id": request_id(),
    }
    if symbol_bars:
        envelope["results"] = [{"T": symbol, **bar} for symbol, bar in symbol_bars]
    return envelope


@router.get(
    "/v2/aggs/grouped/locale/us/market/stocks/{date}",
    response_model=GroupedDaily,
    response_model_exclude_none=True,
    responses=polygon_refusals(400),
)
async def grouped_daily(
    pool: Pool,
    settings: AppSettings,
    day: MarketDate,
    adjusted: bool = True,
    include_otc: IncludeOtc = False,
) -> Response:
    """Every symbol's bar of one market day (its live bar today), in one answer: a screener's
    whole market. `adjusted` is echoed (trades here are never split-adjusted)."""
    rows = await _market_rows(pool, None, _day(day, settings.market_zone), "day")
    return _json(_day_bars([(symbol, bar) for symbol, bar, *_ in rows if bar], adjusted))


@router.get(
    "/v2/aggs/ticker/{ticker}/prev",
    response_model=PreviousClose,
    response_model_exclude_none=True,
    responses=polygon_refusals(400),
)
async def previous_close(
    pool: Pool, settings: AppSettings, ticker: PathSymbol, adjusted: bool = True
) -> Response:
    """The bar of the latest market day before today that has one; `resultsCount: 0` when none
    (or the ticker is unknown), as Polygon answers."""
    rows = await _market_rows(pool, [ticker], _today(settings.market_zone), "prev")
    bars = [(symbol, prev) for symbol, _, prev, *_ in rows if prev]
    return _json({"ticker": ticker, **_day_bars(bars, adjusted)})


def _sessions(day: date, zone: tzinfo) -> dict[str, datetime]:
    """The day's pre-market (from its midnight to the regular open) and after-hours sessions."""
    start = datetime.combine(day, time(), zone)
    return {
        "pre_start": start.astimezone(UTC),
        "pre_end": datetime.combine(day, REGULAR_OPEN, zone).astimezone(UTC),
        "after_start": datetime.combine(day, REGULAR_CLOSE, zone).astimezone(UTC),
        "after_end": datetime.combine(day, AFTER_HOURS_END, zone).astimezone(UTC),
    }


@router.get(
    "/v1/open-close/{ticker}/{date}",
    response_model=DailyOpenClose,
    response_model_exclude_none=True,
    responses=polygon_refusals(400, 404),
)
async def daily_open_close(
    pool: Pool, settings: AppSettings, ticker: PathSymbol, day: MarketDate, adjusted: bool = True
) -> Response:
    """One market day of a ticker: open, high, low, close, volume and, when the market's day is
    New York's, the pre-market and after-hours prices. 404 (`NOT_FOUND`) without a bar."""
    zone = settings.market_zone
    rows = await _market_rows(pool, [ticker], _day(day, zone), "day")
    bar = rows[0][1] if rows else None
    if bar is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Data not found.")
    body: dict[str, Any] = {
        "status": "OK",
        "from": day.isoformat(),
        "symbol": ticker,
        "open": bar["o"],
        "high": bar["h"],
        "low": bar["l"],
        "close": bar["c"],
        "volume": bar["v"],
    }
    if str(zone) in NEW_YORK:
        params = {"symbol": ticker, **_sessions(day, zone)}
        async with pool.connection() as conn:
            sessions = await (await conn.execute(query("extended_hours"), params)).fetchall()
        names = {"pre": "preMarket", "after": "afterHours"}
        body |= {names[session]: price for session, price in sessions}
    return _json(body)


def _snapshot(row: Row) -> dict[str, Any]:
    """One ticker's snapshot from a `ticker_snapshots.sql` row, in Polygon's field names."""
    symbol, day, prev, minute, last = row
    snapshot: dict[str, Any] = {"ticker": symbol}
    if day:
        snapshot["day"] = {k: day[k] for k in SnapshotBar.model_fields}
    if prev:
        snapshot["prevDay"] = {k: prev[k] for k in SnapshotBar.model_fields}
    if minute:
        snapshot["min"] = {**minute, "av": day["v"] if day else minute["v"]}
    if last:
        if last["c"] is None:
            del last["c"]
        snapshot["lastTrade"] = last
        snapshot["updated"] = last["t"]
    close, previous = (day or {}).get("c"), (prev or {}).get("c")
    if close is not None and previous:
        snapshot["todaysChange"] = close - previous
        snapshot["todaysChangePerc"] = 100 * (close - previous) / previous
    return snapshot


async def _snapshots(pool: Pool, zone: tzinfo, symbols: list[str] | None) -> list[dict[str, Any]]:
    rows = await _market_rows(pool, symbols, _today(zone), "day", "prev", "minute", "last")
    return [_snapshot(row) for row in rows]


@router.get(
    "/v2/snapshot/locale/us/markets/stocks/tickers",
    response_model=Snapshots,
    response_model_exclude_none=True,
    responses=polygon_refusals(400),
)
async def snapshot_all(
    pool: Pool,
    settings: AppSettings,
    tickers: Annotated[
        str | None,
        Query(
            description="Comma-separated tickers (all when absent or empty); unknown ones are "
            "left out.",
            examples=["AAPL,MSFT"],
        ),
    ] = None,
    include_otc: IncludeOtc = False,
) -> Response:
    """Today's snapshot of every ticker that has traded (or of those asked)."""
    asked = [t.strip() for t in (tickers or "").split(",") if t.strip()] or None
    found = await _snapshots(pool, settings.market_zone, asked)
    return _json({"status": "OK", "request_id": request_id(), "count": len(found),
                  "tickers": found})  # fmt: skip


@router.get(
    "/v2/snapshot/locale/us/markets/stocks/tickers/{ticker}",
    response_model=OneSnapshot,
    response_model_exclude_none=True,
    responses=polygon_refusals(404),
)
async def snapshot_ticker(pool: Pool, settings: AppSettings, ticker: PathSymbol) -> Response:
    """One ticker's snapshot; 404 (`NOT_FOUND`) for a ticker unknown or never traded."""
    found = await _snapshots(pool, settings.market_zone, [ticker])
    if not found:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Ticker not found.")
    return _json({"status": "OK", "request_id": request_id(), "ticker": found[0]})


@router.get(
    "/v2/snapshot/locale/us/markets/stocks/{direction}",
    response_model=Movers,
    response_model_exclude_none=True,
    responses=polygon_refusals(400),
)
async def snapshot_movers(
    pool: Pool,
    settings: AppSettings,
    direction: Literal["gainers", "losers"],
    include_otc: IncludeOtc = False,
) -> Response:
    """The 20 tickers up (gainers) or down (losers) the most since the previous close, in
    percent, among those with at least 10,000 shares traded today. They are ranked on their day
    and previous day alone; only those listed are read whole."""
    zone, sign = settings.market_zone, 1 if direction == "gainers" else -1

    def rank(snapshot: dict[str, Any]) -> tuple[float, str]:
        return -sign * snapshot["todaysChangePerc"], snapshot["ticker"]

    days = [_snapshot(row) for row in await _market_rows(pool, None, _today(zone), "day", "prev")]
    movers = sorted(
        (s for s in days
         if s.get("todaysChangePerc", 0) * sign > 0 and s["day"]["v"] >= MOVERS_MIN_VOLUME),
        key=rank,
    )[:MOVERS]  # fmt: skip
    listed = await _snapshots(pool, zone, [s["ticker"] for s in movers]) if movers else []
    # Trades accepted between the two reads may have moved a ticker: its latest figures decide.
    listed.sort(key=lambda s: rank(s) if "todaysChangePerc" in s else (0.0, s["ticker"]))
    return _json({"status": "OK", "request_id": request_id(), "tickers": listed})
