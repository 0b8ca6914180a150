"""Import benchmark: `mdp import` of a generated Polygon flat file (the trades only) against a raw
COPY of the same rows into a plain table, the importer's peak memory, then the backfill of the
days it touched (`mdp backfill`, candles of every interval and the lake)."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import psutil

from core.config import Settings
from core.db import connect, create_database, dagster_storage_url, drop_database, with_database
from core.intervals import CANDLE_ASSETS
from mdp.bench.reference import plain_copy_rate
from mdp.bench.up import DAGSTER_DATABASE
from pipelines.names import LAKE
from pipelines.trade_files import POLYGON_COLUMNS, POLYGON_TRADING_ZONE

DAYS = (date(2026, 1, 5), date(2026, 1, 6))


def polygon_file(path: Path, rows: int, symbols: list[str]) -> None:
    """`rows` trades over DAYS in Polygon's `trades_v1` layout (plain CSV)."""
    start = datetime.combine(DAYS[0], datetime.min.time(), UTC)
    span_ns = (len(DAYS) * 86_400 * 10**9) // rows
    epoch_ns = int(start.timestamp()) * 10**9
    i = pl.int_range(0, rows, eager=True)
    frame = pl.DataFrame(
        {
            "ticker": pl.Series(symbols).gather(i % len(symbols)),
            "conditions": "12,37",
            "correction": 0,
            "exchange": 4 + i % 8,
            "id": i.cast(pl.String),
            "participant_timestamp": epoch_ns + i * span_ns - 1000,
            "price": 100 + (i % 1000) / 100,
            "sequence_number": i,
            "sip_timestamp": epoch_ns + i * span_ns,
            "size": 1 + i % 300,
            "tape": 3,
            "trf_id": None,
            "trf_timestamp": None,
        }
    ).select(POLYGON_COLUMNS)
    frame.write_csv(path)


def copy_references(url: str, path: Path) -> tuple[float, float]:
    """rows/s of a binary COPY of the file's rows, as trades, into a plain table, and into a table
    made like `trades` (its indexes and constraints)."""
    frame = pl.read_csv(path, infer_schema_length=10_000)
    received = datetime.now(UTC)
    trading_zone = ZoneInfo(POLYGON_TRADING_ZONE)
    rows = [
        (
            "polygon",
            f"{t}:{e}::{n}:{datetime.fromtimestamp(s / 1e9, trading_zone):%Y-%m-%d}",
            t,
            datetime.fromtimestamp(s / 1e9, UTC),
            p,
            v,
            i,
            received,
            0,
        )
        for i, (t, e, n, s, p, v) in enumerate(
            frame.select("ticker", "exchange", "id", "sip_timestamp", "price", "size").iter_rows()
        )
    ]
    columns = {
        "source": "text", "event_id": "text", "symbol": "text", "ts": "timestamptz",
        "price": "float8", "volume": "float8", "seq": "int8", "received_at": "timestamptz",
        "batch_id": "int8",
    }  # fmt: skip
    return plain_copy_rate(url, columns, rows), plain_copy_rate(url, columns, rows, like="trades")


def bench_import(url: str, settings: Settings, *, import_rows: int = 5_000_000) -> dict[str, Any]:
    symbols = settings.symbol_list
    with connect(url) as conn:
        conn.execute("TRUNCATE trade_inbox, trades, candles, ingest_batches")
    with tempfile.TemporaryDirectory(prefix="mdp-bench-import-") as scratch:
        path = Path(scratch) / f"{DAYS[0]}.csv"
        polygon_file(path, import_rows, symbols)
        copy_rows_per_s, copy_like_trades_rows_per_s = copy_references(url, path)
        env = {"DATABASE_URL": url, "MDP_DATA_DIR": str(Path(scratch) / "data")}
        started = time.perf_counter()
        imported, peak_mib = _mdp(env, "import", str(path), "--no-backfill")
        import_s = time.perf_counter() - started
        drop_database(url, DAGSTER_DATABASE)
        create_database(url, DAGSTER_DATABASE)
        env["DAGSTER_PG_URL"] = dagster_storage_url(with_database(url, DAGSTER_DATABASE))
        env["LAKE_DIR"] = str(Path(scratch) / "lake")
        started = time.perf_counter()
        assets = ",".join([*CANDLE_ASSETS, LAKE])
        backfilled, _backfill_peak = _mdp(
            env, "backfill", str(DAYS[0]), str(DAYS[-1]), "--select", assets
        )
        backfill_s = time.perf_counter() - started
        size_mib = path.stat().st_size / 2**20
    with connect(url) as conn:
        [(stored,)] = conn.execute("SELECT count(*) FROM trades").fetchall()
    report: dict[str, Any] = {
        "file": f"Polygon trades_v1 CSV, {import_rows:,} rows, {size_mib:.0f} MiB",
        "import_ok": imported == 0,
        "rows_stored": stored,
        "copy_plain_table_rows_per_s": round(copy_rows_per_s),
        "copy_table_like_trades_rows_per_s": round(copy_like_trades_rows_per_s),
        "import_peak_rss_mib": round(peak_mib, 1),
        "backfill_ok": backfilled == 0,
        "backfill_days": len(DAYS),
        "note": "import without its backfill, the command as a user runs it (a process of its "
        "own, from the file on disk); backfill = `mdp backfill` of the days, Dagster started for "
        "it, candles of every interval and the lake; peak RSS sampled every 0.1 s; a failed "
        "import or backfill gets no figure",
    }
    if imported == 0:  # rows stored per second: only an import that succeeded did work
        report["import_s"] = round(import_s, 1)
        report["import_rows_per_s"] = round(stored / import_s)
        report["ratio_import_vs_copy"] = round(stored / import_s / copy_rows_per_s, 3)
        report["ratio_import_vs_copy_like_trades"] = round(
            stored / import_s / copy_like_trades_rows_per_s, 3
        )
    if backfilled == 0:
        report["backfill_s"] = round(backfill_s, 1)
    return report


def _mdp(env: dict[str, str], *args: str) -> tuple[int, float]:
    """Run `mdp ARGS…`; its exit status and its peak resident memory (MiB)."""
    process = psutil.Popen(
        [sys.executable, "-m", "mdp", *args],
        env={**os.environ, **env},
        stdout=sys.stderr,  # stdout carries the JSON report
    )
    peak = 0
    while process.poll() is None:
        with contextlib.suppress(psutil.Error):
            peak = max(peak, process.memory_info().rss)
        time.sleep(0.1)
    return process.returncode, peak / 2**20
