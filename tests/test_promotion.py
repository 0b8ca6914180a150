"""Promotion from the inbox to canonical trades: first accepted wins, nothing lost or doubled."""

from __future__ import annotations

from datetime import UTC, date, datetime

import httpx

from core.db import Connection
from pipelines.candles import recompute_day
from pipelines.ingestion import promote_batch
from tests.support import tick


def trades(db: Connection) -> list[tuple[str, str, float]]:
    return db.execute("SELECT source, event_id, price FROM trades ORDER BY seq").fetchall()


def test_a_resent_tick_is_stored_once_with_its_first_version(
    client: httpx.Client, db: Connection
) -> None:
    assert client.post("/ingest/tick", json=tick(1, price=10.0)).status_code == 202
    batch = [tick(2, price=20.0), tick(1, price=11.0), tick(2, price=21.0), tick(3, price=30.0)]
    assert client.post("/ingest/ticks", json=batch).status_code == 202

    result = promote_batch(db)
    assert (result.inbox_rows, result.promoted, result.duplicates) == (5, 3, 2)
    assert trades(db) == [("XNAS", "e-1", 10.0), ("XNAS", "e-2", 20.0), ("XNAS", "e-3", 30.0)]

    assert client.post("/ingest/tick", json=tick(3, price=31.0)).status_code == 202  # much later
    assert promote_batch(db).promoted == 0
    assert trades(db)[-1] == ("XNAS", "e-3", 30.0)
    assert db.execute("SELECT count(*) FROM trade_inbox").fetchone() == (0,)


def test_batches_are_bounded_recorded_and_report_the_days_they_touch(
    client: httpx.Client, db: Connection
) -> None:
    late = tick(1, symbol="MSFT", ts="2026-11-19T23:59:59.999999Z")
    ticks = [late] + [tick(i, ts=f"2026-11-20T00:00:0{i}Z") for i in range(2, 6)]
    assert client.post("/ingest/ticks", json=ticks).status_code == 202

    first = promote_batch(db, max_rows=3)
    second = promote_batch(db, max_rows=3)
    third = promote_batch(db, max_rows=3)
    assert [b.promoted for b in (first, second, third)] == [3, 2, 0]
    assert first.days == {("AAPL", date(2026, 11, 20)): 2, ("MSFT", date(2026, 11, 19)): 1}
    batches = db.execute(
        "SELECT inbox_rows, promoted, duplicates, first_seq < last_seq FROM ingest_batches"
        " ORDER BY batch_id"
    ).fetchall()
    assert batches == [(3, 3, 0, True), (2, 2, 0, True), (0, 0, 0, None)]
    span = db.execute(
        "SELECT first_trade_at, last_trade_at FROM symbols WHERE symbol = 'MSFT'"
    ).fetchone()
    assert span == (datetime(2026, 11, 19, 23, 59, 59, 999999, tzinfo=UTC),) * 2


def test_the_platform_totals_follow_every_writer(
    client: httpx.Client, db: Connection, database_url: str
) -> None:
    """/status and /metrics read kept totals; they must equal what counting finds, whoever wrote."""

    def kept_and_counted() -> tuple[tuple[int, ...], tuple[int, ...]]:
        kept = db.execute("SELECT trades, duplicates, candles FROM platform_totals").fetchone()
        counted = db.execute(
            "SELECT (SELECT coalesce(sum(promoted), 0) FROM ingest_batches),"
            " (SELECT coalesce(sum(duplicates), 0) FROM ingest_batches),"
            " (SELECT count(*) FROM candles)"
        ).fetchone()
        assert kept is not None and counted is not None
        return tuple(kept), tuple(counted)

    ticks = [tick(i, ts=f"2026-11-20T00:0{i}:00Z") for i in range(1, 6)] + [tick(2, price=9.0)]
    assert client.post("/ingest/ticks", json=ticks).status_code == 202
    promote_batch(db)  # inserts candles, records a batch with a duplicate
    assert client.post("/ingest/tick", json=tick(6, ts="2026-11-20T00:05:30Z")).status_code == 202
    promote_batch(db)  # merges into an existing candle (an update, not a new one)
    promote_batch(db)  # nothing pending: an idle batch
    kept, counted = kept_and_counted()
    assert kept == counted == (6, 1, 5 + 2 + 1 + 1 + 1)  # 1m, 5m (00:00, 00:05), 15m, 1h, 1d

    recompute_day(db, database_url, date(2026, 11, 20))  # deletes and inserts the day
    db.execute(
        "DELETE FROM candles WHERE \"interval\" = '1m' AND bucket_start < '2026-11-20 00:02Z'"
    )
    kept, counted = kept_and_counted()
    assert kept == counted and counted[2] == 9

    db.execute("TRUNCATE candles, ingest_batches")
    assert kept_and_counted() == ((0, 0, 0), (0, 0, 0))
