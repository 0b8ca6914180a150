"""The FastAPI application: settings, the pool and the inbox writer live for the app's lifespan."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from core.config import Settings, get_settings
from core.db import migration_ids
from serving.bodies import InflightBytes
from serving.candle_cache import CandleCache
from serving.db import make_pool
from serving.deps import Services, services
from serving.errors import DATABASE_UNAVAILABLE, install_error_handlers
from serving.fanout import Fanout
from serving.inbox import InboxWriter
from serving.latest_candles import LatestCandles
from serving.listener import StreamHub
from serving.metrics import RequestMetrics
from serving.routers import (
    candles,
    dashboard,
    health,
    ingest,
    market,
    ops,
    polygon,
    reference,
    snapshots,
    stocks,
    stream,
    trades,
)
from serving.stream import EventFeed
from serving.symbols import SymbolRegistry

log = logging.getLogger(__name__)

GC_YOUNG_ALLOCATIONS = 20_000  # allocations between collections of the youngest generation


class MissingCredentials(RuntimeError):
    pass


def check_credentials(settings: Settings) -> None:
    if settings.dev_no_auth:
        log.warning("MDP_DEV_NO_AUTH is set: ingest accepts unauthenticated requests")
        return
    if not settings.ingest_username or not settings.ingest_password:
        raise MissingCredentials(
            "INGEST_USERNAME and INGEST_PASSWORD must be set "
            "(or MDP_DEV_NO_AUTH=1 for an unauthenticated development server)"
        )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    shared = services(app)
    await shared.pool.open(wait=False)
    await shared.inbox.open()
    shared.stream.start()
    with suppress(*DATABASE_UNAVAILABLE):
        await shared.symbols.refresh()
    # A server of long-lived connections allocates fast and keeps little: collected every 700
    # allocations (Python's default), whatever lives a few milliseconds (an event on its way, a
    # request) reached the oldest generation, whose full collections paused a crowd's API for
    # 230 ms every 12 s (ack p99 192 ms; 75 ms with these settings, mdp bench crowd). What
    # importing and starting made lives as long as the process: no collection walks it again.
    gc.set_threshold(GC_YOUNG_ALLOCATIONS, 10, 10)
    gc.freeze()
    try:
        yield
    finally:
        await shared.fanout.stop()
        await shared.feed.stop()
        await shared.stream.stop()
        await shared.inbox.stop()
        await shared.pool.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    check_credentials(settings)
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL must be set for the API (mdp up sets it for you)")
    # Swagger UI and ReDoc from files shipped with fastapi-offline: /docs works without internet.
    app = FastAPIOffline(
        title="Market Data Platform",
        version="0.1.0",
        summary="Durable trade ingest, OHLCV candles and market-data reads.",
        lifespan=lifespan,
    )
    pool = make_pool(settings.database_url)
    hub = StreamHub(settings.database_url)
    app.state.services = Services(
        settings=settings,
        started_at=datetime.now(UTC),
        pool=pool,
        # Acks never wait for readers: the inbox writer has connections of its own.
        inbox=InboxWriter(make_pool(settings.database_url, writer=True), on_commit=hub.committed),
        ingest_budget=InflightBytes(settings.ingest_max_inflight_bytes),
        symbols=SymbolRegistry(pool),
        stream=hub,
        feed=EventFeed(pool, hub, max_followers=settings.streams_per_process),
        fanout=Fanout(pool, hub),
        candle_cache=CandleCache(pool, market_zone=settings.market_zone),
        latest_candles=LatestCandles(pool, hub),
        expected_migrations=migration_ids(),
    )
    install_error_handlers(app)
    app.include_router(ingest.router)
    app.include_router(market.router)
    app.include_router(candles.router)
    app.include_router(polygon.router)
    app.include_router(trades.router)
    app.include_router(reference.router)
    app.include_router(snapshots.router)
    app.include_router(stocks.router)
    app.include_router(stream.router)
    app.include_router(ops.router)
    app.include_router(dashboard.router)
    app.mount("/dashboard/static", StaticFiles(directory=dashboard.ASSETS), name="dashboard")
    app.include_router(health.router)
    app.add_middleware(RequestMetrics)
    return app
