"""Freshness benchmark: the whole platform as `mdp up` runs it (defaults: feeder, sensor interval,
Dagster daemon), measuring how long an acknowledged trade takes to reach materialized candles."""

from __future__ import annotations

import signal
import sys
import tempfile
import time
from typing import Any

from mdp.database import connect, create_database, dagster_storage_url, with_database
from mdp.processes import free_port, spawn_mdp, stop, wait_until_live
from mdp.settings import Settings

# Acceptance (the inbox row's received_at, just before the 202) to the commit of the micro-batch
# that moved the trade into `trades` and its candles into `candles`: one transaction, so one time.
# Trades accepted before the first micro-batch finished waited for Dagster to start: left out.
ACK_TO_MATERIALIZED = """
SELECT count(*),
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY lag),
       max(lag),
       (SELECT count(*) FROM ingest_batches WHERE inbox_rows > 0)
FROM (
    SELECT extract(epoch FROM b.finished_at - t.received_at) AS lag
    FROM trades t JOIN ingest_batches b USING (batch_id)
    WHERE t.received_at > (SELECT min(finished_at) FROM ingest_batches WHERE inbox_rows > 0)
) l
"""


def bench_freshness(url: str, settings: Settings, *, seconds: int, **_: Any) -> dict[str, Any]:
    dagster_db = "mdp_bench_dagster"
    create_database(url, dagster_db)
    with connect(url) as conn:
        conn.execute("TRUNCATE trade_inbox, trades, candles, ingest_batches")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="mdp-bench-") as data_dir:
        env = {
            "DATABASE_URL": url,
            "DAGSTER_PG_URL": dagster_storage_url(with_database(url, dagster_db)),
            "MDP_DATA_DIR": data_dir,
            "INGEST_USERNAME": "",
            "INGEST_PASSWORD": "",
        }
        args = ["up", "--port", str(port), "--dagster-port", str(free_port())]
        platform = spawn_mdp(args, env, stdout=sys.stderr)  # stdout carries the JSON report
        try:
            wait_until_live(f"http://127.0.0.1:{port}", platform, timeout=120)
            _wait_for_first_batch(url, timeout=180)
            time.sleep(seconds)
        finally:
            stop(platform, signal.SIGTERM, timeout=30)
    with connect(url) as conn:
        [(trades, (p50, p95, p99), worst, batches)] = conn.execute(ACK_TO_MATERIALIZED).fetchall()
    return {
        "measured_seconds": seconds,
        "ingestion_interval_seconds": settings.ingestion_interval_seconds,
        "trades_measured": trades,
        "micro_batches": batches,
        "ack_to_materialized_s": {
            "p50": round(p50, 2),
            "p95": round(p95, 2),
            "p99": round(p99, 2),
            "max": round(float(worst), 2),
        },
    }


def _wait_for_first_batch(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT 1 FROM ingest_batches WHERE inbox_rows > 0").fetchone()
            if row:
                return
            time.sleep(1)
    raise TimeoutError("no micro-batch ran: is the Dagster daemon starting?")
