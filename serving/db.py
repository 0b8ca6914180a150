"""The API's connection pools to the market database: one for reads and streams, and a small one
of the inbox writer's own, so that no number of readers can make an ack wait for a connection."""

from __future__ import annotations

import time
from typing import Any
from weakref import WeakKeyDictionary

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from core.db import libpq_url

CHECK_EVERY_SECONDS = 1.0
_last_checked: WeakKeyDictionary[AsyncConnection[Any], float] = WeakKeyDictionary()


async def _check_now_and_then(conn: AsyncConnection[Any]) -> None:
    """Check a connection handed out by the pool (a round trip) at most once a second: enough to
    find the connections a database restart broke, without a round trip before every query."""
    now = time.monotonic()
    if now - _last_checked.get(conn, float("-inf")) >= CHECK_EVERY_SECONDS:
        await AsyncConnectionPool.check_connection(conn)
        _last_checked[conn] = now


def make_pool(database_url: str, *, writer: bool = False) -> AsyncConnectionPool:
    """Closed until the lifespan opens it without waiting: the API starts (and answers 503) while
    the database is down, and the pool reconnects by itself when it returns. The writer's pool
    holds what the inbox writer uses (one commit at a time) and one to spare."""
    return AsyncConnectionPool(
        libpq_url(database_url),
        min_size=1 if writer else 2,
        max_size=2 if writer else 8,
        timeout=3.0,
        reconnect_timeout=float("inf"),
        check=_check_now_and_then,
        # No JIT: the API's statements are short, and a compilation (300 ms for the stream reader
        # over a large inbox, against 15 ms of execution) is slower than any of them.
        kwargs={"autocommit": True, "connect_timeout": 3, "options": "-c jit=off"},
        open=False,
        name="inbox" if writer else "market",
    )
