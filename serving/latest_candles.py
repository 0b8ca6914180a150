"""Every symbol's latest candle, per interval, from memory: what `GET /candles/latest` (a
screener's poll) serves.

The latest candles change only with a commit: an accepted trade (pending ones count, as in
`/candles`), a micro-batch, a cancel, a recomputed day. So each API process reads them all in one
statement (`sql/queries/latest_candles.sql`) and keeps them with what its LISTEN hub had heard
then (`serving/listener.py`): while the hub has heard nothing new, the answer comes from memory
without a connection being taken. Its own acknowledged trades count at once, another process's
as soon as their NOTIFY arrives; while the hub cannot hear, every poll reads. `is_final` depends
on the clock too (a bucket closes), so it is worked out at each answer from what was read
(docs/design.md §5).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime

import msgspec
from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool

from core.db import query
from core.intervals import INTERVALS
from serving.candle_cache import Candle
from serving.listener import Heard, StreamHub

READS = Counter(
    "mdp_latest_candles_reads",
    "/candles/latest answers: from memory (nothing committed since the last read) or after a "
    "read from the database.",
    ["source"],
)


class _Kept(msgspec.Struct):
    symbol: str
    candle: Candle  # is_final as read: worked out again at each answer
    pending: bool  # trades still pending in its bucket
    ends: datetime  # when its bucket ends


class LatestCandles:
    def __init__(self, pool: AsyncConnectionPool, hub: StreamHub) -> None:
        self._pool = pool
        self._hub = hub
        self._kept: dict[str, tuple[Heard, list[_Kept]]] = {}  # by interval
        self._lock = asyncio.Lock()  # one read at a time: a crowd of polls shares it

    async def of(
        self, interval: str, symbols: Iterable[str] | None, now: datetime
    ) -> list[tuple[str, Candle]]:
        """The latest `interval` candle of each of `symbols` (every symbol when None) that has
        one, by symbol, final when its bucket ended before `now` with nothing pending in it."""
        kept = self._fresh(interval)
        if kept is None:
            async with self._lock:
                kept = self._fresh(interval)
                if kept is None:
                    kept = await self._read(interval)
        wanted = None if symbols is None else set(symbols)
        return [
            (
                row.symbol,
                msgspec.structs.replace(row.candle, is_final=not row.pending and row.ends <= now),
            )
            for row in kept
            if wanted is None or row.symbol in wanted
        ]

    def _fresh(self, interval: str) -> list[_Kept] | None:
        """The candles kept for `interval` if nothing was committed since they were read."""
        heard = self._hub.changes
        kept = self._kept.get(interval)
        if heard is None or kept is None or kept[0] != heard:
            return None
        READS.labels("memory").inc()
        return kept[1]

    async def _read(self, interval: str) -> list[_Kept]:
        heard = self._hub.changes  # before the read: a commit during it makes the next poll read
        params = {"interval": interval, "width": INTERVALS[interval]}
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(query("latest_candles"), params)).fetchall()
        READS.labels("database").inc()
        kept = [
            _Kept(symbol, Candle(*candle), pending, ends) for symbol, *candle, pending, ends in rows
        ]
        if heard is not None:
            self._kept[interval] = (heard, kept)
        return kept
