"""Freshness benchmark: the whole platform as `mdp up` runs it (API, Dagster daemon and its drain
runs) under the synthetic feeder at `--rate` ticks/s, and a second `mdp serve` on the same
database, on a port of its own: the reader. While the feed runs, PROBES ticks of a symbol of their
own are posted one at a time to the platform's API (the one that acks) and looked for on the
reader only, so what is measured crosses processes through the database (its commit and NOTIFY),
never one process's memory of its own commits.

What is measured, from when to when:
- `probe_ack_ms`: from just before a probe's POST to its 202.
- `send_to_sse_event_ms`: from just before a probe's POST to the moment its trade event arrived
  on the reader's `/stream`.
- `send_to_visible_in_candles_ms`: from just before a probe's POST to the first answer of the
  reader's `/candles` that counts it; the reader is asked from the 202 on, one request at a time,
  so a probe visible before its ack counts the time of that first answer, never 0.
- `ack_to_materialized_s` (from the database afterwards): from a trade's acceptance (the inbox
  row's received_at, just before its 202) to the commit of the micro-batch that made it canonical.
- The feed's own account: ticks acked, and what was refused: the feeder's retries and rejected
  ticks (from its closing log line) and the platform API's answers to `POST /ingest/ticks` by
  status (its `mdp_http_requests_total`). A run with refusals says so in `refusals`, next to its
  figures."""

from __future__ import annotations

import contextlib
import json
import re
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from core.config import Settings
from core.db import Connection, connect
from mdp.bench.up import running_platform
from mdp.processes import api_server, spawn_mdp, stop

PROBE = "PROBE"  # a symbol of the probes' own, so the feed does not blur what they measure
PROBES = 60
VISIBLE_TIMEOUT = 30.0  # seconds a probe may take to show in the reader's /candles
EVENT_TIMEOUT = 5.0  # seconds a probe's event may take to arrive once it shows in /candles

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
    with (
        running_platform(url, feed=False) as platform,
        tempfile.TemporaryDirectory(prefix="mdp-bench-reader-") as data_dir,
        tempfile.TemporaryFile() as feeder_log,
    ):
        user, password = platform.credentials
        env = {"DATABASE_URL": url, "MDP_DATA_DIR": data_dir}
        env |= {"INGEST_USERNAME": user, "INGEST_PASSWORD": password, "MDP_LOG_LEVEL": "INFO"}
        with api_server(env) as reader:
            feed = ["feed", "--url", platform.api, "--rate", str(rate), "--sources", "4"]
            feeder = spawn_mdp(
                [*feed, "--batch-size", "50", "--duration", str(seconds)],
                env,
                stderr=feeder_log,
            )
            try:
                started = time.monotonic()
                probes = _probe(platform.api, reader, platform.credentials)
                with contextlib.suppress(subprocess.TimeoutExpired):  # then stopped below
                    feeder.wait(max(0.0, seconds - (time.monotonic() - started)) + 15)
            finally:
                stop(feeder)
        statuses = ingest_statuses(
            httpx.get(f"{platform.api}/metrics", headers={"Accept": "text/plain"}).text
        )
        feeder_log.seek(0)
        fed = feeder_stats(feeder_log.read().decode(errors="replace"))
    with connect(url) as conn:
        lag = ack_to_materialized(conn)
    refused = {
        "feeder_retries": None if fed is None else fed["retries"],
        "feeder_rejected_ticks": None if fed is None else fed["rejected"],
        "ingest_ticks_not_202": sum(n for status, n in statuses.items() if status != "202"),
        "probes_refused": probes["probes_refused"],
    }
    return {
        "reader": "a second `mdp serve` on the same database: every read went to it, never to"
        " the API that acked",
        **probes,
        "measured_seconds": seconds,
        "feed_ticks_per_s": rate,
        "feed_acked_ticks_per_s": None if fed is None else round(fed["ticks"] / seconds, 1),
        "feeder": fed,
        "ingest_ticks_statuses": statuses,
        "refusals": {**refused, "verdict": refusals_verdict(refused)},
        **lag,
    }


def feeder_stats(log: str) -> dict[str, int] | None:
    """The counts of the feeder's closing line (`feeder done: FeedStats(…)`); None when it never
    wrote one (it was killed)."""
    found = re.findall(r"feeder done: FeedStats\((.*)\)", log)
    if not found:
        return None
    return {name: int(value) for name, value in re.findall(r"(\w+)=(\d+)", found[-1])}


def ingest_statuses(metrics: str) -> dict[str, int]:
    """Answers to `POST /ingest/ticks` by status, from the API's Prometheus text."""
    statuses: dict[str, int] = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "mdp_http_requests_total"
                and labels.get("route") == "/ingest/ticks"
                and labels.get("method") == "POST"
            ):
                statuses[labels["status"]] = statuses.get(labels["status"], 0) + int(sample.value)
    return dict(sorted(statuses.items()))


def refusals_verdict(refused: dict[str, int | None]) -> str:
    """What the refusals mean for the figures of the run."""
    if any(n is None for n in refused.values()):
        return "unknown: the feeder left no account of its refusals; read the figures with care"
    if not any(refused.values()):
        return "none: every tick and probe was accepted at the first attempt"
    return (
        "the platform refused work during this run: its figures were measured while ticks were"
        " turned away or retried, not at the offered rate"
    )


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
    if len(seconds) < 2:
        return {}
    q = statistics.quantiles(seconds, n=100, method="inclusive")
    return {"p50": round(q[49] * 1000, 1), "p95": round(q[94] * 1000, 1)}


def _probe(writer: str, reader: str, credentials: tuple[str, str]) -> dict[str, Any]:
    """Post PROBES single ticks for PROBE to `writer` while the feed runs; for each, the time from
    its sending to its 202, to its trade event on `reader`'s /stream and to the first answer of
    `reader`'s /candles that counts it."""
    arrived: dict[str, float] = {}
    listening = threading.Event()

    def listen() -> None:
        query = {"events": "trade", "symbols": PROBE}
        with (
            contextlib.suppress(httpx.HTTPError),  # the reader stopping ends the stream
            httpx.stream("GET", f"{reader}/stream", params=query, timeout=60) as stream,
        ):
            listening.set()
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    arrived.setdefault(json.loads(line[5:])["event_id"], time.perf_counter())

    threading.Thread(target=listen, daemon=True).start()
    if not listening.wait(10):
        raise RuntimeError(f"the reader's /stream at {reader} did not answer")
    to_ack, to_event, to_candles = [], [], []
    refused = never_visible = without_event = accepted = 0
    with (
        httpx.Client(base_url=writer, timeout=10, auth=credentials) as posting,
        httpx.Client(base_url=reader, timeout=10) as reading,
    ):
        for i in range(PROBES):
            now = datetime.now(UTC)
            tick = {"symbol": PROBE, "price": 100.0 + i, "volume": 1, "ts": now.isoformat(),
                    "source": "PROBE", "event_id": f"probe-{i}"}  # fmt: skip
            sent = time.perf_counter()
            if posting.post("/ingest/tick", json=tick).status_code != 202:
                refused += 1
                continue
            accepted += 1
            to_ack.append(time.perf_counter() - sent)
            window = {"symbol": PROBE, "start": (now - timedelta(minutes=2)).isoformat()}
            deadline = time.perf_counter() + VISIBLE_TIMEOUT
            while _trades_in(reading, window) < accepted:
                if time.perf_counter() > deadline:
                    never_visible += 1
                    break
                time.sleep(0.002)
            else:
                to_candles.append(time.perf_counter() - sent)
            deadline = time.perf_counter() + EVENT_TIMEOUT
            while tick["event_id"] not in arrived and time.perf_counter() < deadline:
                time.sleep(0.001)
            if tick["event_id"] in arrived:
                to_event.append(arrived[str(tick["event_id"])] - sent)
            else:
                without_event += 1
            time.sleep(0.05)
    return {
        "probes": PROBES,
        "probes_refused": refused,
        "probes_never_visible": never_visible,
        "probes_without_sse_event": without_event,
        "probe_ack_ms": _percentiles(to_ack),
        "send_to_sse_event_ms": _percentiles(to_event),
        "send_to_visible_in_candles_ms": _percentiles(to_candles),
    }


def _trades_in(client: httpx.Client, window: dict[str, str]) -> int:
    """The trades the reader's /candles counts in `window` (0 while it answers with an error)."""
    answer = client.get("/candles", params=window)
    if answer.status_code != 200:
        return 0
    return sum(c["trade_count"] for c in answer.json()["candles"])
