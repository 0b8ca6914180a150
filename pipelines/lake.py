"""The analysts' lake: each day's candles (every interval) and canonical trades copied from
PostgreSQL to Parquet under LAKE_DIR, hive-partitioned, each file replaced atomically (written
beside, then renamed), plus a DuckDB database file whose views read them; which exported days
PostgreSQL has changed since (`lake_exports`), and each day's totals on both sides, to compare
them. No Dagster here."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import date, timedelta, tzinfo
from pathlib import Path
from typing import Any, Literal

import duckdb
import polars as pl
from psycopg import sql

from core.db import connect, market_zone
from core.intervals import INTERVALS, day_window
from pipelines.candles import read_arrow

DATABASE_FILE = "lake.duckdb"
LAKE_LOCK = 0x6C616B65  # "lake": pg_advisory_lock(LAKE_LOCK, day) lets one export of a day run
FRESHNESS_WINDOW = timedelta(minutes=10)
"""A change to a day reaches the lake within this."""
REEXPORT_GAP = timedelta(minutes=2)
"""A day is exported again at most this often: a replay of a past day, or a feed that is all
late, costs an export of the day every two minutes, not one per sensor tick. A late trade after a
quiet spell is exported at the next tick (30 s); within a stream, in REEXPORT_GAP plus a tick."""

# The lake holds the day as of `changes` (read before the day's rows); a change committed since
# leaves it stale, since no earlier than that read.
RECORD_EXPORT = """
INSERT INTO lake_exports AS l (day, exported, exported_at)
VALUES (%(day)s, %(changes)s, clock_timestamp())
ON CONFLICT (day) DO UPDATE
SET exported = greatest(l.exported, excluded.exported),
    exported_at = excluded.exported_at,
    stale_since = CASE WHEN l.changes > greatest(l.exported, excluded.exported)
                       THEN greatest(l.stale_since, %(read_at)s) END
"""


@dataclass(frozen=True)
class ExportedDay:
    day: date
    candles: dict[str, int]
    trades: int


def candle_file(lake: Path, interval: str, day: date) -> Path:
    return lake / "candles" / f"interval={interval}" / f"date={day.isoformat()}" / "part.parquet"


def trade_file(lake: Path, day: date) -> Path:
    return lake / "trades" / f"date={day.isoformat()}" / "part.parquet"


def _replace(path: Path, frame: pl.DataFrame) -> None:
    """Write `frame` to `path` atomically; an empty frame removes the file."""
    if frame.is_empty():
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    frame.write_parquet(partial, compression="zstd", statistics=True)
    os.replace(partial, path)


def export_day(url: str, lake: Path, day: date) -> ExportedDay:
    """Copy one market day (docs/design.md §5) of candles and trades to the lake, replacing that
    day's files, and record in `lake_exports` the day's change count as it was before the read: a
    change committed later leaves the day stale, to be exported again. Exports of one day take
    turns, so an older read never replaces a newer one."""
    with connect(url, autocommit=True) as conn:
        zone = market_zone(conn)
        conn.execute("SELECT pg_advisory_lock(%s, %s)", (LAKE_LOCK, day.toordinal()))
        try:
            [(changes, read_at)] = conn.execute(
                "SELECT coalesce((SELECT changes FROM lake_exports WHERE day = %s), 0),"
                " clock_timestamp()",
                (day,),
            ).fetchall()
            exported = _copy_day(url, lake, day, zone)
            conn.execute(RECORD_EXPORT, {"day": day, "changes": changes, "read_at": read_at})
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LAKE_LOCK, day.toordinal()))
    return exported


def _copy_day(url: str, lake: Path, day: date, zone: tzinfo) -> ExportedDay:
    start, end = (sql.Literal(bound) for bound in day_window(day, zone))
    candles = read_arrow(
        url,
        sql.SQL(
            'SELECT "interval", symbol, bucket_start, open, high, low, close, volume, vwap,'
            " trade_count FROM candles WHERE bucket_start >= {} AND bucket_start < {}"
            " ORDER BY symbol, bucket_start"
        ).format(start, end),
    )
    counts = {}
    for interval in INTERVALS:
        part = candles.filter(pl.col("interval") == interval).drop("interval")
        _replace(candle_file(lake, interval, day), part)
        counts[interval] = part.height
    trades = read_arrow(
        url,
        sql.SQL(
            "SELECT symbol, ts, price, volume, source, event_id, seq, conditions,"
            " updates_high_low, updates_open_close, updates_volume, cancelled_at FROM trades"
            " WHERE ts >= {} AND ts < {} ORDER BY ts, seq"
        ).format(start, end),
    )
    _replace(trade_file(lake, day), trades)
    return ExportedDay(day, counts, trades.height)


def stale_days(url: str, before: date) -> list[date]:
    """The days before `before` that PostgreSQL changed since the lake last exported them (or
    that it changed and the lake never held), oldest first; a day exported less than
    REEXPORT_GAP ago waits for it to pass."""
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT day FROM lake_exports WHERE day < %s AND changes > coalesce(exported, -1)"
            " AND (exported_at IS NULL OR exported_at < clock_timestamp() - %s) ORDER BY day",
            (before, REEXPORT_GAP),
        ).fetchall()
    return [day for (day,) in rows]


def exported_days(url: str, lake: Path) -> list[date]:
    """The days the lake holds: those with files, and those exported empty."""
    days = {
        date.fromisoformat(folder.name.removeprefix("date="))
        for folder in (*lake.glob("candles/*/date=*"), *lake.glob("trades/date=*"))
    }
    with connect(url) as conn:
        rows = conn.execute("SELECT day FROM lake_exports WHERE exported IS NOT NULL").fetchall()
    return sorted(days | {day for (day,) in rows})


# --- the lake against the database ---------------------------------------------------------------

# Per day, what both sides must agree on: the trades (all of them, the cancelled ones, their volume
# and the last acceptance number) and, per interval, the candles' count and sums (trade counts,
# volume, prices: a revised high, a restated bucket, a lost or doubled row all move one of them).
CANDLE_SUMS = "count(*), sum(trade_count), sum(volume), sum(open), sum(high), sum(low), sum(close)"
CANDLE_MEASURES = ("candles", "trade_count", "volume", "open", "high", "low", "close")
TRADE_SUMS = "count(*), count(cancelled_at), sum(volume), max(seq)"
TRADE_MEASURES = ("trades", "cancelled", "volume", "max_seq")

Totals = dict[str, float]


def _totals(candles: dict[str, tuple[Any, ...]], trades: tuple[Any, ...]) -> Totals:
    totals = {f"trades.{m}": float(v or 0) for m, v in zip(TRADE_MEASURES, trades, strict=True)}
    for interval, values in candles.items():
        for measure, value in zip(CANDLE_MEASURES, values, strict=True):
            totals[f"candles_{interval}.{measure}"] = float(value or 0)
    return totals


def database_totals(url: str, day: date) -> Totals:
    """The day's totals in PostgreSQL, over the rows `export_day` copies."""
    with connect(url) as conn:
        window = day_window(day, market_zone(conn))
        rows = conn.execute(
            f'SELECT "interval", {CANDLE_SUMS} FROM candles'  # noqa: S608 (constant text)
            " WHERE bucket_start >= %s AND bucket_start < %s GROUP BY 1",
            window,
        ).fetchall()
        [trades] = conn.execute(
            f"SELECT {TRADE_SUMS} FROM trades WHERE ts >= %s AND ts < %s",  # noqa: S608
            window,
        ).fetchall()
    return _totals({interval: tuple(values) for interval, *values in rows}, trades)


def lake_totals(lake: Path, day: date) -> Totals:
    """The day's totals in the lake's files (a day without a file has none)."""
    candles = {}
    trades: tuple[Any, ...] = (0, 0, 0, 0)
    with duckdb.connect() as conn:
        for interval in INTERVALS:
            path = candle_file(lake, interval, day)
            if path.exists():
                candles[interval] = _file_sums(conn, path, CANDLE_SUMS)
        path = trade_file(lake, day)
        if path.exists():
            trades = _file_sums(conn, path, TRADE_SUMS)
    return _totals(candles, trades)


def _file_sums(conn: duckdb.DuckDBPyConnection, path: Path, sums: str) -> tuple[Any, ...]:
    found = conn.execute(f"SELECT {sums} FROM read_parquet(?)", [str(path)]).fetchone()  # noqa: S608
    assert found is not None
    return tuple(found)


def differences(expected: Totals, found: Totals) -> dict[str, tuple[float, float]]:
    """The totals that differ, as (database, lake); sums of floating-point values are compared
    to a relative 1e-9, since each side adds in its own order."""
    return {
        key: (expected.get(key, 0.0), found.get(key, 0.0))
        for key in sorted(expected.keys() | found.keys())
        if not math.isclose(expected.get(key, 0.0), found.get(key, 0.0), rel_tol=1e-9, abs_tol=1e-6)
    }


@dataclass(frozen=True)
class DayCheck:
    day: date
    state: Literal["current", "on_its_way", "overdue"]
    differences: dict[str, tuple[float, float]]  # of a current day: (database, lake)


def check_day(url: str, lake: Path, day: date) -> DayCheck:
    """The lake's day against PostgreSQL's. A day changed since its export is on its way (the
    lake is behind, as designed) or, stale for longer than FRESHNESS_WINDOW, overdue; a day the
    lake holds as of its last change is compared, unless a change commits meanwhile."""
    before = _export_state(url, day)
    if before[1]:
        return DayCheck(day, "overdue" if before[2] else "on_its_way", {})
    found = differences(database_totals(url, day), lake_totals(lake, day))
    if _export_state(url, day) != before:
        return DayCheck(day, "on_its_way", {})
    return DayCheck(day, "current", found)


def _export_state(url: str, day: date) -> tuple[int, bool, bool]:
    """The day's change count, whether the lake is behind it, and whether for too long."""
    with connect(url) as conn:
        row = conn.execute(
            "SELECT changes, changes > coalesce(exported, -1),"
            " coalesce(stale_since < clock_timestamp() - %s, false)"
            " FROM lake_exports WHERE day = %s",
            (FRESHNESS_WINDOW, day),
        ).fetchone()
    return row or (0, False, False)


def define_views(conn: duckdb.DuckDBPyConnection, lake: Path) -> None:
    """Views `candles` and `trades` over the lake's Parquet files (empty views while it has
    none)."""
    sources = {
        "candles": (lake / "candles" / "*" / "*" / "*.parquet", "interval VARCHAR, date DATE, "
                    "symbol VARCHAR, bucket_start TIMESTAMPTZ, open DOUBLE, high DOUBLE, "
                    "low DOUBLE, close DOUBLE, volume DOUBLE, vwap DOUBLE, trade_count BIGINT"),
        "trades": (lake / "trades" / "*" / "*.parquet", "date DATE, symbol VARCHAR, "
                   "ts TIMESTAMPTZ, price DOUBLE, volume DOUBLE, source VARCHAR, "
                   "event_id VARCHAR, seq BIGINT, conditions SMALLINT[], "
                   "updates_high_low BOOLEAN, updates_open_close BOOLEAN, "
                   "updates_volume BOOLEAN, cancelled_at TIMESTAMPTZ"),
    }  # fmt: skip
    for view, (pattern, columns) in sources.items():
        if any(lake.glob(str(pattern.relative_to(lake)))):
            # Views take no parameters: the path (LAKE_DIR, operator-set) is quoted as a literal.
            path = str(pattern).replace("'", "''")
            conn.execute(
                f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM read_parquet('{path}',"  # noqa: S608
                " hive_partitioning = true, hive_types_autocast = true, union_by_name = true)"
            )
        else:
            placeholders = ", ".join(
                f"NULL::{c.split()[1]} AS {c.split()[0]}" for c in columns.split(", ")
            )
            conn.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT {placeholders} WHERE false")


def refresh_database_file(lake: Path) -> Path:
    """(Re)define the views in LAKE_DIR/lake.duckdb, for analysts' DuckDB CLI or Python."""
    lake.mkdir(parents=True, exist_ok=True)
    path = lake / DATABASE_FILE
    with duckdb.connect(str(path)) as conn:
        define_views(conn, lake.resolve())
    return path
