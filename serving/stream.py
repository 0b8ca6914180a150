"""Live fan-out across API processes: one `LISTEN mdp_stream` connection per process wakes every
/stream reader of that process when trades or candle changes commit (PostgreSQL NOTIFY, no
broker). The events themselves are read from the tables, so a reader that resumes from a
Last-Event-ID gets exactly what it missed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from core.db import libpq_url, query

log = logging.getLogger(__name__)

CHANNEL = "mdp_stream"
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


class StreamHub:
    def __init__(self, database_url: str) -> None:
        self._url = libpq_url(database_url)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listening = False
        self._changes = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="stream-listener")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def generation(self) -> asyncio.Event:
        """Take this before reading events; `wait` on it returns at once if something committed
        since."""
        return self._wake

    async def wait(self, generation: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await generation.wait()

    @property
    def changes(self) -> int | None:
        """How many commits this process has heard of so far (None while it cannot hear them):
        while the count stays the same, nothing committed since. This process's own commits
        count once they are done (`committed`); another process's once its notification
        arrives, normally within milliseconds."""
        return self._changes if self._listening else None

    def committed(self) -> None:
        """This process committed a change: count it now, without waiting for its notification
        (a read that follows the write sees it)."""
        self._notify()

    def _notify(self) -> None:
        self._changes += 1
        woken, self._wake = self._wake, asyncio.Event()
        woken.set()

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, connect_timeout=3
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._listening = True
                    self._notify()  # whatever committed while we were not listening
                    async for _ in conn.notifies():
                        self._notify()
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self._listening = False
                log.warning("stream listener lost the database (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)
