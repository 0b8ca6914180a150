"""What request handlers take from the app, typed: the objects that live for the app's lifespan
(`Services`), the dependencies that hand them out, as FastAPI's project template has them
(`Pool = Annotated[AsyncConnectionPool, Depends(...)]`), and the checks routers share.

Dependencies are coroutines: FastAPI runs a plain function in its thread pool, a thread hop on
every request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Path, Request, status
from psycopg_pool import AsyncConnectionPool

from core.config import Settings
from core.ticks import EARLIEST
from serving.bodies import InflightBytes
from serving.candle_cache import CandleCache
from serving.fanout import Fanout
from serving.inbox import InboxWriter
from serving.latest_candles import LatestCandles
from serving.listener import StreamHub
from serving.stream import EventFeed
from serving.symbols import SymbolRegistry

LATEST = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Services:
    """Everything the app holds for its lifespan; `create_app` builds it, handlers take parts."""

    settings: Settings
    started_at: datetime
    pool: AsyncConnectionPool
    inbox: InboxWriter
    ingest_budget: InflightBytes
    symbols: SymbolRegistry
    stream: StreamHub
    feed: EventFeed
    fanout: Fanout
    candle_cache: CandleCache
    latest_candles: LatestCandles
    expected_migrations: list[str]


def services(app: FastAPI) -> Services:
    found: Services = app.state.services
    return found


async def _services(request: Request) -> Services:
    return services(request.app)


async def _settings(request: Request) -> Settings:
    return services(request.app).settings


async def _pool(request: Request) -> AsyncConnectionPool:
    return services(request.app).pool


async def _inbox(request: Request) -> InboxWriter:
    return services(request.app).inbox


async def _symbols(request: Request) -> SymbolRegistry:
    return services(request.app).symbols


async def _stream(request: Request) -> StreamHub:
    return services(request.app).stream


async def _feed(request: Request) -> EventFeed:
    return services(request.app).feed


async def _candle_cache(request: Request) -> CandleCache:
    return services(request.app).candle_cache


async def _latest_candles(request: Request) -> LatestCandles:
    return services(request.app).latest_candles


App = Annotated[Services, Depends(_services)]
AppSettings = Annotated[Settings, Depends(_settings)]
Pool = Annotated[AsyncConnectionPool, Depends(_pool)]
Inbox = Annotated[InboxWriter, Depends(_inbox)]
Registry = Annotated[SymbolRegistry, Depends(_symbols)]
Stream = Annotated[StreamHub, Depends(_stream)]
Feed = Annotated[EventFeed, Depends(_feed)]
Cache = Annotated[CandleCache, Depends(_candle_cache)]
Latest = Annotated[LatestCandles, Depends(_latest_candles)]

PathSymbol = Annotated[str, Path(examples=["AAPL"])]


async def known_symbol(registry: SymbolRegistry, symbol: str) -> str:
    """`symbol` when it is registered (asking the database once more if the cache does not know
    it: it may be new); a 404 otherwise."""
    if symbol not in registry.symbols:
        await registry.refresh()
        if symbol not in registry.symbols:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown symbol {symbol!r}")
    return symbol


async def known_symbols(registry: SymbolRegistry, names: list[str]) -> list[str]:
    """`names` when every one is registered (asking the database once more if the cache does not
    know them all); a 404 naming the others otherwise."""
    if unknown := [name for name in names if name not in registry.symbols]:
        await registry.refresh()
        if unknown := [name for name in unknown if name not in registry.symbols]:
            listed = ", ".join(map(repr, unknown))
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown symbols {listed}")
    return names


def utc(moment: datetime, name: str) -> datetime:
    """A caller's time in UTC; a 422 without a zone offset or outside the years 1 to 9999 in UTC."""
    if moment.tzinfo is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"{name} needs a zone offset (e.g. Z)"
        )
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"{name} is out of range in UTC"
        ) from None


def shifted(moment: datetime, by: timedelta) -> datetime:
    """`moment + by`, held within the years 1 to 9999: a far-out bound stays as far as can be."""
    try:
        return moment + by
    except OverflowError:
        return LATEST if by > timedelta(0) else EARLIEST
