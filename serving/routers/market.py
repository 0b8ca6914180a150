"""Market-data reads: symbols, tickers (latest trade and today's figures), trade history,
candles and the trades that made each. Candles are live: materialized buckets merged with trades
accepted moments ago."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from psycopg import AsyncConnection
from pydantic import BaseModel

from core.db import query
from core.intervals import EPOCH, INTERVALS, Interval, day_window, days_are_utc, market_date
from core.ticks import EARLIEST
from serving.auth import ReadAuth
from serving.candle_cache import Candle as CacheCandle
from serving.candle_cache import Page
from serving.deps import (
    LATEST,
    AppSettings,
    Cache,
    PathSymbol,
    Pool,
    Registry,
    Stream,
    known_symbol,
    shifted,
    utc,
)
from serving.errors import refusals

router = APIRouter(tags=["market data"], dependencies=[ReadAuth], responses=refusals(401))

# The example is a symbol registered by default (core.config.DEFAULT_SYMBOLS).
QuerySymbol = Annotated[str, Query(examples=["AAPL"])]
SYMBOL_READ = refusals(404, 422, 503)  # what a read about one symbol can refuse


class Symbol(BaseModel):
    symbol: str
    first_trade_at: datetime | None
    last_trade_at: datetime | None


class Symbols(BaseModel):
    symbols: list[Symbol]


class Trade(BaseModel):
    ts: datetime
    price: float
    volume: float
    source: str
    event_id: str


def _trade(row: tuple[Any, ...]) -> Trade:
    """A Trade from a `latest_trade.sql` or `trade_history.sql` row (ts … event_id, seq)."""
    return Trade(**dict(zip(Trade.model_fields, row[:5], strict=True)))


class DayFigures(BaseModel):
    """Today (the market's day, MARKET_TIMEZONE) so far, pending trades included; change is
    against yesterday's close. Prices are null while no trade of the day may set them (sale
    conditions, docs/design.md §5)."""

    date: str
    open: float | None
    high: float | None
    low: float | None
    last: float | None
    volume: float
    trade_count: int
    previous_close: float | None
    change: float | None
    change_percent: float | None


class Ticker(BaseModel):
    symbol: str
    last_trade: Trade | None
    today: DayFigures | None


class TradeHistory(BaseModel):
    symbol: str
    trades: list[Trade]
    next_before: str | None = None
    """Pass as `before` for the next (older) page; null on the last page."""


class Candle(BaseModel):
    """A bucket's bar under the sale-condition rules: open and close, high and low are null when
    none of its trades may set them, vwap when none counts in volume."""

    bucket_start: datetime
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    volume: float
    vwap: float | None
    trade_count: int
    revision: int
    """How many times cancels restated this candle."""
    is_final: bool


class CandlesPage(BaseModel):
    symbol: str
    interval: Interval
    candles: list[Candle]
    next_page_token: str | None


@router.get("/symbols", responses=refusals(503))
async def symbols(pool: Pool) -> Symbols:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT symbol, first_trade_at, last_trade_at FROM symbols ORDER BY symbol"
        )
        rows = await cur.fetchall()
    return Symbols(
        symbols=[Symbol(symbol=s, first_trade_at=f, last_trade_at=la) for s, f, la in rows]
    )


async def _ticker(registry: Registry, pool: Pool, symbol: str, zone: tzinfo) -> Ticker:
    await known_symbol(registry, symbol)
    today = market_date(datetime.now(UTC), zone)
    start, end = day_window(today - timedelta(days=1), zone)[0], day_window(today, zone)[1]
    async with pool.connection() as conn:
        latest = await (await conn.execute(query("latest_trade"), {"symbol": symbol})).fetchone()
        days = await (
            await conn.execute(
                "SELECT bucket_start, open, high, low, close, volume, trade_count"
                " FROM live_candles(%s, '1d', '1 day', %s, %s, 2)",
                (symbol, start, end),
            )
        ).fetchall()
    by_day = {market_date(row[0], zone): row for row in days}
    figures = None
    if current := by_day.get(today):
        _, open_, high, low, last, volume, count = current
        previous = by_day.get(today - timedelta(days=1))
        previous_close = previous[4] if previous else None
        change = last - previous_close if previous_close and last is not None else None
        figures = DayFigures(
            date=today.isoformat(),
            open=open_,
            high=high,
            low=low,
            last=last,
            volume=volume,
            trade_count=count,
            previous_close=previous_close,
            change=change,
            change_percent=100 * change / previous_close
            if change is not None and previous_close
            else None,
        )
    last_trade = _trade(latest) if latest else None
    return Ticker(symbol=symbol, last_trade=last_trade, today=figures)


@router.get("/tickers/{symbol}", responses=SYMBOL_READ)
async def ticker(
    registry: Registry, pool: Pool, settings: AppSettings, symbol: PathSymbol
) -> Ticker:
    """The latest trade and today's (the market's day) open, high, low, last, volume and change."""
    return await _ticker(registry, pool, symbol, settings.market_zone)


@router.get("/tickets/{symbol}", responses=SYMBOL_READ, deprecated=True)
async def ticket(
    registry: Registry, pool: Pool, settings: AppSettings, symbol: PathSymbol
) -> Ticker:
    """The older spelling of `/tickers/{symbol}`, kept for existing clients."""
    return await _ticker(registry, pool, symbol, settings.market_zone)


FIRST_SEQ = -(2**63)


def _cursor(before: str | None) -> tuple[datetime, int]:
    """`before` is a `next_before` cursor (`<RFC 3339 time>~<seq>`) or a plain RFC 3339 time."""
    if before is None:
        return LATEST, 0
    moment, _, seq = before.partition("~")
    try:
        # A plain time: strictly before it, whatever the seq (imported history's are negative).
        return utc(datetime.fromisoformat(moment), "before"), int(seq) if seq else FIRST_SEQ
    except ValueError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"before is not a cursor or time: {before!r}"
        ) from exc


async def _history(
    registry: Registry, pool: Pool, symbol: str, limit: int, before: str | None
) -> TradeHistory:
    await known_symbol(registry, symbol)
    ts, seq = _cursor(before)
    params = {"symbol": symbol, "ts": ts, "seq": seq, "limit": limit + 1}
    async with pool.connection() as conn:
        rows = await (await conn.execute(query("trade_history"), params)).fetchall()
    trades = [_trade(row) for row in rows[:limit]]
    more = len(rows) > limit
    last = rows[limit - 1] if more else None
    next_before = f"{last[0].astimezone(UTC).isoformat()}~{last[5]}" if last else None
    return TradeHistory(symbol=symbol, trades=trades, next_before=next_before)


Limit = Annotated[int, Query(ge=1, le=1000)]


@router.get("/tickers/{symbol}/history", responses=SYMBOL_READ)
async def history(
    registry: Registry,
    pool: Pool,
    symbol: PathSymbol,
    limit: Limit = 100,
    before: str | None = None,
) -> TradeHistory:
    """Canonical trades, newest first; page with `before` = the previous page's `next_before`."""
    return await _history(registry, pool, symbol, limit, before)


@router.get("/tickets/{symbol}/history", responses=SYMBOL_READ, deprecated=True)
async def ticket_history(
    registry: Registry,
    pool: Pool,
    symbol: PathSymbol,
    limit: Limit = 100,
    before: str | None = None,
) -> TradeHistory:
    """The older spelling of `/tickers/{symbol}/history`."""
    return await _history(registry, pool, symbol, limit, before)


ARROW_STREAM = "application/vnd.apache.arrow.stream"


@router.get(
    "/candles",
    response_model=CandlesPage,
    responses={
        200: {
            "description": "The page as JSON, or as an Arrow IPC stream (one record batch; the "
            "next page token in the `Next-Page-Token` header) when the Accept header asks for "
            f"`{ARROW_STREAM}`",
            "content": {ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}}},
        },
        **SYMBOL_READ,
    },
)
async def candles(
    request: Request,
    pool: Pool,
    registry: Registry,
    cache: Cache,
    stream: Stream,
    symbol: QuerySymbol,
    interval: Interval = "1m",
    start: datetime | None = None,
    end: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    page_token: str | None = None,
) -> Response:
    """OHLCV candles with `bucket_start` in [start, end), oldest first (defaults: the last day).
    The bucket still filling, and any bucket with trades accepted but not yet materialized,
    comes merged with those trades and `is_final: false`."""
    await known_symbol(registry, symbol)
    end = utc(end, "end") if end else datetime.now(UTC)
    start = utc(start, "start") if start else shifted(end, -timedelta(days=1))
    if start > end:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "start is after end")
    width = INTERVALS[interval]
    if page_token:
        try:
            issued = utc(datetime.fromisoformat(page_token), "page_token")
        except ValueError as exc:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, "page_token is not one we issued"
            ) from exc
        start = max(start, shifted(issued, width))
    if ARROW_STREAM in request.headers.get("accept", ""):
        async with pool.connection() as conn:
            rows, more = await _read_candles(conn, symbol, interval, start, end, limit)
        headers = {"Next-Page-Token": rows[-1].bucket_start} if more else None
        return Response(_arrow(rows), media_type=ARROW_STREAM, headers=headers)
    page = await cache.page(symbol, interval, start, end, limit, stream.changes)
    if page is None:  # read directly: late trades pending in the range, or a long range
        async with pool.connection() as conn:
            rows, more = await _read_candles(conn, symbol, interval, start, end, limit)
        page = Page([msgspec.json.encode(c) for c in rows], rows[-1].bucket_start if more else None)
    head = msgspec.json.encode({"symbol": symbol, "interval": interval})[:-1]
    tail = msgspec.json.encode(page.last_start)
    body = b"".join(
        (head, b',"candles":[', b",".join(page.candles), b'],"next_page_token":', tail, b"}")
    )
    return Response(body, media_type="application/json")


CountsIn = Literal["open_close", "high_low", "volume"]


class BucketTrade(BaseModel):
    source: str
    event_id: str
    ts: datetime
    price: float
    volume: float
    conditions: list[int] | None
    counts_in: list[CountsIn]
    """Which fields of the candle this trade counted in, by its sale conditions (none once
    cancelled)."""
    cancelled_at: datetime | None


class BucketTrades(BaseModel):
    symbol: str
    interval: Interval
    bucket_start: datetime
    trades: list[BucketTrade]
    next_page_token: str | None


def _bucket_end(start: datetime, interval: str, zone: tzinfo) -> datetime | None:
    """The end of the `interval` bucket starting at `start`; None when none starts there. A 1d
    bucket is a market day (docs/design.md §5): from a midnight in `zone` to the next."""
    width = INTERVALS[interval]
    if interval != "1d" or days_are_utc(zone):
        return None if (start - EPOCH) % width else shifted(start, width)
    try:
        day_start, day_end = day_window(market_date(start, zone), zone)
    except OverflowError:  # a day at the calendar's ends
        return None
    return day_end if day_start == start else None


@router.get("/candles/trades", responses=SYMBOL_READ)
async def candle_trades(
    pool: Pool,
    registry: Registry,
    settings: AppSettings,
    symbol: QuerySymbol,
    bucket_start: datetime,
    interval: Interval = "1m",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    page_token: str | None = None,
) -> BucketTrades:
    """Every trade of one candle's bucket, accepted ones still pending included, in the order
    that fixes its open and close, each with the fields it counted in (`counts_in`: its sale
    conditions decide; a cancelled trade is listed with `cancelled_at` and counts nowhere): the
    trades summed back under those give the candle exactly."""
    await known_symbol(registry, symbol)
    start = utc(bucket_start, "bucket_start")
    end = _bucket_end(start, interval, settings.market_zone)
    if end is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"bucket_start is not the start of a {interval} bucket",
        )
    after = _after(page_token) if page_token else (EARLIEST, FIRST_SEQ)
    params = {"symbol": symbol, "start": start, "end": end, "limit": limit}
    params |= {"ts": after[0], "seq": after[1]}
    async with pool.connection() as conn:
        rows = await (await conn.execute(query("bucket_trades"), params)).fetchall()
    more, rows = len(rows) > limit, rows[:limit]
    trades = [
        BucketTrade(
            source=source, event_id=event_id, ts=ts, price=price, volume=volume,
            conditions=conditions,
            counts_in=[] if cancelled_at else _counts_in(high_low, open_close, counted),
            cancelled_at=cancelled_at,
        )
        for (source, event_id, ts, _, price, volume, conditions, high_low, open_close,
             counted, cancelled_at) in rows
    ]  # fmt: skip
    token = f"{rows[-1][2].astimezone(UTC).isoformat()}~{rows[-1][3]}" if more else None
    return BucketTrades(
        symbol=symbol, interval=interval, bucket_start=start, trades=trades, next_page_token=token
    )


def _counts_in(high_low: bool, open_close: bool, volume: bool) -> list[CountsIn]:
    fields: list[tuple[CountsIn, bool]] = [
        ("open_close", open_close), ("high_low", high_low), ("volume", volume)
    ]  # fmt: skip
    return [field for field, counts in fields if counts]


def _after(token: str) -> tuple[datetime, int]:
    try:
        moment, seq = token.split("~")
        return utc(datetime.fromisoformat(moment), "page_token"), int(seq)
    except ValueError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "page_token is not one we issued"
        ) from exc


def _arrow(rows: list[CacheCandle]) -> bytes:
    """Candles as an Arrow IPC stream: a column per JSON field, bucket_start a UTC timestamp.
    Polars is imported here, for the bulk readers who ask for it."""
    import polars as pl

    frame = pl.DataFrame(
        [msgspec.structs.astuple(c) for c in rows],
        schema={
            "bucket_start": pl.String,
            **dict.fromkeys(("open", "high", "low", "close", "volume", "vwap"), pl.Float64),
            "trade_count": pl.Int64,
            "revision": pl.Int32,
            "is_final": pl.Boolean,
        },
        orient="row",
    ).with_columns(pl.col("bucket_start").str.to_datetime(time_zone="UTC", time_unit="us"))
    stream = io.BytesIO()
    frame.write_ipc_stream(stream)
    return stream.getvalue()


async def _read_candles(
    conn: AsyncConnection[Any],
    symbol: str,
    interval: str,
    start: datetime,
    end: datetime,
    limit: int,
) -> tuple[list[CacheCandle], bool]:
    """The page's candles merged live (`sql/queries/candles_page.sql`), and whether more follow."""
    params = {
        "symbol": symbol,
        "interval": interval,
        "width": INTERVALS[interval],
        "start": start,
        "end": end,
        "limit": limit,
    }
    # Binary rows and msgspec: a day of 1m bars is served several times faster than by
    # validating models or by building the JSON in PostgreSQL.
    async with conn.cursor(binary=True) as cur:
        rows = await (await cur.execute(query("candles_page"), params)).fetchall()
    return [CacheCandle(*row) for row in rows[:limit]], len(rows) > limit
