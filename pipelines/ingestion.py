"""Micro-batches: acknowledged ticks move from `trade_inbox` to canonical `trades`, and the candles
of every bucket they land in are brought up to date, in one transaction. Killed at any point, a
batch leaves either everything or nothing behind. Plain SQL, psycopg and Polars: the Dagster job
calls it, tests call it directly."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date

import polars as pl

from mdp.database import Connection, query
from pipelines.candles import lock_candles, refresh_buckets

DEFAULT_MAX_ROWS = 50_000
NO_LIMIT = 2**63 - 1


@dataclass(frozen=True)
class PromotedBatch:
    batch_id: int
    inbox_rows: int
    promoted: int
    days: Counter[tuple[str, date]]  # trades promoted per (symbol, UTC day)
    candles: dict[str, int] = field(default_factory=dict)  # candles written per interval

    @property
    def duplicates(self) -> int:
        return self.inbox_rows - self.promoted


def promote_batch(
    conn: Connection,
    max_rows: int = DEFAULT_MAX_ROWS,
    run_id: str | None = None,
    up_to_seq: int = NO_LIMIT,
) -> PromotedBatch:
    """Move the oldest `max_rows` inbox rows (up to `up_to_seq`) into `trades`, record the batch
    and refresh the candles they touch, atomically."""
    with conn.transaction():
        lock_candles(conn)
        [(batch_id,)] = conn.execute(
            "INSERT INTO ingest_batches (started_at, inbox_rows, promoted, duplicates, run_id)"
            " VALUES (clock_timestamp(), 0, 0, 0, %s) RETURNING batch_id",
            (run_id,),
        ).fetchall()
        params = {"max_rows": max_rows, "up_to_seq": up_to_seq, "batch_id": batch_id}
        touched = pl.DataFrame(
            conn.execute(query("promote_batch"), params).fetchall(),
            schema={"symbol": pl.String, "minute": pl.Datetime("us", "UTC"), "trades": pl.Int64},
            orient="row",
        )
        candles = refresh_buckets(conn, touched) if touched.height else {}
        [(inbox_rows, promoted)] = conn.execute(
            "SELECT inbox_rows, promoted FROM ingest_batches WHERE batch_id = %s", (batch_id,)
        ).fetchall()
    days: Counter[tuple[str, date]] = Counter()
    for symbol, minute, trades in touched.iter_rows():
        days[symbol, minute.date()] += trades
    return PromotedBatch(batch_id, inbox_rows, promoted, days, candles)


def drain_inbox(
    conn: Connection,
    max_rows: int = DEFAULT_MAX_ROWS,
    run_id: str | None = None,
    max_batches: int | None = None,
) -> list[PromotedBatch]:
    """Promote, batch after batch, every row that was in the inbox when the drain began (at most
    `max_batches` batches); rows arriving meanwhile wait for the next drain, so a steady feed
    cannot keep one drain going."""
    [(high_water,)] = conn.execute("SELECT max(seq) FROM trade_inbox").fetchall()
    conn.commit()
    if high_water is None:
        return []
    batches: list[PromotedBatch] = []
    while max_batches is None or len(batches) < max_batches:
        batch = promote_batch(conn, max_rows, run_id, up_to_seq=high_water)
        batches.append(batch)
        if batch.inbox_rows < max_rows:
            break
    return batches


def inbox_span(conn: Connection) -> tuple[int, int] | None:
    """The lowest and highest pending inbox `seq`, from the primary key alone: cheap enough to
    ask every few seconds."""
    [(low, high)] = conn.execute("SELECT min(seq), max(seq) FROM trade_inbox").fetchall()
    return None if low is None else (low, high)


def record_idle_cycle(conn: Connection) -> None:
    """Move the heartbeat for a cycle that found nothing to promote."""
    with conn.transaction():
        conn.execute(query("record_idle_cycle"))
