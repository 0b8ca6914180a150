"""Market-data reads: symbols, tickers (latest trade and today's figures), trade history,
candles and the trades that made each. Candles are live: materialized buckets merged with trades
accepted moments ago."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.types import DecoratedCallable
from pydantic import BaseModel

from core.db import query
from core.intervals import day_window, market_date
from serving.auth import ReadAuth
from serving.deps import (
    LATEST,
    SYMBOL_READ,
    AppSettings,
    PathSymbol,
    Pool,
    Registry,
    known_symbol,
    utc,
)
from serving.errors import refusals

router = APIRouter(tags=["market data"], dependencies=[ReadAuth], responses=refusals(401))


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


def _older_spelling(
    path: str, name: str, description: str
) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """The handler again at `path`, the older spelling `/tickets/…` of `/tickers/…` kept for
    existing clients: deprecated, under its own name and description in the OpenAPI document."""
    return router.get(
        path, name=name, description=description, responses=SYMBOL_READ, deprecated=True
    )


@_older_spelling(
    "/tickets/{symbol}",
    "ticket",
    "The older spelling of `/tickers/{symbol}`, kept for existing clients.",
)
@router.get("/tickers/{symbol}", responses=SYMBOL_READ)
async def ticker(
    registry: Registry, pool: Pool, settings: AppSettings, symbol: PathSymbol
) -> Ticker:
    """The latest trade and today's (the market's day) open, high, low, last, volume and change."""
    zone = settings.market_zone
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


@_older_spelling(
    "/tickets/{symbol}/history",
    "ticket_history",
    "The older spelling of `/tickers/{symbol}/history`.",
)
@router.get("/tickers/{symbol}/history", responses=SYMBOL_READ)
async def history(
    registry: Registry,
    pool: Pool,
    symbol: PathSymbol,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: str | None = None,
) -> TradeHistory:
    """Canonical trades, newest first; page with `before` = the previous page's `next_before`."""
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
