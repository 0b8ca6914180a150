"""Candles (docs/design.md §5) from micro-batches and from day recomputation equal an independent
SQL computation over canonical trades, whatever the arrival order, duplicates or lateness."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from core.db import Connection
from core.intervals import INTERVALS
from pipelines.candles import recompute_day
from pipelines.ingestion import drain_inbox
from tests.candle_reference import assert_candles_match_trades
from tests.support import at, send, tick

DAY1, DAY2 = date(2026, 11, 19), date(2026, 11, 20)


def hard_day(rng: random.Random, day: date, prefix: str) -> list[dict[str, Any]]:
    """A day of ticks with the awkward cases: bucket and day boundaries, equal timestamps."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    moments = [start + timedelta(seconds=rng.uniform(0, 86_400)) for _ in range(900)]
    moments += [start + timedelta(minutes=m) for m in (0, 5, 15, 60, 61, 1439)]  # on boundaries
    moments += [start + timedelta(days=1, microseconds=-1)]  # the day's last microsecond
    moments += [start + timedelta(hours=9, minutes=30)] * 4  # equal timestamps
    return [
        tick(
            0,
            event_id=f"{prefix}-{i}",
            symbol=rng.choice(["AAPL", "MSFT"]),
            source=rng.choice(["XNAS", "ARCX"]),
            ts=moment.isoformat(),
            price=round(rng.uniform(90, 110), 2),
            volume=rng.randint(1, 500),
        )
        for i, moment in enumerate(moments)
    ]


def test_candles_from_micro_batches_equal_an_independent_computation(
    client: httpx.Client, db: Connection, database_url: str
) -> None:
    rng = random.Random(7)
    today, yesterday = hard_day(rng, DAY2, "t"), hard_day(rng, DAY1, "y")
    resent_same = rng.sample(today, 40)
    resent_changed = [{**t, "price": t["price"] + 1} for t in rng.sample(yesterday, 40)]

    rng.shuffle(today)  # out of order
    send(client, today[:500] + resent_same[:20])
    drain_inbox(db, max_rows=100)  # several micro-batches, each refreshing its buckets
    send(client, today[500:] + yesterday[:300] + resent_changed[:20])
    drain_inbox(db, max_rows=170)
    send(client, yesterday[300:] + resent_same[20:] + resent_changed[20:])  # late, into DAY1
    drain_inbox(db, max_rows=1000)

    assert db.execute("SELECT count(*) FROM trades").fetchone() == (len(today) + len(yesterday),)
    assert_candles_match_trades(db)

    # A day recomputed from scratch (a backfill) gives the same candles.
    db.execute("DELETE FROM candles")
    for day in (DAY1, DAY2):
        recompute_day(db, database_url, day)
    assert_candles_match_trades(db)


def candle(db: Connection, interval: str, symbol: str, start: str) -> tuple[Any, ...] | None:
    return db.execute(
        "SELECT open, high, low, close, volume, trade_count FROM candles"
        ' WHERE "interval" = %s AND symbol = %s AND bucket_start = %s',
        (interval, symbol, start),
    ).fetchone()


def test_equal_timestamps_open_and_close_follow_acceptance_order(
    client: httpx.Client, db: Connection
) -> None:
    moment = at(DAY2, "14:30:00")
    send(client, [tick(i, ts=moment, price=float(p)) for i, p in ((1, 5), (2, 9), (3, 1))])
    drain_inbox(db)
    assert candle(db, "1m", "AAPL", moment) == (5.0, 9.0, 1.0, 1.0, 300.0, 3)

    send(client, [tick(4, ts=moment, price=7.0)])  # accepted later: the new close
    drain_inbox(db)
    for interval in INTERVALS:
        start = {"1h": at(DAY2, "14:00:00"), "1d": at(DAY2, "00:00:00")}.get(interval, moment)
        assert candle(db, interval, "AAPL", start) == (5.0, 9.0, 1.0, 7.0, 400.0, 4), interval


def test_a_late_trade_revises_yesterdays_candles_in_every_interval(
    client: httpx.Client, db: Connection
) -> None:
    send(client, [tick(1, ts=at(DAY1, "23:59:00"), price=10.0)])
    send(client, [tick(2, ts=at(DAY2, "00:00:00"), price=20.0)])
    drain_inbox(db)
    assert candle(db, "1d", "AAPL", at(DAY1, "00:00:00")) == (10.0, 10.0, 10.0, 10.0, 100.0, 1)

    send(client, [tick(3, ts=at(DAY1, "23:59:59.999999"), price=12.0)])  # a day late
    drain_inbox(db)
    assert candle(db, "1d", "AAPL", at(DAY1, "00:00:00")) == (10.0, 12.0, 10.0, 12.0, 200.0, 2)
    assert candle(db, "1h", "AAPL", at(DAY1, "23:00:00")) == (10.0, 12.0, 10.0, 12.0, 200.0, 2)
    assert candle(db, "1d", "AAPL", at(DAY2, "00:00:00")) == (20.0, 20.0, 20.0, 20.0, 100.0, 1)
    assert_candles_match_trades(db)


def test_a_trade_on_a_boundary_opens_the_next_bucket(client: httpx.Client, db: Connection) -> None:
    send(client, [tick(1, ts=at(DAY2, "10:04:59.999999")), tick(2, ts=at(DAY2, "10:05:00"))])
    drain_inbox(db)
    starts = db.execute(
        "SELECT bucket_start FROM candles WHERE \"interval\" = '5m' ORDER BY 1"
    ).fetchall()
    assert starts == [
        (datetime(2026, 11, 20, 10, 0, tzinfo=UTC),),
        (datetime(2026, 11, 20, 10, 5, tzinfo=UTC),),
    ]
