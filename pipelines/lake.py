"""The analysts' lake: each day's candles (every interval) and canonical trades copied from
PostgreSQL to Parquet under LAKE_DIR, hive-partitioned, each file replaced atomically (written
beside, then renamed), plus a DuckDB database file whose views read them. No Dagster here."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
from psycopg import sql

from core.db import connect, market_zone
from core.intervals import INTERVALS, day_window
from pipelines.candles import read_arrow

DATABASE_FILE = "lake.duckdb"


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
    day's files."""
    with connect(url) as conn:
        zone = market_zone(conn)
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
