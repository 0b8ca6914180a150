"""One reader of the accepted trades per API process, shared by all its `/stocks` WebSockets.

It follows the trades in acceptance order (`serving.stream.read_events`, woken by the process's
LISTEN hub) and hands each subscriber the events it asked for, encoded once per distinct
subscription: `T` for every trade, `A` for every second and `AM` for every minute that held
trades. A bar goes out GRACE_SECONDS after its bucket closes, computed by PostgreSQL from the
accepted trades (`sql/queries/stream_bars.sql`, so exact whatever this process saw); a trade
accepted later into a bucket already sent is late, and the bar goes out again with its new values,
as Polygon rebroadcasts and Alpaca's `updatedBars` do. Each subscriber has a bounded queue: one
that falls MAX_BEHIND bytes behind is marked slow (and disconnected by its handler), so it never
holds up the others and its memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import msgspec
from psycopg_pool import AsyncConnectionPool

from core.db import query
from core.intervals import EPOCH
from serving.listener import StreamHub
from serving.stream import HEARTBEAT_SECONDS, heads, read_events

log = logging.getLogger(__name__)

MAX_BEHIND = 4 * 2**20  # bytes queued for one subscriber before it counts as slow
GRACE_SECONDS = 0.25  # how long after its bucket closes a bar goes out
BAR_MS = {"A": 1_000, "AM": 60_000}  # bar kinds and their widths, milliseconds
KINDS = {"T", *BAR_MS}
COALESCE_SECONDS = 0.02  # reads at most this often under a busy feed: one reader per process
SENT_BARS = 100_000  # bars remembered to tell whether a late trade changed one
MILLISECOND = timedelta(milliseconds=1)

_encode = msgspec.json.Encoder().encode
Event = dict[str, Any]


class Subscriber:
    """One connection's channels (`T.AAPL`, `AM.*`), the read key it authenticated with (None
    while reads are public) and its queue of encoded frames."""

    def __init__(self, key: str | None = None) -> None:
        self.key = key
        self.channels: set[str] = set()
        self.slow = asyncio.Event()
        self._frames: asyncio.Queue[str] = asyncio.Queue()
        self._behind = 0  # bytes queued
        # Asked for on every publish, for every subscriber: computed once per change of channels.
        self._symbols: dict[str, frozenset[str] | None] = {}

    def subscribe(self, channels: Iterable[str]) -> None:
        self.channels.update(channels)
        self._symbols.clear()

    def unsubscribe(self, channels: Iterable[str]) -> None:
        self.channels.difference_update(channels)
        self._symbols.clear()

    def offer(self, frame: str) -> None:
        """Queue `frame`, unless that puts the subscriber too far behind: then it is slow."""
        if self._behind + len(frame) > MAX_BEHIND:
            self.slow.set()
        elif not self.slow.is_set():
            self._frames.put_nowait(frame)
            self._behind += len(frame)

    async def next_frame(self) -> str:
        """The next frame; when several are queued (the connection fell behind), all of them as
        one, their events in one array: one send instead of many."""
        frames = [await self._frames.get()]
        while not self._frames.empty():
            frames.append(self._frames.get_nowait())
        self._behind -= sum(map(len, frames))
        if len(frames) == 1:
            return frames[0]
        return "[" + ",".join(frame[1:-1] for frame in frames) + "]"

    def symbols(self, kind: str) -> frozenset[str] | None:
        """The symbols this subscriber wants `kind` events of; None for all of them."""
        if kind not in self._symbols:
            prefix = f"{kind}."
            self._symbols[kind] = (
                None
                if f"{prefix}*" in self.channels
                else frozenset(c[len(prefix) :] for c in self.channels if c.startswith(prefix))
            )
        return self._symbols[kind]


class Fanout:
    def __init__(self, pool: AsyncConnectionPool, hub: StreamHub) -> None:
        self._pool = pool
        self._hub = hub
        self._subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._sent: OrderedDict[tuple[str, str, int], tuple[Any, ...]] = OrderedDict()

    def join(self, subscriber: Subscriber) -> None:
        self._subscribers.add(subscriber)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="stocks-fanout")

    def leave(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def connections(self, key: str) -> int:
        """How many of the joined subscribers authenticated with `key`."""
        return sum(subscriber.key == key for subscriber in self._subscribers)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        """Read, publish, send the bars that are due, wait for a commit or the next bar; for as
        long as anybody is subscribed. A failed read is retried after a second."""
        cursor: tuple[int, int] | None = None
        now = _now_ms()
        closed = {kind: now // width * width for kind, width in BAR_MS.items()}  # sent before this
        while self._subscribers:
            generation = self._hub.generation()
            try:
                cursor = cursor or await heads(self._pool)
                read = await read_events(self._pool, cursor, None, {"trade", "candle"})
                cursor = read.cursor
                trades = [_trade(json.loads(e.data)) for e in read.events if e.kind == "trade"]
                restated = _restated_minutes(e for e in read.events if e.kind == "candle")
                self._publish("T", trades)
                for kind in BAR_MS:
                    closed[kind] = await self._bars(kind, closed[kind], trades, restated)
            except Exception:
                log.exception("the /stocks reader failed; retrying")
                await asyncio.sleep(1.0)
                continue
            read_at = time.monotonic()
            if not read.more:
                due = min(closed[kind] + width for kind, width in BAR_MS.items())
                until_due = (due - _now_ms()) / 1000 + GRACE_SECONDS
                await self._hub.wait(generation, min(HEARTBEAT_SECONDS, max(until_due, 0.0)))
                await asyncio.sleep(max(0.0, COALESCE_SECONDS - (time.monotonic() - read_at)))

    async def _bars(
        self, kind: str, closed: int, trades: list[Event], restated: set[tuple[str, int]]
    ) -> int:
        """Send the `kind` bars of the buckets closed since `closed`, those `trades` arrived
        late into and those in `restated` minutes (symbol, start ms: a cancel changed them); the
        new `closed`."""
        width = BAR_MS[kind]
        due = (_now_ms() - int(GRACE_SECONDS * 1000)) // width * width
        wanted = self._wanted(kind)
        if wanted is not None and not wanted:
            return max(closed, due)  # nobody asks: nothing to compute, nothing late later
        bars = await self._read_bars(kind, wanted, closed, due) if due > closed else []
        late = {(t["sym"], t["t"] // width * width) for t in trades if t["t"] < closed}
        late |= {
            (sym, start)
            for sym, minute in restated
            for start in range(minute, minute + BAR_MS["AM"], width)
            if start < closed
        }
        late = {(sym, start) for sym, start in late if wanted is None or sym in wanted}
        if late:
            starts = [start for _, start in late]
            found = await self._read_bars(
                kind, {sym for sym, _ in late}, min(starts), max(starts) + width
            )
            bars += [b for b in found if (b["sym"], b["s"]) in late]
        self._publish(kind, [b for b in bars if self._changed(kind, b)])
        return max(closed, due)

    def _changed(self, kind: str, bar: Event) -> bool:
        """Whether `bar` differs from the one last sent for its bucket; remembered as sent."""
        key = (kind, bar["sym"], bar["s"])
        values = (bar["o"], bar["h"], bar["l"], bar["c"], bar["v"], bar["vw"])
        if self._sent.get(key) == values:
            return False
        self._sent[key] = values
        self._sent.move_to_end(key)
        while len(self._sent) > SENT_BARS:
            self._sent.popitem(last=False)
        return True

    async def _read_bars(
        self, kind: str, symbols: Iterable[str] | None, start_ms: int, end_ms: int
    ) -> list[Event]:
        width = BAR_MS[kind]
        params = {
            "symbols": None if symbols is None else sorted(symbols),
            "width": width * MILLISECOND,
            "start": _time(start_ms),
            "end": _time(end_ms),
        }
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(query("stream_bars"), params)).fetchall()
        return [
            {"ev": kind, "sym": sym, "v": volume, "av": day_volume, "op": day_open, "vw": vwap,
             "o": open_, "c": close, "h": high, "l": low, "a": day_vwap,
             "z": volume / count if count else 0, "n": count, "s": start, "e": start + width}
            for (sym, start, open_, high, low, close, volume, vwap, count,
                 day_volume, day_open, day_vwap) in rows
        ]  # fmt: skip

    def _wanted(self, kind: str) -> set[str] | None:
        """The symbols somebody wants `kind` events of; None when somebody wants all."""
        wanted: set[str] = set()
        for subscriber in self._subscribers:
            symbols = subscriber.symbols(kind)
            if symbols is None:
                return None
            wanted |= symbols
        return wanted

    def _publish(self, kind: str, events: list[Event]) -> None:
        """Offer each subscriber the `kind` events it asked for, one frame, encoded once per
        distinct set of symbols asked for. Events are dealt by symbol to the sets that follow
        it: the cost grows with the deliveries, not with the sets times the events."""
        if not events:
            return
        groups: defaultdict[frozenset[str] | None, list[Subscriber]] = defaultdict(list)
        for subscriber in self._subscribers:
            groups[subscriber.symbols(kind)].append(subscriber)
        followed_by: defaultdict[str, list[frozenset[str]]] = defaultdict(list)
        for symbols in groups:
            if symbols is not None:
                for symbol in symbols:
                    followed_by[symbol].append(symbols)
        chosen: dict[frozenset[str] | None, list[Event]] = {}
        if None in groups:
            chosen[None] = events
        for event in events:
            for symbols in followed_by.get(event["sym"], ()):
                chosen.setdefault(symbols, []).append(event)
        for symbols, picked in chosen.items():
            frame = _encode(picked).decode()
            for subscriber in groups[symbols]:
                subscriber.offer(frame)


def _trade(trade: dict[str, Any]) -> Event:
    event = {
        "ev": "T",
        "sym": trade["symbol"],
        "i": trade["event_id"],
        "p": trade["price"],
        "s": trade["volume"],
        "t": (datetime.fromisoformat(trade["ts"]) - EPOCH) // MILLISECOND,
        "q": trade["seq"],
    }
    if "conditions" in trade:
        event["c"] = trade["conditions"]
    return event


def _restated_minutes(changes: Iterable[Any]) -> set[tuple[str, int]]:
    """(symbol, start ms) of the 1m candles a cancel restated, from candle change events."""
    minutes = set()
    for change in changes:
        candle = json.loads(change.data)
        if candle["interval"] == "1m" and candle.get("revision") != 0:
            start = datetime.fromisoformat(candle["bucket_start"])
            minutes.add((candle["symbol"], (start - EPOCH) // MILLISECOND))
    return minutes


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _time(epoch_ms: int) -> datetime:
    return EPOCH + epoch_ms * MILLISECOND
