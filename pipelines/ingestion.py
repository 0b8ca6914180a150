"""Micro-batches: acknowledged ticks move from `trade_inbox` to canonical `trades` and are merged
into the candles of every bucket they land in, in one transaction. Killed at any point, a
batch leaves either everything or nothing behind. Plain SQL, psycopg and Polars: the Dagster job
calls it, tests call it directly."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

from core.db import Connection, query
from core.intervals import INTERVALS
from pipelines.candles import announce, lock_candles

DEFAULT_MAX_ROWS = 50_000
NO_LIMIT = 2**63 - 1
WORK_MEM = "64MB"  # a batch's sorts stay in memory


@dataclass(frozen=True)
class PromotedBatch:
    batch_id: int
    inbox_rows: int
    promoted: int
    days: Counter[tuple[str, date]]  # trades promoted per (symbol, market day)
    candles: int = 0  # candles written, all intervals

    @property
    def duplicates(self) -> int:
        return self.inbox_rows - self.promoted


@dataclass(frozen=True)
class IdleLook:
    """A look at the inbox that found nothing to promote; the heartbeat moved."""


def open_batch(conn: Connection, run_id: str | None, inbox_rows: int = 0) -> int:
    """Record a batch as started, in the caller's transaction; its id."""
    [(batch_id,)] = conn.execute(
        "INSERT INTO ingest_batches (started_at, inbox_rows, promoted, duplicates, run_id)"
        " VALUES (clock_timestamp(), %s, 0, 0, %s) RETURNING batch_id",
        (inbox_rows, run_id),
    ).fetchall()
    return int(batch_id)


def promote_batch(
    conn: Connection,
    max_rows: int = DEFAULT_MAX_ROWS,
    run_id: str | None = None,
    up_to_seq: int = NO_LIMIT,
) -> PromotedBatch:
    """Move the oldest `max_rows` inbox rows (up to `up_to_seq`) into `trades`, merge them into
    the candles they touch, record the batch and announce the changed candles, atomically."""
    with conn.transaction():
        lock_candles(conn)
        conn.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
        # The batch's last row: seq order is acceptance order, and the oldest rows go first.
        [(last,)] = conn.execute(
            "SELECT coalesce(max(seq), -1) FROM (SELECT seq FROM trade_inbox WHERE seq <= %s"
            " ORDER BY seq LIMIT %s) batch",
            (up_to_seq, max_rows),
        ).fetchall()
        batch_id = open_batch(conn, run_id)
        params = {
            "up_to_seq": last,
            "batch_id": batch_id,
            "intervals": [i for i in INTERVALS if i != "1m"],
            "widths": [w for i, w in INTERVALS.items() if i != "1m"],
        }
        [(symbols, days, trades, *changed)] = conn.execute(
            query("promote_batch"), params
        ).fetchall()
        if changed[0]:
            announce(conn, *changed)
        [(inbox_rows, promoted)] = conn.execute(
            "SELECT inbox_rows, promoted FROM ingest_batches WHERE batch_id = %s", (batch_id,)
        ).fetchall()
    per_day = Counter(dict(zip(zip(symbols, days, strict=True), trades, strict=True)))
    return PromotedBatch(batch_id, inbox_rows, promoted, per_day, len(changed[0]))


def drain_inbox(
    conn: Connection, max_rows: int = DEFAULT_MAX_ROWS, run_id: str | None = None
) -> list[PromotedBatch]:
    """Promote, batch after batch, every row that was in the inbox when the drain began; rows
    arriving meanwhile wait for the next drain, so a steady feed cannot keep one drain going."""
    return list(_drain(conn, max_rows, run_id))


def drain_continuously(
    conn: Connection,
    seconds: float,
    cadence: float = 1.0,
    max_rows: int = DEFAULT_MAX_ROWS,
    run_id: str | None = None,
) -> Iterator[PromotedBatch | IdleLook]:
    """Drain the inbox once every `cadence` seconds (at once when a drain took longer) for
    `seconds`, then end; a look that finds nothing moves the heartbeat and yields an IdleLook.
    Each batch is yielded as soon as it is committed; stopping anywhere loses nothing."""
    until = time.monotonic() + seconds
    while True:
        started = time.monotonic()
        drained = 0
        for batch in _drain(conn, max_rows, run_id):
            drained += 1
            yield batch
        if not drained:
            record_idle_cycle(conn, run_id)
            yield IdleLook()
        if started + cadence >= until:
            return
        time.sleep(max(0.0, started + cadence - time.monotonic()))


def _drain(conn: Connection, max_rows: int, run_id: str | None) -> Iterator[PromotedBatch]:
    [(high_water,)] = conn.execute("SELECT max(seq) FROM trade_inbox").fetchall()
    conn.commit()
    while high_water is not None:
        batch = promote_batch(conn, max_rows, run_id, up_to_seq=high_water)
        yield batch
        if batch.inbox_rows < max_rows:
            return


def inbox_span(conn: Connection) -> tuple[int, int] | None:
    """The lowest and highest pending inbox `seq`, from the primary key alone: cheap enough to
    ask every few seconds."""
    [(low, high)] = conn.execute("SELECT min(seq), max(seq) FROM trade_inbox").fetchall()
    return None if low is None else (low, high)


def record_idle_cycle(conn: Connection, run_id: str | None = None) -> None:
    """Move the heartbeat for a cycle that found nothing to promote."""
    with conn.transaction():
        conn.execute(query("record_idle_cycle"), {"run_id": run_id})


def beating(conn: Connection, run_ids: list[str], within: float) -> set[str]:
    """Which of these runs recorded a batch or an idle cycle in the last `within` seconds."""
    rows = conn.execute(
        "SELECT DISTINCT run_id FROM ingest_batches"
        " WHERE finished_at > now() - make_interval(secs => %s) AND run_id = ANY(%s)",
        (within, run_ids),
    ).fetchall()
    conn.commit()
    return {run_id for (run_id,) in rows}
