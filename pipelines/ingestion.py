"""Promotion of acknowledged ticks from `trade_inbox` to canonical `trades`, one micro-batch at a
time. Plain SQL and psycopg: the Dagster job calls it, tests call it directly."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from psycopg.rows import class_row

from mdp.database import Connection, query

# Promoters take this lock so that at most one batch moves at a time, whoever runs it.
PROMOTE_LOCK_KEY = 0x6D6470_B47C
DEFAULT_MAX_ROWS = 50_000


@dataclass(frozen=True)
class TouchedDay:
    symbol: str
    day: date
    min_ts: datetime
    max_ts: datetime
    trades: int


@dataclass(frozen=True)
class PromotedBatch:
    batch_id: int
    inbox_rows: int
    promoted: int
    touched: list[TouchedDay]

    @property
    def duplicates(self) -> int:
        return self.inbox_rows - self.promoted


def promote_batch(
    conn: Connection, max_rows: int = DEFAULT_MAX_ROWS, run_id: str | None = None
) -> PromotedBatch:
    """Move up to `max_rows` inbox rows into `trades` and record the batch, atomically."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PROMOTE_LOCK_KEY,))
        [(batch_id,)] = conn.execute(
            "INSERT INTO ingest_batches (started_at, inbox_rows, promoted, duplicates, run_id)"
            " VALUES (clock_timestamp(), 0, 0, 0, %s) RETURNING batch_id",
            (run_id,),
        ).fetchall()
        with conn.cursor(row_factory=class_row(TouchedDay)) as cur:
            params = {"max_rows": max_rows, "batch_id": batch_id}
            touched = cur.execute(query("promote_batch"), params).fetchall()
        [(inbox_rows, promoted)] = conn.execute(
            "SELECT inbox_rows, promoted FROM ingest_batches WHERE batch_id = %s", (batch_id,)
        ).fetchall()
    return PromotedBatch(batch_id, inbox_rows, promoted, touched)
