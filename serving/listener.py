"""Live fan-out across API processes: one `LISTEN mdp_stream` connection per process hears every
commit of trades or candle changes (PostgreSQL NOTIFY, no broker), wakes the process's stream
readers and tells its candle cache that something changed."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg

from core.db import libpq_url

log = logging.getLogger(__name__)

CHANNEL = "mdp_stream"


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
