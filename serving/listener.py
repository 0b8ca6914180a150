"""Live fan-out across API processes: one `LISTEN mdp_stream` connection per process hears every
commit of trades or candle changes (PostgreSQL NOTIFY, no broker), wakes the process's stream
readers and tells its candle cache that something changed.

A connection that goes half-open (a network blip, a failover, a proxy's idle timeout) raises
nothing: it just stops hearing. So the listener asks for a round trip every few seconds and
takes a connection that does not answer in time for dead; it then reconnects, and what it tells
the cache names the new connection (`Heard.listener`), so that the cache forgets what it may have
missed meanwhile (docs/design.md §8).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any, NamedTuple

import psycopg

from core.db import STREAM_CHANNEL, libpq_url

log = logging.getLogger(__name__)

# How the listener shows in pg_stat_activity (followed by the process id): what to terminate, or
# to tell apart from the pool's connections.
APPLICATION_NAME = "mdp listener"
PING_EVERY_SECONDS = 3.0
ANSWER_WITHIN_SECONDS = 5  # for the round trip, and for connecting and LISTEN
RECONNECT_AFTER_SECONDS = 1.0


class Heard(NamedTuple):
    """What this process has heard of: `commits` commits so far, the latest on its `listener`-th
    LISTEN connection. While it stays the same, nothing committed since."""

    listener: int
    commits: int


class StreamHub:
    def __init__(self, database_url: str) -> None:
        self._url = libpq_url(database_url)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listening = False
        self._listeners = 0
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
    def changes(self) -> Heard | None:
        """What this process has heard of so far (None while it cannot hear): while it stays the
        same, nothing committed since. This process's own commits count once they are done
        (`committed`); another process's once its notification arrives, normally within
        milliseconds, at worst once a dead connection is found and replaced (seconds)."""
        return Heard(self._listeners, self._changes) if self._listening else None

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
                await self._hear()
            except (psycopg.Error, TimeoutError) as exc:
                reason = str(exc) or type(exc).__name__
                log.warning("stream listener lost the database (%s); reconnecting", reason)
            finally:
                self._listening = False
            await asyncio.sleep(RECONNECT_AFTER_SECONDS)

    async def _hear(self) -> None:
        """Listen on one connection until it fails or stops answering."""
        async with asyncio.timeout(ANSWER_WITHIN_SECONDS):
            conn = await psycopg.AsyncConnection.connect(
                self._url,
                autocommit=True,
                connect_timeout=ANSWER_WITHIN_SECONDS,
                application_name=f"{APPLICATION_NAME} {os.getpid()}",
                # The kernel's checks, on even while the event loop is busy: keepalive probes
                # find a peer gone without a word, the user timeout one that stopped
                # acknowledging what was sent. The round trip finds what they cannot: a path
                # that still acknowledges but no longer delivers (a proxy).
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=3,
                tcp_user_timeout=10_000,  # ms
            )
        async with conn:
            await _answered(conn, f"LISTEN {STREAM_CHANNEL}")
            self._listeners += 1
            self._listening = True
            self._notify()  # whatever committed while we were not listening
            while True:
                async for _ in conn.notifies(timeout=PING_EVERY_SECONDS):
                    self._notify()
                await _answered(conn, "SELECT 1")


async def _answered(conn: psycopg.AsyncConnection[Any], statement: str) -> None:
    """Run `statement`; if no answer comes within ANSWER_WITHIN_SECONDS, close `conn` and raise
    TimeoutError. Closed rather than cancelled: psycopg would answer a cancellation by sending a
    cancel request on a new connection, down the same dead path, and waiting for it."""
    running = asyncio.ensure_future(conn.execute(statement))
    try:
        await asyncio.wait({running}, timeout=ANSWER_WITHIN_SECONDS)
    finally:
        if not running.done():
            await conn.close()  # drops the socket at once, sending nothing that waits
            running.cancel()
            await asyncio.wait({running})
    if running.cancelled():
        raise TimeoutError(f"{statement} unanswered within {ANSWER_WITHIN_SECONDS} s")
    running.result()
