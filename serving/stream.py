"""The events of `/stream` and `/ws`: accepted trades and candle changes, read from the tables in
order after a cursor, so a reader that resumes from a Last-Event-ID gets exactly what it missed.
Readers are woken by the process's LISTEN connection (`serving.listener`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from core.db import query
from serving.listener import StreamHub

log = logging.getLogger(__name__)

BATCH = 2000  # trades looked at, and candle changes, per read (sql/queries/stream_events.sql)
HEARTBEAT_SECONDS = 15.0
COALESCE_SECONDS = 0.05  # readers wake at most this often under a busy feed

# Where a new reader starts: after everything committed so far.
HEADS = """
SELECT greatest(coalesce((SELECT max(seq) FROM trade_inbox), 0),
                coalesce((SELECT max(seq) FROM trades), 0)),
       coalesce((SELECT max(id) FROM candle_updates), 0)
"""


@dataclass(frozen=True)
class Event:
    kind: str  # trade | candle
    symbol: str
    data: str  # JSON
    cursor: tuple[int, int]  # (trade seq, candle change id) up to and including this event

    @property
    def id(self) -> str:
        """The event's id, `<trade seq>.<candle change id>`: a reader resumes after it."""
        return f"{self.cursor[0]}.{self.cursor[1]}"


async def heads(pool: AsyncConnectionPool) -> tuple[int, int]:
    async with pool.connection() as conn:
        row = await (await conn.execute(HEADS)).fetchone()
    assert row is not None
    return row[0], row[1]


@dataclass(frozen=True)
class Read:
    events: list[Event]
    cursor: tuple[int, int]  # where the next read starts (past resends looked at, too)
    more: bool  # a full batch: more may be waiting


async def read_events(
    pool: AsyncConnectionPool,
    cursor: tuple[int, int],
    symbols: list[str] | None,
    kinds: set[str],
) -> Read:
    """The accepted trades and candle changes after `cursor`, in order, a batch of each."""
    after_trade, after_candle = cursor
    params: dict[str, Any] = {
        "symbols": symbols,
        "want_trades": "trade" in kinds,
        "want_candles": "candle" in kinds,
        "after_trade": after_trade,
        "after_candle": after_candle,
        "batch": BATCH,
    }
    async with pool.connection() as conn:
        rows = await (await conn.execute(query("stream_events"), params)).fetchall()
    (_, scanned_through, _, scanned), *rows = rows
    events = []
    candles = 0
    for kind, event_id, symbol, data in rows:
        if kind == "trade":
            after_trade = event_id
        else:
            after_trade = scanned_through or after_trade
            after_candle = event_id
            candles += 1
        events.append(Event(kind, symbol, data, (after_trade, after_candle)))
    more = int(scanned) == BATCH or candles == BATCH
    return Read(events, (scanned_through or after_trade, after_candle), more)


async def follow_events(
    pool: AsyncConnectionPool,
    hub: StreamHub,
    cursor: tuple[int, int],
    symbols: list[str] | None,
    kinds: set[str],
) -> AsyncIterator[list[Event]]:
    """The accepted trades and candle changes after `cursor`, in order, a read at a time, for as
    long as the caller iterates; each read waits for a commit (or HEARTBEAT_SECONDS: an empty
    list, to keep the connection alive)."""
    while True:
        generation = hub.generation()
        read = await read_events(pool, cursor, symbols, kinds)
        read_at = time.monotonic()
        cursor = read.cursor
        yield read.events
        if not read.more:
            await hub.wait(generation, HEARTBEAT_SECONDS)
            # Under a busy feed, read at most every COALESCE_SECONDS; an idle reader at once.
            await asyncio.sleep(max(0.0, COALESCE_SECONDS - (time.monotonic() - read_at)))
