"""What request handlers take from the app, typed: the objects that live for the app's lifespan
(`Services`), the dependencies that hand them out, as FastAPI's project template has them
(`Pool = Annotated[AsyncConnectionPool, Depends(...)]`), and the checks routers share.

Dependencies are coroutines: FastAPI runs a plain function in its thread pool, a thread hop on
every request."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, status
from psycopg_pool import AsyncConnectionPool

from core.config import Settings
from core.ticks import EARLIEST
from serving.bodies import InflightBytes
from serving.candle_cache import CandleCache
from serving.errors import refusals
from serving.fanout import Fanout
from serving.inbox import InboxWriter
from serving.latest_candles import LatestCandles
from serving.listener import StreamHub
from serving.stream import EventFeed
from serving.symbols import SymbolRegistry

LATEST = datetime.max.replace(tzinfo=UTC)
T = TypeVar("T")


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


def _part(pick: Callable[[Services], T]) -> Callable[[Request], Coroutine[Any, Any, T]]:
    """A dependency handing out what `pick` takes from the app's `Services`."""

    async def dependency(request: Request) -> T:
        return pick(services(request.app))

    return dependency


App = Annotated[Services, Depends(_part(lambda s: s))]
AppSettings = Annotated[Settings, Depends(_part(lambda s: s.settings))]
Pool = Annotated[AsyncConnectionPool, Depends(_part(lambda s: s.pool))]
Inbox = Annotated[InboxWriter, Depends(_part(lambda s: s.inbox))]
Registry = Annotated[SymbolRegistry, Depends(_part(lambda s: s.symbols))]
Stream = Annotated[StreamHub, Depends(_part(lambda s: s.stream))]
Feed = Annotated[EventFeed, Depends(_part(lambda s: s.feed))]
Cache = Annotated[CandleCache, Depends(_part(lambda s: s.candle_cache))]
Latest = Annotated[LatestCandles, Depends(_part(lambda s: s.latest_candles))]

# The examples are a symbol registered by default (core.config.DEFAULT_SYMBOLS).
PathSymbol = Annotated[str, Path(examples=["AAPL"])]
QuerySymbol = Annotated[str, Query(examples=["AAPL"])]
SYMBOL_READ = refusals(404, 422, 503)  # what a read about one symbol can refuse


async def known_symbol(registry: SymbolRegistry, symbol: str) -> str:
    """`symbol` when it is registered (asking the database once more if the cache does not know
    it: it may be new); a 404 otherwise."""
    if symbol not in registry.symbols:
        await registry.refresh([symbol])
        if symbol not in registry.symbols:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown symbol {symbol!r}")
    return symbol


async def known_symbols(registry: SymbolRegistry, names: list[str]) -> list[str]:
    """`names` when every one is registered (asking the database once more if the cache does not
    know them all); a 404 naming the others otherwise."""
    if unknown := [name for name in names if name not in registry.symbols]:
        await registry.refresh(unknown)
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
