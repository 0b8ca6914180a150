"""`/candles` serves closed buckets from each API process's memory: it must say exactly what the
tables say, whatever changed them since (a late trade, a recomputed day, an announced change),
and page the same as a direct read. A change the API process made itself is served at once;
one committed elsewhere once its notification reaches the process."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import msgspec
import polars as pl
from psycopg import AsyncConnection, AsyncCursor
from psycopg_pool import AsyncConnectionPool

from core.db import Connection, libpq_url
from pipelines.candles import recompute_day
from pipelines.ingestion import drain_inbox
from serving.candle_cache import CandleCache
from serving.listener import Heard
from tests.support import all_candles, counter_totals, send, tick, wait_for

DAY = date(2026, 11, 20)
WINDOW = {
    "symbol": "AAPL",
    "interval": "1m",
    "start": f"{DAY}T00:00:00Z",
    "end": f"{DAY}T23:59:59Z",
}


def a_morning(client: httpx.Client, db: Connection) -> None:
    """Trades in 300 minutes of DAY, promoted."""
    send(client, [tick(i, ts=f"{DAY}T{9 + i // 60:02}:{i % 60:02}:30Z", price=100.0 + i % 7)
                  for i in range(300)])  # fmt: skip
    drain_inbox(db)


def stored(db: Connection) -> list[tuple[Any, ...]]:
    rows = db.execute(
        "SELECT to_char(bucket_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
        " open, high, low, close, volume, vwap, trade_count FROM candles"
        " WHERE symbol = 'AAPL' AND \"interval\" = '1m' ORDER BY bucket_start"
    ).fetchall()
    return [tuple(row) for row in rows]


def served(client: httpx.Client, **params: Any) -> list[tuple[Any, ...]]:
    fields = ("bucket_start", "open", "high", "low", "close", "volume", "vwap", "trade_count")
    return [tuple(c[f] for f in fields) for c in all_candles(client, **{**WINDOW, **params})]


def cache_reads(client: httpx.Client) -> dict[str, float]:
    return counter_totals(client, "mdp_candle_cache_reads", "outcome")


def test_closed_buckets_are_served_from_memory_and_equal_the_table(
    client: httpx.Client, db: Connection
) -> None:
    a_morning(client, db)
    before = cache_reads(client)
    assert served(client) == stored(db)
    assert served(client) == stored(db)
    assert served(client, limit=7) == stored(db)  # pages of 7, by next_page_token
    after = cache_reads(client)
    assert after.get("hit", 0) > before.get("hit", 0)
    assert all(c["is_final"] for c in all_candles(client, **WINDOW))


def test_a_late_trade_into_a_cached_bucket_is_served_pending_then_final(
    client: httpx.Client, db: Connection
) -> None:
    a_morning(client, db)
    assert served(client) == stored(db)  # cached now
    send(client, [tick(999, ts=f"{DAY}T10:02:45Z", price=500.0)])  # late: a new high at 10:02
    pending = {c["bucket_start"]: c for c in all_candles(client, **WINDOW)}
    late = pending[f"{DAY}T10:02:00Z"]
    assert (late["high"], late["trade_count"], late["is_final"]) == (500.0, 2, False)

    drain_inbox(db)
    promoted = {c["bucket_start"]: c for c in all_candles(client, **WINDOW)}
    late = promoted[f"{DAY}T10:02:00Z"]
    assert (late["high"], late["trade_count"], late["is_final"]) == (500.0, 2, True)
    assert served(client) == stored(db)


def test_a_recomputed_day_replaces_what_was_cached(
    client: httpx.Client, db: Connection, database_url: str
) -> None:
    a_morning(client, db)
    assert served(client) == stored(db)  # cached now
    db.execute("DELETE FROM trades WHERE event_id = 'e-62'")  # a correction: 10:02 loses its trade
    recompute_day(db, database_url, DAY)  # another process: the API hears of it by notification
    wait_for(
        "the recomputed day to reach the cache",
        lambda: f"{DAY}T10:02:00Z" not in {row[0] for row in served(client)},
        timeout=30,
        poll=0.05,
    )
    assert served(client) == stored(db)


def test_an_announced_change_reaches_the_cache(client: httpx.Client, db: Connection) -> None:
    a_morning(client, db)
    assert served(client) == stored(db)  # cached now
    db.execute(
        "UPDATE candles SET close = 1 WHERE symbol = 'AAPL' AND \"interval\" = '1m'"
        " AND bucket_start = %s",
        (f"{DAY}T11:00:00Z",),
    )
    change = {"candles": [{"symbol": "AAPL", "interval": "1m", "bucket_start": f"{DAY}T11:00:00Z"}]}
    assert client.post("/internal/agg-update", json=change).status_code == 202
    by_start = {row[0]: row for row in served(client)}
    assert by_start[f"{DAY}T11:00:00Z"][4] == 1
    assert served(client) == stored(db)


def test_bulk_readers_get_the_same_candles_as_an_arrow_stream(
    client: httpx.Client, db: Connection
) -> None:
    a_morning(client, db)
    arrow = {"Accept": "application/vnd.apache.arrow.stream"}
    response = client.get("/candles", params={**WINDOW, "limit": 200}, headers=arrow)
    assert response.headers["content-type"] == "application/vnd.apache.arrow.stream"
    first = pl.read_ipc_stream(response.content)
    rest = pl.read_ipc_stream(
        client.get(
            "/candles",
            params={**WINDOW, "page_token": response.headers["Next-Page-Token"]},
            headers=arrow,
        ).content
    )
    frame = pl.concat([first, rest])
    assert frame.schema["bucket_start"] == pl.Datetime("us", "UTC")
    as_json = [
        (c["bucket_start"], c["open"], c["high"], c["low"], c["close"], c["volume"], c["vwap"],
         c["trade_count"], c["revision"], c["is_final"])
        for c in all_candles(client, **WINDOW)
    ]  # fmt: skip
    as_arrow = [(row[0].strftime("%Y-%m-%dT%H:%M:%SZ"), *row[1:]) for row in frame.iter_rows()]
    assert as_arrow == as_json


# The change log's prune, as `sql/queries/announce_candles.sql` runs it after each announcement.
PRUNE = """
DELETE FROM candle_updates
WHERE id < (SELECT id FROM candle_updates
            WHERE created_at >= now() - interval '15 minutes' ORDER BY id LIMIT 1)
"""


def pruning_after_each_statement(database_url: str) -> type[AsyncConnection[Any]]:
    """Connections that let another session prune the change log right after each statement:
    the prune a writer may run at any moment, forced between any two statements of a read."""

    class Pruning(AsyncConnection[Any]):
        async def execute(
            self, query: Any, params: Any = None, *, prepare: bool | None = None,
            binary: bool = False,
        ) -> AsyncCursor[Any]:  # fmt: skip
            cursor = await super().execute(query, params, prepare=prepare, binary=binary)
            async with await AsyncConnection.connect(database_url, autocommit=True) as other:
                await other.execute(PRUNE)
            return cursor

    return Pruning


def test_a_change_pruned_from_the_log_during_a_read_is_not_lost(
    client: httpx.Client, db: Connection, database_url: str
) -> None:
    a_morning(client, db)
    start = datetime.combine(DAY, datetime.min.time(), UTC)
    end = start + timedelta(days=1)

    async def served_by_a_cache() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        url = libpq_url(database_url)
        pool = AsyncConnectionPool(
            url, connection_class=pruning_after_each_statement(url), open=False,
            kwargs={"autocommit": True}, min_size=1, max_size=2,
        )  # fmt: skip
        async with pool:
            cache = CandleCache(pool)
            before = await cache.page("AAPL", "1m", start, end, 1000)  # cached now
            send(client, [tick(999, ts=f"{DAY}T10:02:45Z", price=500.0)])  # late: 10:02's high
            drain_inbox(db)
            # The late trade's change is more than 15 minutes old by the time this process reads
            # the log, and a newer change (another symbol's) lets a prune remove it.
            db.execute("UPDATE candle_updates SET created_at = now() - interval '1 hour'")
            db.execute(
                'INSERT INTO candle_updates (symbol, "interval", bucket_start)'
                " VALUES ('MSFT', '1m', now())"
            )
            after = await cache.page("AAPL", "1m", start, end, 1000)
        assert before is not None and after is not None
        return [msgspec.json.decode(c) for c in before.candles], [
            msgspec.json.decode(c) for c in after.candles
        ]

    before, after = asyncio.run(served_by_a_cache())
    assert {c["bucket_start"]: c["high"] for c in before}[f"{DAY}T10:02:00Z"] != 500.0
    assert {c["bucket_start"]: c["high"] for c in after}[f"{DAY}T10:02:00Z"] == 500.0
    assert [tuple(c.values())[:8] for c in after] == stored(db)


def test_a_new_listen_connection_drops_the_cached_candles(
    client: httpx.Client, db: Connection, database_url: str
) -> None:
    """Notifications may have been missed while the process was not listening: whatever the log
    says, nothing cached before the reconnection is served after it."""
    a_morning(client, db)
    start = datetime.combine(DAY, datetime.min.time(), UTC)
    end = start + timedelta(days=1)
    unlogged = "UPDATE candles SET high = 999 WHERE symbol = 'AAPL' AND bucket_start = %s"

    async def highs_at_10_02() -> list[float]:
        highs = []
        async with AsyncConnectionPool(
            libpq_url(database_url), open=False, kwargs={"autocommit": True}
        ) as pool:
            cache = CandleCache(pool)
            for heard in (Heard(1, 1), Heard(1, 2), Heard(2, 3)):
                page = await cache.page("AAPL", "1m", start, end, 1000, heard)
                assert page is not None
                by_start = {c["bucket_start"]: c for c in map(msgspec.json.decode, page.candles)}
                highs.append(by_start[f"{DAY}T10:02:00Z"]["high"])
                db.execute(unlogged, (f"{DAY}T10:02:00Z",))  # a change the log does not show
        return highs

    first, same_listener, new_listener = asyncio.run(highs_at_10_02())
    assert first == same_listener != 999  # from memory: nothing was heard of
    assert new_listener == 999


def test_a_block_read_while_another_read_follows_a_change_is_not_kept_stale(
    client: httpx.Client, db: Connection, database_url: str
) -> None:
    """Reads build blocks concurrently: a block read from a snapshot older than a change that
    another read followed meanwhile is served to its own read, never kept for the next ones."""
    a_morning(client, db)
    start = datetime.combine(DAY, datetime.min.time(), UTC)
    end = start + timedelta(days=1)
    armed, paused, resume = asyncio.Event(), asyncio.Event(), asyncio.Event()

    class PausingOnce(AsyncConnection[Any]):
        """Holds the first block read once armed, after its statement ran: its snapshot taken."""

        async def execute(
            self, query: Any, params: Any = None, *, prepare: bool | None = None,
            binary: bool = False,
        ) -> AsyncCursor[Any]:  # fmt: skip
            cursor = await super().execute(query, params, prepare=prepare, binary=binary)
            if "FROM candles" in str(query) and armed.is_set() and not paused.is_set():
                paused.set()
                await resume.wait()
            return cursor

    pausing: type[AsyncConnection[Any]] = PausingOnce

    async def highs_at_10_02() -> tuple[float, float, float]:
        async with AsyncConnectionPool(
            libpq_url(database_url), connection_class=pausing, open=False,
            kwargs={"autocommit": True}, min_size=1, max_size=4,
        ) as pool:  # fmt: skip
            cache = CandleCache(pool)
            await cache.page("MSFT", "1m", start, end, 1000)  # the log is followed from here on
            armed.set()

            async def high() -> float:
                page = await cache.page("AAPL", "1m", start, end, 1000)
                assert page is not None
                by_start = {c["bucket_start"]: c for c in map(msgspec.json.decode, page.candles)}
                return float(by_start[f"{DAY}T10:02:00Z"]["high"])

            stale_read = asyncio.create_task(high())
            await paused.wait()  # its block's snapshot is older than the trade below
            send(client, [tick(999, ts=f"{DAY}T10:02:45Z", price=500.0)])
            drain_inbox(db)
            # Not queued behind the paused read: follows the change and reads the block anew.
            fresh = await asyncio.wait_for(high(), timeout=60)
            resume.set()
            stale = await stale_read
            return stale, fresh, await high()

    stale, fresh, after_both = asyncio.run(highs_at_10_02())
    assert stale != 500.0
    assert fresh == after_both == 500.0
