"""Candle reads: `/candles` (one symbol, or several in one request; empty buckets filled on
request), `/candles/latest` (every symbol's current bar, a screener's poll, from memory) and
`/candles/trades` (the trades that made one bar). Candles are live: materialized buckets merged
with trades accepted moments ago."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from psycopg import AsyncConnection
from pydantic import BaseModel, create_model

from core.db import query
from core.intervals import (
    EPOCH,
    INTERVALS,
    Interval,
    bucket_starts,
    day_window,
    days_are_utc,
    market_date,
)
from core.ticks import EARLIEST
from serving.auth import ReadAuth
from serving.candle_cache import Candle as CacheCandle
from serving.candle_cache import Page
from serving.candle_fill import Fill, fill_gaps, label
from serving.deps import (
    SYMBOL_READ,
    AppSettings,
    Cache,
    Latest,
    Pool,
    QuerySymbol,
    Registry,
    Stream,
    known_symbol,
    known_symbols,
    shifted,
    utc,
)
from serving.errors import refusals
from serving.symbols import SymbolRegistry

router = APIRouter(tags=["market data"], dependencies=[ReadAuth], responses=refusals(401))
ARROW_STREAM = "application/vnd.apache.arrow.stream"
MICROSECOND = timedelta(microseconds=1)
FIRST_SEQ = -(2**63)

MAX_SYMBOLS = 100  # in one /candles request
MAX_PAGE_CANDLES = 100_000  # limit times symbols: what one page may hold at most


def _documented(
    struct: type[msgspec.Struct], name: str, without: tuple[str, ...] = (), **types: Any
) -> Any:
    """The pydantic model of `struct` for the OpenAPI document (responses are encoded from the
    struct by msgspec): its fields in its order but those `without`, `types` replacing a field's
    type or adding a field at the end."""
    fields: dict[str, Any] = {
        f.name: (types.pop(f.name, f.type), ... if f.required else f.default)
        for f in msgspec.structs.fields(struct)
        if f.name not in without
    }
    fields |= {field: (kind, ...) for field, kind in types.items()}
    return create_model(name, **fields)


# The candles `/candles` and `/candles/latest` send, as the cache's msgspec struct encodes them;
# the document shows `bucket_start` as the RFC 3339 time it is. Typed Any: mypy takes no class
# made at run time for a type.
Candle: Any = _documented(CacheCandle, "Candle", bucket_start=datetime)
LatestCandle: Any = _documented(
    CacheCandle, "LatestCandle", without=("filled",), bucket_start=datetime, symbol=str
)


class CandlesPage(BaseModel):
    """The answer for `symbol=`."""

    symbol: str
    interval: Interval
    candles: list[Candle]
    next_page_token: str | None


class SymbolCandles(BaseModel):
    symbol: str
    candles: list[Candle]


class SymbolsCandlesPage(BaseModel):
    """The answer for `symbols=`: each symbol asked, in the order asked, with its candles of the
    page (all of them cover the same buckets: [start, the token's bucket])."""

    interval: Interval
    results: list[SymbolCandles]
    next_page_token: str | None


class LatestCandles(BaseModel):
    interval: Interval
    candles: list[LatestCandle]
    """Each symbol's latest candle (the latest bucket holding one), by symbol; a symbol without
    any candle of this interval is left out."""


_encode = msgspec.json.Encoder().encode
Rows = dict[str, list[CacheCandle]]  # each symbol's candles of a page, in the order asked


@router.get(
    "/candles",
    response_model=CandlesPage | SymbolsCandlesPage,
    responses={
        200: {
            "description": "The page as JSON (for `symbol=`, or `results` by symbol for "
            "`symbols=`), or as an Arrow IPC stream (one record batch, with a `symbol` column for "
            "`symbols=` and a `filled` one for `fill`; the next page token in the "
            f"`Next-Page-Token` header) when the Accept header asks for `{ARROW_STREAM}`",
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
    settings: AppSettings,
    symbol: Annotated[
        str | None, Query(examples=["AAPL"], description="One symbol (or `symbols`)")
    ] = None,
    symbols: Annotated[
        str | None,
        Query(
            examples=["AAPL,MSFT"],
            description=f"Several symbols, comma-separated, at most {MAX_SYMBOLS} (or `symbol`)",
        ),
    ] = None,
    interval: Interval = "1m",
    start: datetime | None = None,
    end: datetime | None = None,
    limit: Annotated[
        int,
        Query(
            ge=1,
            le=10_000,
            description="Candles per symbol in a page (with `fill`: buckets, filled or not); "
            f"with `symbols`, limit times the number of symbols at most {MAX_PAGE_CANDLES:,}",
        ),
    ] = 1000,
    page_token: str | None = None,
    fill: Annotated[
        Fill,
        Query(
            description="Add the empty buckets of the page, flagged `filled: true`: `previous` "
            "repeats the last close before them as open, high, low and close; `null` leaves the "
            "prices null; either with volume 0, trade_count 0, vwap null (and null prices while "
            "no earlier close is known)"
        ),
    ] = "none",
) -> Response:
    """OHLCV candles with `bucket_start` in [start, end), oldest first (defaults: the last day).
    The bucket still filling, and any bucket with trades accepted but not yet materialized,
    comes merged with those trades and `is_final: false`. Every page of several symbols covers
    the same buckets for all of them."""
    names = await _symbols_asked(registry, symbol, symbols, limit)
    end = utc(end, "end") if end else datetime.now(UTC)
    start = utc(start, "start") if start else shifted(end, -timedelta(days=1))
    if start > end:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "start is after end")
    if page_token:
        start = max(start, shifted(_issued(page_token), MICROSECOND))
    arrow = ARROW_STREAM in request.headers.get("accept", "")
    if symbol is not None and fill == "none" and not arrow:
        # The common read, served as the cache keeps it: each candle's JSON as it is.
        page = await cache.page(symbol, interval, start, end, limit, stream.changes)
        if page is None:  # read directly: late trades pending in the range, or a long range
            rows, last = await _read(pool, names, interval, start, end, limit)
            page = _page(rows[symbol], last)
        return Response(page.body(symbol, interval), media_type="application/json")
    if fill == "none":
        rows, last = await _read(pool, names, interval, start, end, limit)
    else:
        zone = settings.market_zone
        rows, last = await _filled(pool, names, interval, start, end, limit, fill, zone)
    if arrow:
        headers = {"Next-Page-Token": last} if last else None
        body = _arrow(rows, symbols is not None, fill != "none")
        return Response(body, media_type=ARROW_STREAM, headers=headers)
    if symbol is not None:
        return Response(
            _page(rows[symbol], last).body(symbol, interval), media_type="application/json"
        )
    results = [{"symbol": name, "candles": found} for name, found in rows.items()]
    document = {"interval": interval, "results": results, "next_page_token": last}
    return Response(_encode(document), media_type="application/json")


async def _symbols_asked(
    registry: SymbolRegistry, symbol: str | None, symbols: str | None, limit: int
) -> list[str]:
    """The symbols a `/candles` request asks for, each registered (404 naming the others)."""
    if (symbol is None) == (symbols is None):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "give either symbol or symbols (not both)"
        )
    if symbol is not None:
        return [await known_symbol(registry, symbol)]
    names = list(dict.fromkeys((symbols or "").split(",")))
    if "" in names:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "symbols is a comma-separated list of symbols, and one of them is empty",
        )
    if len(names) > MAX_SYMBOLS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"symbols names {len(names)} symbols; at most {MAX_SYMBOLS} in one request",
        )
    if len(names) * limit > MAX_PAGE_CANDLES:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"limit times the number of symbols is {len(names) * limit:,}; a page holds at most "
            f"{MAX_PAGE_CANDLES:,} candles: ask a smaller limit or fewer symbols",
        )
    return await known_symbols(registry, names)


def _issued(page_token: str) -> datetime:
    """The last bucket of the page that gave `page_token`: the next page starts after it."""
    try:
        return utc(datetime.fromisoformat(page_token), "page_token")
    except ValueError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "page_token is not one we issued"
        ) from exc


async def _read(
    pool: Pool, names: list[str], interval: str, start: datetime, end: datetime, limit: int
) -> tuple[Rows, str | None]:
    """The symbols' candles in [start, end) up to the page's last bucket, and that bucket's start
    when another page follows: the earliest bucket by which one of the symbols has `limit`
    candles, so that each has at most `limit` and every one covers the same buckets."""
    async with pool.connection() as conn:
        rows = await _candles(conn, names, interval, start, end, limit)
    over = [found[limit - 1].bucket_start for found in rows.values() if len(found) > limit]
    if not over:
        return rows, None
    last = min(over)
    return {
        name: [c for c in found if c.bucket_start <= last] for name, found in rows.items()
    }, last


async def _filled(
    pool: Pool,
    names: list[str],
    interval: str,
    start: datetime,
    end: datetime,
    limit: int,
    fill: Fill,
    zone: tzinfo,
) -> tuple[Rows, str | None]:
    """The page of `limit` buckets from `start`, every one of them for every symbol: the candles
    read, the empty buckets filled (`serving/candle_fill.py`); the last bucket's start when
    another page follows."""
    starts = bucket_starts(interval, start, end, zone, limit + 1)
    page_end = starts[limit] if len(starts) > limit else end
    starts = starts[:limit]
    async with pool.connection() as conn:
        rows = await _candles(conn, names, interval, start, page_end, limit)
        closes = await _prior_closes(conn, names, interval, start) if fill == "previous" else {}
    now = datetime.now(UTC)
    filled = {
        name: fill_gaps(found, starts, fill, closes.get(name), interval, zone, now)
        for name, found in rows.items()
    }
    return filled, label(starts[-1]) if page_end < end else None


async def _candles(
    conn: AsyncConnection[Any],
    names: list[str],
    interval: str,
    start: datetime,
    end: datetime,
    limit: int,
) -> Rows:
    """Each symbol's live candles from `start`, at most `limit` + 1, in one statement
    (`sql/queries/candles_of_symbols.sql`)."""
    params = {
        "symbols": names,
        "interval": interval,
        "width": INTERVALS[interval],
        "start": start,
        "end": end,
        "limit": limit,
    }
    # Binary rows and msgspec: a day of 1m bars is served several times faster than by
    # validating models or by building the JSON in PostgreSQL.
    async with conn.cursor(binary=True) as cur:
        found = await (await cur.execute(query("candles_of_symbols"), params)).fetchall()
    rows: Rows = {name: [] for name in names}
    for name, *candle in found:
        rows[name].append(CacheCandle(*candle))
    return rows


async def _prior_closes(
    conn: AsyncConnection[Any], names: list[str], interval: str, start: datetime
) -> dict[str, float | None]:
    """Each symbol's last close before `start` (`sql/queries/prior_closes.sql`)."""
    params = {"symbols": names, "interval": interval, "width": INTERVALS[interval], "start": start}
    found = await (await conn.execute(query("prior_closes"), params)).fetchall()
    return dict(found)


def _page(rows: list[CacheCandle], last: str | None) -> Page:
    return Page([_encode(candle) for candle in rows], last)


def _arrow(rows: Rows, by_symbol: bool, filled: bool) -> bytes:
    """Candles as an Arrow IPC stream: a column per JSON field (and `symbol` first when several
    were asked for), bucket_start a UTC timestamp. Polars is imported here, for the bulk readers
    who ask for it."""
    import polars as pl

    schema: dict[str, Any] = {
        "symbol": pl.String,
        "bucket_start": pl.String,
        **dict.fromkeys(("open", "high", "low", "close", "volume", "vwap"), pl.Float64),
        "trade_count": pl.Int64,
        "revision": pl.Int32,
        "is_final": pl.Boolean,
        "filled": pl.Boolean,
    }
    frame = pl.DataFrame(
        [(name, *msgspec.structs.astuple(c)) for name, found in rows.items() for c in found],
        schema=schema,
        orient="row",
    ).with_columns(pl.col("bucket_start").str.to_datetime(time_zone="UTC", time_unit="us"))
    dropped = [column for column, kept in (("symbol", by_symbol), ("filled", filled)) if not kept]
    stream = io.BytesIO()
    frame.drop(dropped).write_ipc_stream(stream)
    return stream.getvalue()


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


@router.get("/candles/latest", response_model=LatestCandles, responses=refusals(404, 422, 503))
async def latest_candles(
    registry: Registry,
    latest: Latest,
    interval: Interval = "1m",
    symbols: Annotated[
        str | None,
        Query(examples=["AAPL,MSFT"], description="Only these symbols, comma-separated"),
    ] = None,
) -> Response:
    """Every symbol's current bar, for a screener's poll: its latest `interval` candle, pending
    trades included (an acknowledged trade shows at once), `is_final` once its bucket has closed
    with nothing pending. Answered from memory while nothing was committed since the last read."""
    names = None
    if symbols is not None:
        names = await known_symbols(registry, list(dict.fromkeys(symbols.split(","))))
    found = await latest.of(interval, names, datetime.now(UTC))
    head = _encode({"interval": interval})[:-1]
    # Each candle's JSON with its symbol first: {"symbol":…,"bucket_start":…}.
    candles = (b'{"symbol":' + _encode(name) + b"," + _encode(c)[1:] for name, c in found)
    body = b"".join((head, b',"candles":[', b",".join(candles), b"]}"))
    return Response(body, media_type="application/json")
