"""Reconciliation, the platform's end-to-end promise checked after the fact: every acknowledged
tick is one canonical trade, and every stored candle equals the same candle computed by SQL over
the trades. Used by the crash tests and by `mdp bench soak`."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.db import Connection, query
from core.intervals import INTERVALS

EVER = (datetime(1970, 1, 2, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))

# symbol, bucket_start, open, high, low, close, volume, vwap, trade_count, open_at, close_at
# (prices, VWAP and the times of the first and last open/close trade are None where no trade of the
# bucket may set them: sale conditions)
Candle = tuple[
    str, datetime, float | None, float | None, float | None, float | None, float, float | None,
    int, datetime | None, datetime | None,
]  # fmt: skip


def stored_candles(conn: Connection, interval: str) -> list[Candle]:
    return conn.execute(
        "SELECT symbol, bucket_start, open, high, low, close, volume, vwap, trade_count, open_at,"
        ' close_at FROM candles WHERE "interval" = %s ORDER BY symbol, bucket_start',
        (interval,),
    ).fetchall()


def reference_candles(conn: Connection, interval: str) -> list[Candle]:
    params = {
        "interval": interval,
        "width": INTERVALS[interval],
        "start": EVER[0],
        "end": EVER[1],
        "symbol": None,
    }
    return conn.execute(query("candles_by_sql"), params).fetchall()


def candle_differences(conn: Connection) -> list[tuple[str, Candle | None, Candle | None]]:
    """(interval, stored, expected) for every candle that differs from the SQL computation:
    missing or extra buckets, a different open/high/low/close, trade count or time of the first
    or last trade, or a volume or VWAP beyond floating-point summation noise."""
    differences: list[tuple[str, Candle | None, Candle | None]] = []
    for interval in INTERVALS:
        actual = {c[:2]: c for c in stored_candles(conn, interval)}
        expected = {c[:2]: c for c in reference_candles(conn, interval)}
        for key in sorted(actual.keys() | expected.keys()):
            got, want = actual.get(key), expected.get(key)
            if got is None or want is None or not _same(got, want):
                differences.append((interval, got, want))
    return differences


def _same(got: Candle, want: Candle) -> bool:
    return (
        got[2:6] == want[2:6]
        and got[8:] == want[8:]
        and all(close_enough(g, w) for g, w in zip(got[6:8], want[6:8], strict=True))
    )


def close_enough(got: float | None, want: float | None) -> bool:
    """Equal up to floating-point summation order (both None for a VWAP without volume)."""
    if got is None or want is None:
        return got is want
    return math.isclose(got, want, rel_tol=1e-12)


def read_ack_log(path: Path) -> set[tuple[str, str]]:
    """The `(source, event_id)` pairs a feeder's `--ack-log` recorded as acked."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return {(source, event_id) for source, event_id in (line.split("\t") for line in lines)}


def unpromoted(conn: Connection, acked: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """How many acked `(source, event_id)` are not in `trades`, and how many identities `trades`
    holds more than once (none, by its primary key: counted to prove it, not assumed)."""
    with conn.transaction():
        conn.execute("CREATE TEMP TABLE acked (source text, event_id text) ON COMMIT DROP")
        with conn.cursor().copy("COPY acked FROM STDIN") as copy:
            for identity in set(acked):
                copy.write_row(identity)
        [(acked_count, missing)] = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE t.event_id IS NULL)"
            " FROM acked a LEFT JOIN trades t USING (source, event_id)"
        ).fetchall()
        [(duplicated,)] = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM trades GROUP BY source, event_id"
            " HAVING count(*) > 1) d"
        ).fetchall()
    return {"acked": acked_count, "missing": missing, "duplicated": duplicated}
