"""Freshness benchmark: the whole platform as `mdp up` runs it (API, Dagster daemon and its drain
runs) under the synthetic feeder at `--rate` ticks/s. While the feed runs, probe ticks for a
symbol of their own measure ack → SSE event and ack → visible in /candles; afterwards the database
tells ack → materialized candles."""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from core.config import Settings
from core.db import Connection, connect
from mdp.bench.up import running_platform
from mdp.processes import spawn_mdp, stop

PROBE = "PROBE"  # a symbol of the probes' own, so the feed does not blur what they measure
PROBES = 60

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


def bench_freshness(
    url: str, settings: Settings, *, seconds: int = 120, rate: float = 1000.0
) -> dict[str, Any]:
    """`rate`: ticks/s the synthetic feeder offers meanwhile (4 sources, batches of 50)."""
    with connect(url) as conn:
        conn.execute("INSERT INTO symbols (symbol) VALUES (%s) ON CONFLICT DO NOTHING", (PROBE,))
    with running_platform(url, feed=False) as platform:
        user, password = platform.credentials
        feed = ["feed", "--url", platform.api, "--rate", str(rate), "--sources", "4"]
        feeder = spawn_mdp(
            [*feed, "--batch-size", "50", "--duration", str(seconds)],
            {"INGEST_USERNAME": user, "INGEST_PASSWORD": password},
            stderr=subprocess.DEVNULL,
        )
        try:
            started = time.monotonic()
            probes = _probe(platform.api, platform.credentials)
            time.sleep(max(0.0, seconds - (time.monotonic() - started)))
        finally:
            stop(feeder)
    with connect(url) as conn:
        lag = ack_to_materialized(conn)
    return {
        **probes,
        "measured_seconds": seconds,
        "feed_ticks_per_s": rate,
        **lag,
    }


def ack_to_materialized(conn: Connection) -> dict[str, Any]:
    """The trades measured, the micro-batches that moved them and their lag from ack to
    materialized, in seconds (None where nothing was measured: no micro-batch ran in time)."""
    [(trades, quantiles, worst, batches)] = conn.execute(ACK_TO_MATERIALIZED).fetchall()
    rounded = [None if q is None else round(q, 2) for q in quantiles or (None, None, None)]
    return {
        "trades_measured": trades,
        "micro_batches": batches,
        "ack_to_materialized_s": {
            **dict(zip(("p50", "p95", "p99"), rounded, strict=True)),
            "max": None if worst is None else round(float(worst), 2),
        },
    }


def _percentiles(seconds: list[float]) -> dict[str, float]:
    q = statistics.quantiles(seconds, n=100, method="inclusive")
    return {"p50": round(q[49] * 1000, 1), "p95": round(q[94] * 1000, 1)}


def _probe(api: str, credentials: tuple[str, str]) -> dict[str, Any]:
    """Post PROBES single ticks for PROBE while the feed runs; for each, the time from its 202 to
    its SSE trade event and to the first /candles answer that counts it (0 when it came first)."""
    arrived: dict[str, float] = {}
    listening = threading.Event()

    def listen() -> None:
        query = {"events": "trade", "symbols": PROBE}
        with (
            contextlib.suppress(httpx.HTTPError),  # the platform stopping ends the stream
            httpx.stream("GET", f"{api}/stream", params=query, timeout=60) as stream,
        ):
            listening.set()
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    arrived.setdefault(json.loads(line[5:])["event_id"], time.perf_counter())

    threading.Thread(target=listen, daemon=True).start()
    listening.wait(10)
    to_event, to_candles = [], []
    with httpx.Client(base_url=api, timeout=10) as client:
        for i in range(PROBES):
            now = datetime.now(UTC)
            tick = {"symbol": PROBE, "price": 100.0 + i, "volume": 1, "ts": now.isoformat(),
                    "source": "PROBE", "event_id": f"probe-{i}"}  # fmt: skip
            assert client.post("/ingest/tick", json=tick, auth=credentials).status_code == 202
            acked = time.perf_counter()
            window = {"symbol": PROBE, "start": (now - timedelta(minutes=2)).isoformat()}
            while (
                sum(
                    c["trade_count"]
                    for c in client.get("/candles", params=window).json()["candles"]
                )
                <= i
            ):
                time.sleep(0.002)
            to_candles.append(time.perf_counter() - acked)
            deadline = time.perf_counter() + 5
            while tick["event_id"] not in arrived and time.perf_counter() < deadline:
                time.sleep(0.001)
            to_event.append(max(0.0, arrived.get(str(tick["event_id"]), float("inf")) - acked))
            time.sleep(0.05)
    return {
        "probes": PROBES,
        "ack_to_sse_event_ms": _percentiles(to_event),
        "ack_to_visible_in_candles_ms": _percentiles(to_candles),
    }
