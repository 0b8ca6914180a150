"""The API's connection pool and what it means for a request when the database is away."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from mdp.database import libpq_url


def make_pool(database_url: str) -> AsyncConnectionPool:
    # Closed until the lifespan opens it without waiting: the API starts (and answers 503) while
    # the database is down, and the pool reconnects by itself when it returns.
    return AsyncConnectionPool(
        libpq_url(database_url),
        min_size=2,
        max_size=8,
        timeout=3.0,
        reconnect_timeout=float("inf"),
        check=AsyncConnectionPool.check_connection,
        kwargs={"autocommit": True, "connect_timeout": 3},
        open=False,
        name="market",
    )


async def connection(request: Request) -> AsyncIterator[AsyncConnection]:
    pool: AsyncConnectionPool = request.app.state.pool
    async with pool.connection() as conn:
        yield conn


Conn = Annotated[AsyncConnection, Depends(connection)]


async def ping(pool: AsyncConnectionPool) -> float:
    """Round-trip `SELECT 1`; returns the latency in milliseconds."""
    started = time.perf_counter()
    async with pool.connection() as conn:
        await conn.execute("SELECT 1")
    return (time.perf_counter() - started) * 1000
