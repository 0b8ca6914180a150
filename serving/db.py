"""The API's connection pool to the market database."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
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


def _pool(request: Request) -> AsyncConnectionPool:
    pool: AsyncConnectionPool = request.app.state.pool
    return pool


Pool = Annotated[AsyncConnectionPool, Depends(_pool)]
