"""The `mdp` command line as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from mdp.database import connect
from mdp.processes import free_port, spawn_mdp, stop, wait_until_live
from tests.test_ingest_api import tick

WITHOUT_CREDENTIALS = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "MDP_"))}


def test_serve_refuses_to_start_without_credentials(database_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mdp", "serve", "--port", str(free_port())],
        env={**WITHOUT_CREDENTIALS, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "INGEST_USERNAME and INGEST_PASSWORD must be set" in result.stderr


def test_the_dev_flag_serves_ingest_without_credentials(database_url: str) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**WITHOUT_CREDENTIALS, "DATABASE_URL": database_url, "MDP_DEV_NO_AUTH": "1"}
    process = subprocess.Popen([sys.executable, "-m", "mdp", "serve", "--port", str(port)], env=env)
    try:
        wait_until_live(url, process)
        assert httpx.post(f"{url}/ingest/tick", json=tick()).status_code == 202
    finally:
        stop(process)


def _platform_processes(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            environ = proc.info["environ"] or {}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if str(data_dir) in cmdline or environ.get("MDP_DATA_DIR") == str(data_dir):
            found.append(proc)
    return found


def _count(data_dir: Path, sql: str) -> int:
    with connect(f"postgresql://postgres@/market?host={data_dir / 'postgres'}") as conn:
        [(count,)] = conn.execute(sql).fetchall()
    assert isinstance(count, int)
    return count


ACKED = "SELECT ((SELECT count(*) FROM trade_inbox) + (SELECT count(*) FROM trades))::int"
CANDLES = 'SELECT count(DISTINCT "interval")::int FROM candles'


def _run_up(data_dir: Path, port: int, dagster_port: int) -> subprocess.Popen[bytes]:
    env = {**WITHOUT_CREDENTIALS, "MDP_DATA_DIR": str(data_dir), "INGESTION_INTERVAL_SECONDS": "2"}
    env.pop("DATABASE_URL", None)
    return spawn_mdp(["up", "--port", str(port), "--dagster-port", str(dagster_port)], env)


LAUNCH_BACKFILL = """
mutation ($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
  }
}"""
BACKFILL_STATUS = """
query ($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status runs(limit: 10) { status } }
  }
}"""


def _backfill_like_the_ui(dagster_url: str, days: list[str]) -> dict[str, Any]:
    """Launch a candle backfill with the GraphQL mutation the Dagster UI sends; its final state."""
    keys = [{"path": [f"candles_{i}"]} for i in ("1m", "5m", "15m", "1h", "1d")]
    params = {"assetSelection": keys, "partitionNames": days}
    launched = httpx.post(
        f"{dagster_url}/graphql",
        json={"query": LAUNCH_BACKFILL, "variables": {"params": params}},
        timeout=30,
    ).json()["data"]["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        backfill: dict[str, Any] = httpx.post(
            f"{dagster_url}/graphql",
            json={"query": BACKFILL_STATUS, "variables": {"id": launched["backfillId"]}},
            timeout=30,
        ).json()["data"]["partitionBackfillOrError"]
        if backfill["status"].startswith("COMPLETED") or backfill["status"] == "FAILED":
            return backfill
        time.sleep(1)
    raise AssertionError("the backfill did not finish")


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    wait_until_live(url, process, timeout=60)
    deadline = time.monotonic() + 30
    while httpx.get(f"{url}/health/readiness").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_up_runs_the_platform_on_the_embedded_default_and_stops_cleanly(
    tmp_path: Path, sig: signal.Signals
) -> None:
    data_dir = tmp_path / "data"
    port, dagster_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    up = _run_up(data_dir, port, dagster_port)
    try:
        _wait_ready(url, up)
        deadline = time.monotonic() + 30
        while _count(data_dir, ACKED) == 0:
            assert time.monotonic() < deadline, "the feeder delivered nothing"
            time.sleep(0.5)
        deadline = time.monotonic() + 120  # Dagster starts, its sensor launches micro-batches
        while _count(data_dir, CANDLES) < 5:
            assert time.monotonic() < deadline, "no candles materialized"
            time.sleep(1)
        if sig == signal.SIGTERM:  # once is enough: the backfill daemon takes its time
            today = datetime.now(UTC).date()
            days = [(today - timedelta(days=n)).isoformat() for n in (2, 1, 0)]
            backfill = _backfill_like_the_ui(f"http://127.0.0.1:{dagster_port}", days)
            assert backfill == {"status": "COMPLETED_SUCCESS", "runs": [{"status": "SUCCESS"}]}
        fed = _count(data_dir, ACKED)
        up.send_signal(sig)
        assert up.wait(timeout=30) == 0
    finally:
        stop(up)
    assert _platform_processes(data_dir) == []

    up = _run_up(data_dir, port, dagster_port)  # the data folder persists across restarts
    try:
        _wait_ready(url, up)
        assert _count(data_dir, ACKED) >= fed
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=30) == 0
    finally:
        stop(up)
    assert _platform_processes(data_dir) == []
