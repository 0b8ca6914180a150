"""The events of `/stream` and `/ws`: accepted trades and candle changes, read from the tables in
order after a cursor, so a reader that resumes from a Last-Event-ID gets exactly what it missed.

One reader per API process (`EventFeed`) reads every event once per commit it hears of (woken by
`serving.listener`) and hands each connection the events it asked for; it keeps the latest
events, so a connection that starts or resumes a little behind joins from them. A connection
further behind catches up with reads of its own from its cursor, then joins; one that falls
MAX_BEHIND bytes behind leaves the shared reader and catches up the same way. So a crowd costs
one query per wake-up, and a slow client costs reads of its own, never memory or other clients'
time (docs/design.md §7)."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import json
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from psycopg_pool import AsyncConnectionPool

from core.db import query
from serving.listener import StreamHub
from serving.metrics import STREAM_READS, STREAMS_FELL_BEHIND

log = logging.getLogger(__name__)

BATCH = 2000  # trades looked at, and candle changes, per read (sql/queries/stream_events.sql)
HEARTBEAT_SECONDS = 15.0
COALESCE_SECONDS = 0.05  # the shared reader reads at most this often under a busy feed
RECENT_EVENTS = 20_000  # events the shared reader keeps for connections joining a little behind
MAX_BEHIND = 2**20  # bytes of events queued for one connection before it leaves the shared reader
# The shared reader's work after a read is cut in slices, each a turn of the event loop (offers of
# events to connections, and 64 times fewer wake-ups of connections, each a send), so that the
# loop serves everything else (acks first of all) between slices instead of after it all: with
# a crowd of 2,000 the ack p99 went from 75 ms in one piece to 25 ms (mdp bench crowd).
SLICE = 256
CATCH_UP_READS = 2  # connections of a process reading on their own cursors at the same time
KINDS = frozenset({"trade", "candle"})
CHANGES_KEPT = "15 minutes"  # how long the change log keeps candle changes (announce_candles.sql)

Cursor = tuple[int, int]  # (trade seq, candle change id): everything up to both has been seen

# Where a new reader starts: after everything committed so far.
HEADS = """
SELECT greatest(coalesce((SELECT max(seq) FROM trade_inbox), 0),
                coalesce((SELECT max(seq) FROM trades), 0)),
       coalesce((SELECT max(id) FROM candle_updates), 0)
"""


class Event(NamedTuple):
    """An event, encoded once for every connection it goes to (`Event.of`)."""

    kind: str  # trade | candle | gap
    symbol: str
    data: str  # JSON
    cursor: Cursor  # up to and including this event
    sse: bytes  # as /stream sends it
    ws: str  # as an item of a /ws message's array

    @classmethod
    def of(cls, kind: str, symbol: str, data: str, cursor: Cursor) -> Event:
        at = f"{cursor[0]}.{cursor[1]}"
        sse = f"id: {at}\nevent: {kind}\ndata: {data}\n\n".encode()
        return cls(
            kind, symbol, data, cursor, sse, f'{{"id":"{at}","event":"{kind}","data":{data}}}'
        )

    @property
    def id(self) -> str:
        """The event's id, `<trade seq>.<candle change id>`: a reader resumes after it."""
        return f"{self.cursor[0]}.{self.cursor[1]}"

    def is_after(self, cursor: Cursor) -> bool:
        """Whether a reader at `cursor` has yet to get this event."""
        return self.cursor[0] > cursor[0] if self.kind == "trade" else self.cursor[1] > cursor[1]


_Kept = tuple[str, str, str, Cursor, bytes, str]  # an Event as a plain tuple


def _later(a: Cursor, b: Cursor) -> Cursor:
    return max(a[0], b[0]), max(a[1], b[1])


async def heads(pool: AsyncConnectionPool) -> Cursor:
    async with pool.connection() as conn:
        row = await (await conn.execute(HEADS)).fetchone()
    assert row is not None
    return row[0], row[1]


@dataclass(frozen=True)
class Read:
    events: list[Event]
    cursor: Cursor  # where the next read starts (past what was looked at and left out, too)
    more: bool  # a full batch: more may be waiting


async def read_events(
    pool: AsyncConnectionPool,
    cursor: Cursor,
    symbols: Collection[str] | None,
    kinds: Collection[str],
) -> Read:
    """The accepted trades and candle changes after `cursor`, in order, a batch of each; a `gap`
    event first when candle changes after `cursor` were already pruned from the change log."""
    after_trade, after_candle = cursor
    params: dict[str, Any] = {
        "symbols": None if symbols is None else list(symbols),
        "want_trades": "trade" in kinds,
        "want_candles": "candle" in kinds,
        "after_trade": after_trade,
        "after_candle": after_candle,
        "batch": BATCH,
    }
    events = []
    async with pool.connection() as conn:
        found = await conn.execute(query("stream_events"), params)
        [(_, trades_through, _, trades_scanned), (_, candles_through, _, candles_scanned),
         (_, kept, _, _)] = await found.fetchmany(3)  # fmt: skip
        if kept is not None and kept > after_candle + 1:
            after_candle = kept - 1
            events.append(_gap(cursor[1], (after_trade, after_candle)))
        # The rows become events a slice at a time, a turn of the event loop each (SLICE).
        while rows := await found.fetchmany(SLICE):
            for kind, event_id, symbol, data in rows:
                if kind == "trade":
                    after_trade = event_id
                else:
                    after_trade = trades_through or after_trade
                    after_candle = event_id
                events.append(Event.of(kind, symbol, data, (after_trade, after_candle)))
            await asyncio.sleep(0)
    more = BATCH in (int(trades_scanned), int(candles_scanned))
    return Read(events, (trades_through or after_trade, candles_through or after_candle), more)


def _gap(after_candle: int, cursor: Cursor) -> Event:
    detail = (
        f"candle changes are kept for {CHANGES_KEPT}; some after change {after_candle} were "
        "pruned before this resume: read /candles again for the ranges you follow"
    )
    data = {"missed": "candle", "after": after_candle, "resumes_after": cursor[1], "detail": detail}
    return Event.of("gap", "", json.dumps(data), cursor)


class Follower:
    """One connection's place in the events: its cursor, what it asked for, and the events the
    shared reader queued for it."""

    def __init__(self, cursor: Cursor, symbols: frozenset[str] | None, kinds: frozenset[str]):
        self.cursor = cursor
        self.symbols = symbols
        self.kinds = kinds
        self.joined = False
        # An event did not fit in its queue: it takes no more (its cursor stays at the last it
        # got) until it leaves the shared reader and joins again.
        self.lagging = False
        self._events: list[Event] = []
        self._behind = 0
        self._ready = asyncio.Event()

    def offer(self, event: Event) -> bool:
        """Queue `event` if wanted and new; whether it was. Not when that would put the
        connection more than MAX_BEHIND bytes behind: then it is `lagging`, and takes no more."""
        if self.lagging or event.kind not in self.kinds or not event.is_after(self.cursor):
            return False
        if self._behind + len(event.data) > MAX_BEHIND:
            self.lagging = True
            return False
        if self.cursor[0] <= event.cursor[0] and self.cursor[1] <= event.cursor[1]:
            self.cursor = event.cursor  # as the shared reader has it: shared, encoded once
        else:  # this connection got further than the reader on its own: its id is its own
            self.cursor = _later(self.cursor, event.cursor)
            event = Event.of(event.kind, event.symbol, event.data, self.cursor)
        self._events.append(event)
        self._behind += len(event.data)
        return True

    def wake(self) -> None:
        """Let the connection take what was queued (if it waits for events)."""
        self._ready.set()

    async def take(self) -> list[Event]:
        """The events queued so far, waiting for one (no timer: a crowd's thousands of timers
        rescheduled at every wake-up were a seventh of the API's CPU)."""
        if not self._events:
            await self._ready.wait()
        return self.queued()

    def queued(self) -> list[Event]:
        """The events queued so far (perhaps none), without waiting."""
        events, self._events = self._events, []
        self._behind = 0
        self._ready.clear()
        return events


class EventFeed:
    """The process's one reader of events, shared by its `/stream` and `/ws` connections."""

    def __init__(self, pool: AsyncConnectionPool, hub: StreamHub, max_followers: int) -> None:
        self._pool = pool
        self._hub = hub
        self.max_followers = max_followers
        self._followers = 0  # connections following, joined or catching up
        self._everything: set[Follower] = set()  # joined, all symbols
        self._by_symbol: defaultdict[str, set[Follower]] = defaultdict(set)  # joined, some
        self._head: Cursor | None = None  # where the shared reader reads next
        self._caught_up = False  # its last read reached the newest events
        # The latest events, RECENT_EVENTS to twice as many, as plain tuples of strings and
        # numbers: the garbage collector stops tracking those (not a tuple subclass), so the
        # tens of thousands kept cost no collection (kept as Events, they made a crowd's API
        # pause up to 300 ms in full collections).
        self._recent: list[_Kept] = []
        self._recent_after: Cursor | None = None  # every event after it is in _recent
        self._catching_up = asyncio.Semaphore(CATCH_UP_READS)
        self._task: asyncio.Task[None] | None = None

    @property
    def full(self) -> bool:
        return self._followers >= self.max_followers

    async def start_cursor(self) -> Cursor:
        """Where a new connection starts: after everything committed so far (as the shared reader
        last read it, when it is following the newest events)."""
        if self._caught_up and self._head is not None:
            return self._head
        return await heads(self._pool)

    async def follow(
        self, cursor: Cursor, symbols: Collection[str] | None, kinds: Collection[str]
    ) -> AsyncIterator[list[Event]]:
        """The events after `cursor`, in order, a batch at a time (perhaps empty), for as long
        as the caller iterates."""
        follower = Follower(
            cursor, None if symbols is None else frozenset(symbols), frozenset(kinds)
        )
        self._followers += 1
        if self._task is None or self._task.done():
            self._head, self._caught_up = None, False
            self._task = asyncio.create_task(self._run(), name="stream-feed")
        try:
            while True:
                if follower.joined or self._join(follower):
                    yield await follower.take()
                else:
                    yield follower.queued() or await self._catch_up(follower)
        finally:
            self._followers -= 1
            self._leave(follower)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _catch_up(self, follower: Follower) -> list[Event]:
        """A read of `follower`'s own from its cursor; at the newest events and still unable to
        join, it waits for the next commit."""
        generation = self._hub.generation()
        async with self._catching_up:
            read = await read_events(self._pool, follower.cursor, follower.symbols, follower.kinds)
        STREAM_READS.labels("own").inc()
        follower.cursor = read.cursor
        if not read.more and not read.events and not self._can_join(follower):
            await self._hub.wait(generation, HEARTBEAT_SECONDS)
        return read.events

    def _can_join(self, follower: Follower) -> bool:
        """Whether the shared reader's recent events reach back to `follower`'s cursor, for the
        kinds of events it wants."""
        after = self._recent_after
        if after is None:
            return False
        return ("trade" not in follower.kinds or follower.cursor[0] >= after[0]) and (
            "candle" not in follower.kinds or follower.cursor[1] >= after[1]
        )

    def _join(self, follower: Follower) -> bool:
        """Hand `follower` the recent events after its cursor and let the shared reader queue it
        the next ones; False when it is too far behind for that."""
        if not self._can_join(follower):
            return False
        follower.lagging = False
        # Events are in stream order, so both parts of their cursors ascend: skip those it had.
        unseen = [
            bisect.bisect_right(self._recent, follower.cursor[part], key=lambda e: e[3][part])
            for part, kind in enumerate(("trade", "candle"))
            if kind in follower.kinds
        ]
        for kept in itertools.islice(self._recent, min(unseen), None):
            if follower.symbols is None or kept[1] in follower.symbols:
                follower.offer(Event._make(kept))
                if follower.lagging:
                    return False  # more recent events than it may queue: a read of its own
        if follower.symbols is None:
            self._everything.add(follower)
        for symbol in follower.symbols or ():
            self._by_symbol[symbol].add(follower)
        follower.joined = True
        return True

    def _leave(self, follower: Follower) -> None:
        follower.joined = False
        self._everything.discard(follower)
        for symbol in follower.symbols or ():
            members = self._by_symbol[symbol]
            members.discard(follower)
            if not members:
                del self._by_symbol[symbol]

    async def _run(self) -> None:
        """Read, remember, hand out, wait for a commit; for as long as anybody follows. A failed
        read is retried after a second."""
        while self._followers:
            generation = self._hub.generation()
            try:
                if self._head is None:
                    self._head = self._recent_after = await heads(self._pool)
                    self._recent.clear()
                read = await read_events(self._pool, self._head, None, KINDS)
                STREAM_READS.labels("shared").inc()
            except Exception:
                log.exception("the /stream reader failed; retrying")
                await asyncio.sleep(1.0)
                continue
            read_at = time.monotonic()
            self._head, self._caught_up = read.cursor, not read.more
            self._remember(read.events)
            await self._wake(await self._hand_out(read.events))
            if not read.more:
                await self._hub.wait(generation, HEARTBEAT_SECONDS)
                # Under a busy feed, read at most every COALESCE_SECONDS; when idle, at once.
                await asyncio.sleep(max(0.0, COALESCE_SECONDS - (time.monotonic() - read_at)))
        self._head, self._caught_up, self._recent_after = None, False, None

    def _remember(self, events: list[Event]) -> None:
        self._recent += (cast(_Kept, tuple(event)) for event in events)
        if len(self._recent) > 2 * RECENT_EVENTS:  # forget the oldest, a batch at a time
            forgotten = len(self._recent) - RECENT_EVENTS
            self._recent_after = self._recent[forgotten - 1][3]
            del self._recent[:forgotten]

    async def _hand_out(self, events: list[Event]) -> set[Follower]:
        """Queue each joined connection the events it wants, giving the event loop a turn every
        SLICE offers; the connections that got some. (A connection joining meanwhile gets these
        events from the recent ones, and is offered them again in vain: its cursor is past.)"""
        got: set[Follower] = set()
        lagging: set[Follower] = set()
        offered = 0
        for event in events:
            wanting = self._by_symbol.get(event.symbol, ())
            for follower in itertools.chain(self._everything, wanting):
                if follower.offer(event):
                    got.add(follower)
                elif follower.lagging:
                    lagging.add(follower)
            offered += len(self._everything) + len(wanting)
            if offered >= SLICE:
                offered = 0
                await asyncio.sleep(0)
        for follower in lagging:
            STREAMS_FELL_BEHIND.inc()
            self._leave(follower)  # it goes on with reads of its own from its cursor
        return got | lagging

    async def _wake(self, followers: set[Follower]) -> None:
        """Wake the connections that got events, SLICE / 64 per turn of the event loop."""
        for n, follower in enumerate(followers, start=1):
            follower.wake()
            if n % (SLICE // 64) == 0:
                await asyncio.sleep(0)
