"""Compare stored candles with the same candles computed by PostgreSQL SQL over `trades`."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mdp.database import Connection, query
from mdp.intervals import INTERVALS

EVER = (datetime(1970, 1, 2, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
Candle = tuple[str, datetime, float, float, float, float, float, float, int, datetime, datetime]


def stored(db: Connection, interval: str) -> list[Candle]:
    return db.execute(
        "SELECT symbol, bucket_start, open, high, low, close, volume, vwap, trade_count, open_at,"
        ' close_at FROM candles WHERE "interval" = %s ORDER BY symbol, bucket_start',
        (interval,),
    ).fetchall()


def reference(db: Connection, interval: str) -> list[Candle]:
    params = {"width": INTERVALS[interval], "start": EVER[0], "end": EVER[1], "symbol": None}
    return db.execute(query("candles_by_sql"), params).fetchall()


def assert_candles_match_trades(db: Connection) -> None:
    """Every interval: the same buckets, identical open/high/low/close, trade counts and times of
    the first and last trade; volume and vwap equal up to floating-point summation order."""
    for interval in INTERVALS:
        actual, expected = stored(db, interval), reference(db, interval)
        assert [c[:2] for c in actual] == [c[:2] for c in expected], interval
        for got, want in zip(actual, expected, strict=True):
            assert got[2:6] == want[2:6], (interval, got, want)
            assert got[8:] == want[8:], (interval, got, want)  # trade count, first and last time
            assert got[6:8] == pytest.approx(want[6:8], rel=1e-12), (interval, got, want)
