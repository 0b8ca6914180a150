"""Candle benchmark: one day of trades materialized in every interval with Polars, against reading
that day into Polars and against PostgreSQL computing the same candles; and the cost of one
incremental micro-batch."""

from __future__ import annotations

import statistics
import time
from datetime import date
from typing import Any

from core.config import Settings
from core.db import connect, query
from core.intervals import INTERVALS, day_window
from mdp.bench import best_of
from pipelines.candles import read_day_trades, recompute_day
from pipelines.ingestion import promote_batch

DAY = date(2026, 1, 2)
MICRO_BATCH = 10_000
ROUNDS = 3
# Trades carry sale conditions in the shares `mdp feed` sends (mdp/feeder.py): 14 % odd lots, 8 %
# sweeps, 4 % odd-lot sweeps, 2 % sweeps through a trade-through exemption, 1 % average-price and
# 1 % derivatively priced prints; the rest are regular. Their rules come from `trade_conditions`.
CONDITIONED = """
    WITH n AS (SELECT i, CASE WHEN i %% 100 < 14 THEN '{37}' WHEN i %% 100 < 22 THEN '{14}'
                              WHEN i %% 100 < 26 THEN '{14,37}' WHEN i %% 100 < 28 THEN '{14,41}'
                              WHEN i %% 100 < 29 THEN '{2}' WHEN i %% 100 < 30 THEN '{10}'
                         END::int2[] AS conditions
               FROM generate_series(0, %(count)s - 1) i)
    SELECT n.i, n.conditions, coalesce(r.high_low, true) AS updates_high_low,
           coalesce(r.open_close, true) AS updates_open_close,
           coalesce(r.volume, true) AS updates_volume
    FROM n LEFT JOIN LATERAL (
        SELECT bool_and(updates_high_low) AS high_low, bool_and(updates_open_close) AS open_close,
               bool_and(updates_volume) AS volume
        FROM trade_conditions WHERE id = ANY(n.conditions)
    ) r ON true
"""

SEED_TRADES = (  # built from constants only
    "INSERT INTO trades (source, event_id, seq, symbol, ts, price, volume, received_at,"  # noqa: S608
    " batch_id, conditions, updates_high_low, updates_open_close, updates_volume)"
    " SELECT 'BENCH', i::text, i - %(count)s, (%(symbols)s::text[])[1 + i %% %(n)s],"
    "   %(start)s + (i / 2) * (interval '1 day' / %(count)s * 2),"
    "   100 + 20 * sin(i / 40000.0) + random(), 1 + floor(random() * 500), now(), 0,"
    "   conditions, updates_high_low, updates_open_close, updates_volume"
    f" FROM ({CONDITIONED}) c"
)
SEED_INBOX = (  # built from constants only
    "INSERT INTO trade_inbox (symbol, ts, price, volume, source, event_id, conditions,"  # noqa: S608
    " updates_high_low, updates_open_close, updates_volume)"
    " SELECT (%(symbols)s::text[])[1 + i %% %(n)s],"
    "   %(end)s - interval '1 hour' + i * (interval '1 hour' / %(count)s),"
    "   100 + random(), 1 + floor(random() * 500), 'MICRO', %(round)s || '-' || i,"
    "   conditions, updates_high_low, updates_open_close, updates_volume"
    f" FROM ({CONDITIONED}) c"
)


def seed_day(url: str, trades: int, symbols: list[str]) -> None:
    """`trades` trades spread over DAY, in pairs sharing a timestamp, 30 % of them with sale
    conditions; accepted (negative `seq`) before anything the inbox will number."""
    with connect(url) as conn:
        conn.execute("TRUNCATE trade_inbox, trades, candles, ingest_batches")
        conn.execute(
            SEED_TRADES,
            {"symbols": symbols, "n": len(symbols), "start": day_window(DAY)[0], "count": trades},
        )
        conn.execute("ANALYZE trades")


def _materialize_all(url: str) -> None:
    with connect(url) as conn:
        recompute_day(conn, url, DAY)


def _dagster_step(url: str) -> tuple[float, float]:
    """Seconds of the `candles` step materializing DAY in a real Dagster run (in process, on an
    ephemeral instance), and of the whole run."""
    import dagster as dg

    from pipelines.defs.candles import candles
    from pipelines.defs.resources import MarketDatabase

    with dg.DagsterInstance.ephemeral() as instance:
        started = time.perf_counter()
        result = dg.materialize(
            [candles],
            instance=instance,
            partition_key=DAY.isoformat(),
            resources={"market_db": MarketDatabase(url=url)},
        )
        run = time.perf_counter() - started
        assert result.success
        moments = {
            entry.dagster_event.event_type_value: entry.timestamp
            for entry in instance.all_logs(result.run_id)
            if entry.dagster_event is not None
        }
    return moments["STEP_SUCCESS"] - moments["STEP_START"], run


def _sql_candles(url: str) -> None:
    start, end = day_window(DAY)
    with connect(url) as conn:
        for interval, width in INTERVALS.items():
            params = {
                "interval": interval,
                "width": width,
                "start": start,
                "end": end,
                "symbol": None,
            }
            conn.execute(query("candles_by_sql"), params).fetchall()


def _micro_batch(url: str, symbols: list[str], round_: int) -> float:
    """Seconds to promote MICRO_BATCH new inbox ticks in the day's last hour and refresh every
    candle they touch."""
    end = day_window(DAY)[1]
    with connect(url) as conn:
        conn.execute(
            SEED_INBOX,
            {"symbols": symbols, "n": len(symbols), "end": end, "count": MICRO_BATCH,
             "round": str(round_)},
        )  # fmt: skip
        conn.commit()
        started = time.perf_counter()
        batch = promote_batch(conn, max_rows=MICRO_BATCH)
        elapsed = time.perf_counter() - started
    assert batch.promoted == MICRO_BATCH
    return elapsed


def bench_candles(url: str, settings: Settings, *, trades: int = 1_000_000) -> dict[str, Any]:
    symbols = settings.symbol_list
    seed_day(url, trades, symbols)
    read = best_of(ROUNDS, lambda: read_day_trades(url, DAY))
    materialize = best_of(ROUNDS, lambda: _materialize_all(url))
    steps = [_dagster_step(url) for _ in range(ROUNDS)]
    step, run = min(steps)
    sql = best_of(ROUNDS, lambda: _sql_candles(url))
    micro = [_micro_batch(url, symbols, r) for r in range(ROUNDS)]
    with connect(url) as conn:
        candles: dict[str, int] = dict(
            conn.execute('SELECT "interval", count(*) FROM candles GROUP BY 1').fetchall()
        )
    return {
        "day_trades": trades,
        "candles_per_interval": candles,
        "read_day_into_polars_s": round(read, 3),
        "materialize_all_intervals_s": round(materialize, 3),
        "ratio_materialize_vs_read": round(materialize / read, 2),
        "dagster_step_s": round(step, 3),
        "ratio_dagster_step_vs_read": round(step / read, 2),
        "dagster_step_overhead_s": round(step - materialize, 3),
        "dagster_run_s": round(run, 3),
        "postgres_sql_all_intervals_s": round(sql, 3),
        "speedup_vs_postgres_sql": round(sql / materialize, 2),
        "micro_batch_trades": MICRO_BATCH,
        "micro_batch_ms": {
            "median": round(statistics.median(micro) * 1000, 1),
            "max": round(max(micro) * 1000, 1),
        },
        "note": "best of 3 for the day-level timings; the Dagster step is the `candles` step of a "
        "real in-process run (STEP_START to STEP_SUCCESS), its overhead what it adds to the "
        "computation (resources, metadata, events); micro-batch = promote + merge into candles",
    }
