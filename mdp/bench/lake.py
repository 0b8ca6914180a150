"""Lake benchmark: a 30-day analyst query over 1m candles in DuckDB on the Parquet lake against the
same query in PostgreSQL."""

from __future__ import annotations

import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb

from core.config import Settings
from core.db import connect
from core.intervals import day_window
from mdp.bench import best_of
from pipelines.lake import define_views, export_day

FIRST_DAY = date(2026, 1, 1)
DAYS = 30
ROUNDS = 5

# Per symbol and day over the month: VWAP, range, volume and trade count from 1m candles.
DUCKDB_QUERY = """
SELECT symbol, date, sum(vwap * volume) / sum(volume) AS vwap, max(high) AS high, min(low) AS low,
       sum(volume) AS volume, sum(trade_count) AS trades
FROM candles WHERE "interval" = '1m' GROUP BY ALL ORDER BY ALL
"""
POSTGRES_QUERY = """
SELECT symbol, (bucket_start AT TIME ZONE 'UTC')::date AS date,
       sum(vwap * volume) / sum(volume) AS vwap, max(high) AS high, min(low) AS low,
       sum(volume) AS volume, sum(trade_count) AS trades
FROM candles WHERE "interval" = '1m' AND bucket_start >= %(start)s AND bucket_start < %(end)s
GROUP BY 1, 2 ORDER BY 1, 2
"""


def _seed_month(url: str, symbols: list[str]) -> int:
    """30 days of synthetic 1m candles for every symbol, written straight into `candles`."""
    start, end = day_window(FIRST_DAY)[0], day_window(FIRST_DAY + timedelta(days=DAYS))[0]
    with connect(url) as conn:
        conn.execute("TRUNCATE trades, candles")
        conn.execute(
            'INSERT INTO candles (symbol, "interval", bucket_start, open, high, low, close,'
            " volume, vwap, trade_count, open_at, close_at)"
            " SELECT s, '1m', b, p, p + 0.5, p - 0.5, p + 0.1, 100 + (i %% 50), p + 0.05,"
            "        1 + i %% 9, b, b + interval '59 seconds'"
            " FROM unnest(%(symbols)s::text[]) s,"
            "      generate_series(%(start)s::timestamptz,"
            "                      %(end)s::timestamptz - interval '1 minute',"
            "                      interval '1 minute') WITH ORDINALITY AS g(b, i),"
            "      LATERAL (SELECT 100 + 10 * sin(i / 500.0)) AS price(p)",
            {"symbols": symbols, "start": start, "end": end},
        )
        conn.execute("ANALYZE candles")
        [(rows,)] = conn.execute("SELECT count(*) FROM candles").fetchall()
    return int(rows)


def bench_lake(url: str, settings: Settings) -> dict[str, Any]:
    rows = _seed_month(url, settings.symbol_list)
    start, end = day_window(FIRST_DAY)[0], day_window(FIRST_DAY + timedelta(days=DAYS))[0]
    with tempfile.TemporaryDirectory(prefix="mdp-lake-") as folder:
        lake = Path(folder)
        started = time.perf_counter()
        for n in range(DAYS):
            export_day(url, lake, FIRST_DAY + timedelta(days=n))
        export_s = time.perf_counter() - started
        with duckdb.connect() as duck, connect(url) as conn:
            define_views(duck, lake)
            lake_answer = duck.execute(DUCKDB_QUERY).fetchall()
            pg_answer = conn.execute(POSTGRES_QUERY, {"start": start, "end": end}).fetchall()
            assert len(lake_answer) == len(pg_answer) == DAYS * len(settings.symbol_list)
            duck_s = best_of(ROUNDS, lambda: duck.execute(DUCKDB_QUERY).fetchall())
            pg_s = best_of(
                ROUNDS,
                lambda: conn.execute(POSTGRES_QUERY, {"start": start, "end": end}).fetchall(),
            )
    return {
        "days": DAYS,
        "minute_candles": rows,
        "export_30_days_s": round(export_s, 2),
        "duckdb_on_lake_ms": round(duck_s * 1000, 1),
        "postgres_ms": round(pg_s * 1000, 1),
        "speedup_duckdb_vs_postgres": round(pg_s / duck_s, 1),
        "query": "per symbol and day: VWAP, high, low, volume, trades from 1m candles",
    }
