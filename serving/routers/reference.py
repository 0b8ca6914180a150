"""Polygon/Massive's reference data, filled from what the platform knows: its symbols as tickers
(`list_tickers`, `get_ticker_details`), the sale conditions its candles follow
(`list_conditions`), and the market's session now from its trading calendar
(`get_market_status`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, status
from psycopg import sql
from pydantic import BaseModel

from core.db import query
from core.market_calendar import Session, SpecialDay, TradingHours, session_at
from serving.auth import ReadAuth
from serving.deps import AppSettings, PathSymbol, Pool, Registry, known_symbol
from serving.polygon_compat import PolygonList, PolygonRoute, polygon_refusals, request_id

router = APIRouter(
    tags=["polygon compatible"],
    dependencies=[ReadAuth],
    responses=polygon_refusals(401),
    route_class=PolygonRoute,
)


class ConsolidatedRules(BaseModel):
    updates_high_low: bool
    updates_open_close: bool
    updates_volume: bool


class UpdateRules(BaseModel):
    consolidated: ConsolidatedRules


class Condition(BaseModel):
    id: int
    type: str
    name: str
    asset_class: str = "stocks"
    data_types: list[str] = ["trade"]
    legacy: bool | None = None
    update_rules: UpdateRules | None = None
    """Left out for conditions that only flag a state: they restrict nothing."""


class Conditions(PolygonList[Condition]):
    pass


@router.get(
    "/v3/reference/conditions", response_model=Conditions, response_model_exclude_none=True,
    responses=polygon_refusals(400),
)  # fmt: skip
async def conditions(
    request: Request,
    pool: Pool,
    asset_class: str | None = None,
    data_type: str | None = None,
    id: Annotated[int | None, Query(ge=0, le=32767)] = None,
    order: Literal["asc", "desc"] = "asc",
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    sort: Literal["id", "name"] = "id",
    cursor: Annotated[int | None, Query(ge=0, description="From `next_url`.")] = None,
) -> Conditions:
    """The stock trade conditions this platform knows, with the consolidated update rules its
    candles follow (docs/design.md §5), in Polygon's shape. Trades are the only data type and
    stocks the only asset class here: other values list nothing."""
    rows: list[tuple[Any, ...]] = []
    if asset_class in (None, "stocks") and data_type in (None, "trade"):
        key = sql.Identifier(sort)
        statement = sql.SQL(
            "SELECT id, type, name, updates_high_low, updates_open_close, updates_volume, legacy"
            " FROM trade_conditions WHERE (%(id)s::int IS NULL OR id = %(id)s)"
            " ORDER BY {key} {order}, id {order} OFFSET %(offset)s LIMIT %(limit)s"
        ).format(key=key, order=sql.SQL(order.upper()))
        async with pool.connection() as conn:
            params = {"id": id, "offset": cursor or 0, "limit": limit + 1}
            rows = await (await conn.execute(statement, params)).fetchall()
    more, rows = len(rows) > limit, rows[:limit]
    results = [
        Condition(
            id=code, type=kind, name=name, legacy=True if legacy else None,
            update_rules=None if high_low is None else UpdateRules(
                consolidated=ConsolidatedRules(
                    updates_high_low=high_low, updates_open_close=open_close,
                    updates_volume=volume,
                )
            ),
        )
        for code, kind, name, high_low, open_close, volume, legacy in rows
    ]  # fmt: skip
    page = Conditions(results=results, status="OK", request_id=request_id(), count=len(results))
    if more:
        after = request.url.include_query_params(cursor=(cursor or 0) + limit)
        page.next_url = str(after)
    return page


class Ticker(BaseModel):
    """A registered symbol. Polygon's company fields (name, type, exchange, CIK, FIGI…) are never
    sent: the platform does not know them. `first_trade_utc` and `last_trade_utc` are ours."""

    ticker: str
    market: Literal["stocks"] = "stocks"
    locale: Literal["us"] = "us"
    active: bool = True
    """Always true: the platform accepts trades for every registered symbol."""
    first_trade_utc: datetime | None = None
    """The earliest promoted trade's time (absent before the first)."""
    last_trade_utc: datetime | None = None
    """The latest promoted trade's time (absent before the first)."""


class Tickers(PolygonList[Ticker]):
    pass


class TickerDetails(BaseModel):
    results: Ticker
    status: str
    request_id: str


def _ticker(symbol: str, first: datetime | None, last: datetime | None) -> Ticker:
    return Ticker(
        ticker=symbol,
        first_trade_utc=first.astimezone(UTC) if first else None,
        last_trade_utc=last.astimezone(UTC) if last else None,
    )


@router.get(
    "/v3/reference/tickers",
    response_model=Tickers,
    response_model_exclude_none=True,
    responses=polygon_refusals(400),
)
async def list_tickers(
    request: Request,
    pool: Pool,
    ticker: str | None = None,
    ticker_lt: Annotated[str | None, Query(alias="ticker.lt")] = None,
    ticker_lte: Annotated[str | None, Query(alias="ticker.lte")] = None,
    ticker_gt: Annotated[str | None, Query(alias="ticker.gt")] = None,
    ticker_gte: Annotated[str | None, Query(alias="ticker.gte")] = None,
    type: str | None = None,
    market: str | None = None,
    exchange: str | None = None,
    cusip: str | None = None,
    cik: str | None = None,
    date: str | None = None,
    search: str | None = None,
    active: bool = True,
    order: Literal["asc", "desc"] = "asc",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    sort: Literal["ticker"] = "ticker",
    cursor: Annotated[str | None, Query(description="From `next_url`.")] = None,
) -> Tickers:
    """The registered symbols as Polygon lists tickers, in byte order of the symbol: every one
    is an active US stock here. `ticker` and its `.lt/.lte/.gt/.gte` bounds filter, `search`
    matches part of the symbol (case-insensitive). A filter on what the platform does not know
    (`type`, `exchange`, `cusip`, `cik`), a market other than `stocks` or `active=false` lists
    nothing; `date` is accepted and ignored (no history of the symbol list is kept)."""
    rows: list[tuple[Any, ...]] = []
    unknowable = any(f is not None for f in (type, exchange, cusip, cik))
    if active and market in (None, "stocks") and not unknowable:
        forward = order == "asc"
        statement = sql.SQL(query("tickers_page")).format(
            order=sql.SQL("ASC" if forward else "DESC"), beyond=sql.SQL(">" if forward else "<")
        )
        bounds = {"gte": ticker_gte, "gt": ticker_gt, "lte": ticker_lte, "lt": ticker_lt}
        params = {"after": cursor, "exact": ticker, **bounds, "search": search, "limit": limit + 1}
        if any(isinstance(v, str) and "\x00" in v for v in params.values()):
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST, "a ticker filter cannot hold a NUL character"
            )
        async with pool.connection() as conn:
            rows = await (await conn.execute(statement, params)).fetchall()
    more, rows = len(rows) > limit, rows[:limit]
    page = Tickers(
        results=[_ticker(*row) for row in rows],
        status="OK",
        request_id=request_id(),
        count=len(rows),
    )
    if more:
        page.next_url = str(request.url.include_query_params(cursor=rows[-1][0]))
    return page


@router.get(
    "/v3/reference/tickers/{ticker}",
    response_model=TickerDetails,
    response_model_exclude_none=True,
    responses=polygon_refusals(400, 404),
)
async def ticker_details(
    pool: Pool, registry: Registry, ticker: PathSymbol, date: str | None = None
) -> TickerDetails:
    """One registered symbol, as in the list; an unknown one is a 404 (`NOT_FOUND`). `date` is
    accepted and ignored."""
    await known_symbol(registry, ticker)
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT symbol, first_trade_at, last_trade_at FROM symbols WHERE symbol = %s",
                (ticker,),
            )
        ).fetchone()
    if row is None:  # unregistered since the registry read it
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown symbol {ticker!r}")
    return TickerDetails(results=_ticker(*row), status="OK", request_id=request_id())


MarketState = Literal["open", "extended-hours", "closed"]
STATE: dict[Session, MarketState] = {
    "regular": "open",
    "early": "extended-hours",
    "late": "extended-hours",
    "closed": "closed",
}


class Exchanges(BaseModel):
    """The U.S. exchanges that keep the configured calendar (NYSE's, which Nasdaq shares)."""

    nyse: MarketState
    nasdaq: MarketState


class Currencies(BaseModel):
    crypto: Literal["open"] = "open"
    """Crypto trades around the clock. (`fx` is left out: no forex calendar is kept.)"""


class MarketStatus(BaseModel):
    market: MarketState
    earlyHours: bool
    """In extended hours before the regular session."""
    afterHours: bool
    """In extended hours after the regular session."""
    serverTime: str
    """Now, RFC 3339 in the market's zone (MARKET_TIMEZONE)."""
    exchanges: Exchanges
    currencies: Currencies


@router.get("/v1/marketstatus/now", responses=polygon_refusals())
async def market_status(pool: Pool, settings: AppSettings) -> MarketStatus:
    """The stock market's session now, from the trading calendar (`market_hours`: the ordinary
    weekday's sessions; `market_holidays`: holidays and early closes; clock times in
    MARKET_TIMEZONE; weekends closed), as Polygon reports it: `open` in the regular session,
    `extended-hours` before and after it, else `closed`. Crypto is always open."""
    zone = settings.market_zone
    now = datetime.now(UTC)
    async with pool.connection() as conn:
        cursor = await conn.execute(query("market_day"), {"day": now.astimezone(zone).date()})
        row = await cursor.fetchone()
    assert row is not None  # market_hours has its one row from the migration on
    hours = TradingHours(*row[:4])
    name, close_at, late_close_at = row[4:]
    special = None if name is None else SpecialDay(name, close_at, late_close_at)
    session = session_at(now, zone, hours, special)
    state = STATE[session]
    return MarketStatus(
        market=state,
        earlyHours=session == "early",
        afterHours=session == "late",
        serverTime=now.astimezone(zone).isoformat(timespec="seconds"),
        exchanges=Exchanges(nyse=state, nasdaq=state),
        currencies=Currencies(),
    )
