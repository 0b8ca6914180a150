"""Closed candles, encoded once: what `/candles` serves from memory.

A bucket that has closed changes only when a micro-batch merges a late trade into it, an outside
pipeline announces a change (`POST /internal/agg-update`) or its day is recomputed, and all three
are written to the change log `candle_updates`. Each API process keeps the JSON of the closed
candles it served, in blocks of 1,440 buckets per symbol and interval (a UTC day of 1m bars; 1d
bars only when the market's day is UTC's), follows the change log to drop the blocks that changed,
and reads live only the open bucket. A
read whose closed buckets have trades still pending in the inbox (late trades) is not served from
here: those buckets are merged live. The change log and the pending trades are re-read only after
a commit: at once after one of this process, after another's when its NOTIFY arrives; while the
process cannot hear (its LISTEN connection is down), at every read. When it hears again, on a new
connection, it may have missed notifications: every block is dropped and the log read again
before a block is served. Memory is bounded; the least recently used blocks go first. Reads
build blocks concurrently, each on its own connection: a block read while another read followed a
change that touched it is served to its read but not kept.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict, deque
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import msgspec
from prometheus_client import Counter
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from core.db import query
from core.intervals import EPOCH, INTERVALS, LONGEST_MARKET_DAY, days_are_utc
from serving.listener import Heard

BUCKETS_PER_BLOCK = 1440
MAX_BLOCKS_PER_READ = 8  # a longer range is read directly (a year of sparse 1m bars, say)
MAX_STATES = 4096
MICROSECOND = timedelta(microseconds=1)
# Blocks are aligned to the epoch; one reaching before the year 1 is read directly.
FIRST_BLOCK_START = (datetime.min.replace(tzinfo=UTC) - EPOCH) // MICROSECOND

# A change-log row: id, symbol, interval, bucket (epoch µs; None: all), whether a whole day.
_Change = tuple[int, str, str, int | None, bool]
# The changes remembered for the blocks being read while the log moves on; a block read across
# more changes than these is served but not kept.
MAX_CHANGES_REMEMBERED = 10_000

# At most this many changes are read to follow the log; a cache further behind is dropped whole
# (reading a change costs about 2 µs, rebuilding a block a few ms).
MAX_CHANGES_FOLLOWED = 100_000

# The change log's newest and oldest ids, whether trades are pending in the read's closed buckets,
# and the changes after the last one followed (when none of them was pruned, and no more than
# `most`): one statement, so one snapshot. In two, a prune between them would take away changes
# the first had promised.
LOG = """
WITH log AS (SELECT coalesce(max(id), 0) AS newest, min(id) AS oldest FROM candle_updates)
SELECT log.newest, log.oldest,
       EXISTS (SELECT FROM trade_inbox
               WHERE symbol = %(symbol)s AND ts >= %(start)s AND ts < %(closed_end)s),
       changed.id, changed.symbol, changed."interval", changed.bucket, changed.whole_day
FROM log LEFT JOIN LATERAL (
    SELECT id, symbol, "interval", whole_day,
           CASE WHEN isfinite(bucket_start)
                THEN (extract(epoch FROM bucket_start) * 1000000)::int8 END AS bucket
    FROM candle_updates
    -- The bounds are sub-selects so that every value is estimated alike and the statement keeps
    -- its generic plan (a range scan) instead of being planned again at every read.
    WHERE id > (SELECT %(seen)s::int8) AND id <= (SELECT %(seen)s::int8 + %(most)s)
      AND log.oldest <= %(seen)s::int8 + 1 AND log.newest <= %(seen)s::int8 + %(most)s
    OFFSET 0  -- a subquery of its own: the tests of `log` gate the scan, not filter its rows
) changed ON true
ORDER BY changed.id
"""
CLOSED_CANDLES = """
SELECT (extract(epoch FROM bucket_start) * 1000000)::int8,
       to_char(bucket_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
       open, high, low, close, volume, vwap, trade_count, revision,
       true  -- closed, none pending: final
FROM candles
WHERE symbol = %s AND "interval" = %s AND bucket_start >= %s AND bucket_start < %s
ORDER BY bucket_start
"""

READS = Counter(
    "mdp_candle_cache_reads",
    "/candles reads: served from cached blocks (hit), after reading a block (built), or read "
    "directly (direct: late trades pending in the range, or a long range).",
    ["outcome"],
)


class Candle(msgspec.Struct, omit_defaults=True):
    """One candle as `/candles` sends it (field order is the response's), the bucket's bar under
    the sale-condition rules: open and close, high and low are null when none of its trades may
    set them, vwap when none counts in volume. `revision` counts the cancels that restated it.
    `filled` is sent only when gap filling was asked (`serving/candle_fill.py`): true for a bucket
    it added (never stored)."""

    bucket_start: str
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    volume: float
    vwap: float | None
    trade_count: int
    revision: int
    is_final: bool
    filled: bool | None = None


_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class _Window:
    """A read's range in bucket terms, epoch µs: its first bucket, the end of its closed buckets
    (the open bucket's start at the latest), and the blocks these lie in."""

    width: int
    open_start: int
    first: int
    closed_end: int

    @classmethod
    def of(cls, interval: str, start: datetime, end: datetime) -> _Window:
        width = INTERVALS[interval] // MICROSECOND
        open_start = _epoch_us(datetime.now(UTC)) // width * width
        first = -(-_epoch_us(start) // width) * width  # the first bucket starting in range
        closed_end = min(-(-_epoch_us(end) // width) * width, open_start)
        return cls(width, open_start, first, closed_end)

    @property
    def span(self) -> int:
        return self.width * BUCKETS_PER_BLOCK

    @property
    def blocks(self) -> range:
        """The first buckets of the blocks holding the closed buckets of the range."""
        if self.first >= self.closed_end:
            return range(0)
        span = self.span
        return range(self.first // span * span, self.closed_end, span)


@dataclass
class Block:
    """The closed candles of one symbol and interval with bucket_start in [first, until)."""

    first: int  # epoch µs
    until: int
    seen: int  # the change-log id these candles are exact as of (or later)
    starts: list[int]  # each candle's bucket_start, epoch µs, ascending
    encoded: list[bytes]  # each candle's JSON
    size: int


@dataclass
class Page:
    candles: list[bytes]  # each candle's JSON
    last_start: str | None  # the bucket_start of the last candle, when another page follows

    def body(self, symbol: str, interval: str) -> bytes:
        """The `/candles` response document, from the candles' JSON as it is."""
        head = _encode({"symbol": symbol, "interval": interval})[:-1]
        return b"".join(
            (head, b',"candles":[', b",".join(self.candles), b'],"next_page_token":',
             _encode(self.last_start), b"}")
        )  # fmt: skip


@dataclass(frozen=True)
class _Log:
    """One read of the change log: its newest id and the changes after `after`, unless they
    are not all there (`complete` false: pruned, too many, or not read for an empty cache)."""

    after: int
    newest: int
    complete: bool
    changes: list[_Change]


class CandleCache:
    def __init__(
        self, pool: AsyncConnectionPool, max_bytes: int = 64 * 2**20, market_zone: tzinfo = UTC
    ) -> None:
        self._pool = pool
        # Blocks hold buckets of one width from the epoch: 1d buckets are so only when the
        # market's day is UTC's (elsewhere 23 to 25 hours from a local midnight), and otherwise
        # read directly (a year of them is 365 rows).
        self._day_blocks = days_are_utc(market_zone)
        self.max_bytes = max_bytes
        self._blocks: OrderedDict[tuple[str, str, int], Block] = OrderedDict()
        self._bytes = 0
        self._seen = 0  # the change-log id followed to
        self._listener = 0  # the LISTEN connection (the hub's number) the blocks were kept under
        # What was followed lately, so that a block read while the log moved on is kept only
        # when none of the changes followed meanwhile touched it: reads build blocks
        # concurrently, and a change followed while a block is being read drops nothing yet.
        self._followed: deque[_Change] = deque(maxlen=MAX_CHANGES_REMEMBERED)
        self._followed_since = 0  # every change after this id that was followed is remembered
        self._clears = 0
        # Whether trades were pending, as last read per (symbol, first bucket, closed end), with
        # what the process had heard of then.
        self._pending: dict[tuple[str, int, int], tuple[Heard, bool]] = {}

    async def page(
        self,
        symbol: str,
        interval: str,
        start: datetime,
        end: datetime,
        limit: int,
        changes: Heard | None = None,
    ) -> Page | None:
        """The candles of [start, end) like `sql/queries/candles_page.sql`, the closed ones from
        memory; None when this range is better read directly (late trades pending in it, or
        more blocks than a read should build). `changes` is what this process heard of (the
        stream hub's): while it stays the same, the change log and the pending trades are as
        last read; when it comes from a new LISTEN connection, the blocks are dropped (the
        process may have been deaf) and the log read again before any block is served."""
        if interval == "1d" and not self._day_blocks:
            READS.labels("direct").inc()
            return None
        window = _Window.of(interval, start, end)
        blocks = window.blocks
        if len(blocks) > MAX_BLOCKS_PER_READ or (blocks and blocks[0] < FIRST_BLOCK_START):
            READS.labels("direct").inc()
            return None
        async with _Connection(self._pool) as conn:
            key = (symbol, window.first, window.closed_end)
            known = self._pending.get(key)
            log: _Log | None = None
            if changes is not None and known is not None and known[0] == changes:
                late = known[1]
            else:
                log, late = await self._read_log(conn, symbol, window, start)
                if changes is not None:
                    if len(self._pending) >= MAX_STATES:
                        self._pending.clear()
                    self._pending[key] = (changes, late)
            if late:
                READS.labels("direct").inc()
                return None
            candles: list[bytes] = []
            starts: list[int] = []
            built = False
            if changes is not None and changes.listener > self._listener:
                self._listener = changes.listener
                self._clear()
            if log is not None:
                self._follow(log)
            for first in blocks:
                until = min(first + window.span, window.open_start)
                block, fresh = await self._block(conn, symbol, interval, first, until)
                built |= fresh
                low = bisect.bisect_left(block.starts, window.first)
                high = bisect.bisect_left(block.starts, window.closed_end)
                candles += block.encoded[low:high]
                starts += block.starts[low:high]
                if len(candles) > limit:
                    break
            opened = _time(window.open_start)
            if len(candles) <= limit and end > opened:
                live = await self._live(conn, symbol, interval, max(start, opened), end, limit)
                candles += [_encode(c) for c in live]
                starts += [_epoch_us(datetime.fromisoformat(c.bucket_start)) for c in live]
        READS.labels("built" if built else "hit").inc()
        more = len(candles) > limit
        last = _time(starts[limit - 1]).strftime("%Y-%m-%dT%H:%M:%SZ") if more else None
        return Page(candles[:limit], last)

    async def _read_log(
        self, conn: _Connection, symbol: str, window: _Window, start: datetime
    ) -> tuple[_Log, bool]:
        """The change log after the last change followed, and whether trades are pending in the
        closed buckets of the read."""
        seen = self._seen
        most = MAX_CHANGES_FOLLOWED if self._blocks else 0
        params = {
            "symbol": symbol,
            "start": start,
            "closed_end": _time(window.closed_end),
            "seen": seen,
            "most": most,
        }
        rows = await (await (await conn()).execute(LOG, params)).fetchall()
        newest, oldest, late = rows[0][:3]
        complete = seen <= newest <= seen + most and (oldest is None or oldest <= seen + 1)
        changes = [row[3:] for row in rows if row[3] is not None]
        return _Log(seen, newest, complete, changes), late

    async def _block(
        self, conn: _Connection, symbol: str, interval: str, first: int, until: int
    ) -> tuple[Block, bool]:
        """The block starting at `first`, read anew (True) unless it is cached up to `until`.
        A block read anew is exact as of the log followed before its read, and cached only if no
        change followed during the read touched it (another read may have followed one)."""
        key = (symbol, interval, first)
        block = self._blocks.get(key)
        if block is not None and block.until >= until:
            self._blocks.move_to_end(key)
            return block, False
        seen, clears = self._seen, self._clears
        rows = await (
            await (await conn()).execute(
                CLOSED_CANDLES, (symbol, interval, _time(first), _time(until))
            )
        ).fetchall()
        encoded = [_encode(Candle(*row[1:])) for row in rows]
        fresh = Block(first, until, seen, [r[0] for r in rows], encoded, sum(map(len, encoded)))
        if clears == self._clears and not self._changed_since(key, fresh):
            self._store(key, fresh)
        return fresh, True

    def _changed_since(self, key: tuple[str, str, int], block: Block) -> bool:
        """Whether a change followed after `block.seen` touches the block (or may have: the
        changes followed since are no longer all remembered)."""
        if block.seen >= self._seen:
            return False
        if block.seen < self._followed_since:
            return True
        for change in reversed(self._followed):
            if change[0] <= block.seen:
                return False
            if _touches(change, key, block):
                return True
        return False

    def _store(self, key: tuple[str, str, int], block: Block) -> None:
        if (old := self._blocks.pop(key, None)) is not None:
            self._bytes -= old.size
        self._blocks[key] = block
        self._bytes += block.size
        while self._bytes > self.max_bytes and len(self._blocks) > 1:
            _, evicted = self._blocks.popitem(last=False)
            self._bytes -= evicted.size

    def _follow(self, log: _Log) -> None:
        """Drop the blocks the change log says changed, and remember the changes for the blocks
        being read meanwhile. Reads run concurrently, so a log may be older than the last one
        followed: its changes already followed are skipped (the remembered ones stay in id
        order)."""
        if not log.complete:
            self._clear()
            self._seen = self._followed_since = log.newest
            return
        for change in log.changes:
            if change[0] <= self._seen:
                continue  # followed already, by a read with a newer log
            for key in list(self._touched(change)):
                block = self._blocks[key]
                if change[0] > block.seen:
                    del self._blocks[key]
                    self._bytes -= block.size
            if len(self._followed) == self._followed.maxlen:
                self._followed_since = self._followed[0][0]
            self._followed.append(change)
        self._seen = max(self._seen, log.newest)

    def _touched(self, change: _Change) -> Iterator[tuple[str, str, int]]:
        """The cached blocks a change-log row covers: one bucket, a day of every symbol, or all."""
        _, symbol, interval, bucket, whole_day = change
        if interval != "*" and bucket is not None and not whole_day:
            span = _span(interval)
            key = (symbol, interval, bucket // span * span)
            block = self._blocks.get(key)
            if block is not None and _touches(change, key, block):
                yield key
            return
        for key, block in self._blocks.items():
            if _touches(change, key, block):
                yield key

    def _clear(self) -> None:
        self._blocks.clear()
        self._bytes = 0
        self._followed.clear()
        self._followed_since = self._seen
        self._clears += 1

    async def _live(
        self,
        conn: _Connection,
        symbol: str,
        interval: str,
        start: datetime,
        end: datetime,
        limit: int,
    ) -> list[Candle]:
        params = {
            "symbol": symbol,
            "interval": interval,
            "width": INTERVALS[interval],
            "start": start,
            "end": end,
            "limit": limit,
        }
        rows = await (await (await conn()).execute(query("candles_page"), params)).fetchall()
        return [Candle(*row) for row in rows]


class _Connection:
    """A connection of the pool, taken at its first use (a read served from memory takes none)
    and given back at the end of the read."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        self._taken = AsyncExitStack()
        self._conn: AsyncConnection[Any] | None = None

    async def __call__(self) -> AsyncConnection[Any]:
        if self._conn is None:
            conn: AsyncConnection[Any] = await self._taken.enter_async_context(
                self._pool.connection()
            )
            self._conn = conn
        return self._conn

    async def __aenter__(self) -> _Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._taken.aclose()


def _touches(change: _Change, key: tuple[str, str, int], block: Block) -> bool:
    """Whether a change-log row covers a block: one bucket of its symbol and interval, a day of
    every symbol (a recomputed day), or everything (candles emptied)."""
    _, symbol, interval, bucket, whole_day = change
    if interval == "*" or bucket is None:
        return True
    if key[1] != interval:
        return False
    if not whole_day:
        return key[0] == symbol and block.first <= bucket < block.until
    return block.first < bucket + LONGEST_MARKET_DAY // MICROSECOND and bucket < block.until


def _span(interval: str) -> int:
    """The width of a block of `interval`, µs."""
    return INTERVALS[interval] // MICROSECOND * BUCKETS_PER_BLOCK


def _epoch_us(moment: datetime) -> int:
    return (moment - EPOCH) // MICROSECOND


def _time(epoch_us: int) -> datetime:
    return EPOCH + timedelta(microseconds=epoch_us)
