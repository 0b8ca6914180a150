"""The `mdp` command line as a user runs it."""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from core.db import connect, migration_ids
from mdp.processes import free_port, spawn_mdp, stop, wait_until_live
from pipelines.names import CODE_LOCATION
from tests.support import tick, wait_for

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


def _run_up(
    data_dir: Path,
    port: int,
    dagster_port: int,
    *args: str,
    env: dict[str, str] | None = None,
    **popen: Any,
) -> subprocess.Popen[bytes]:
    env = {
        **WITHOUT_CREDENTIALS,
        "MDP_DATA_DIR": str(data_dir),
        "INGESTION_INTERVAL_SECONDS": "2",
        **(env or {}),
    }
    env.pop("DATABASE_URL", None)
    command = ["up", "--port", str(port), "--dagster-port", str(dagster_port), *args]
    return spawn_mdp(command, env, **popen)


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


def _database_now(data_dir: Path) -> datetime:
    with connect(f"postgresql://postgres@/market?host={data_dir / 'postgres'}") as conn:
        [(now,)] = conn.execute("SELECT now()").fetchall()
    assert isinstance(now, datetime)
    return now


def _ended_runs(data_dir: Path) -> set[str]:
    """The statuses of the Dagster runs that have ended."""
    with connect(f"postgresql://postgres@/dagster?host={data_dir / 'postgres'}") as conn:
        rows = conn.execute(
            "SELECT DISTINCT status FROM runs"
            " WHERE status NOT IN ('QUEUED', 'NOT_STARTED', 'STARTING', 'STARTED')"
        ).fetchall()
    return {status for (status,) in rows}


def _promoted_since(data_dir: Path, moment: datetime) -> tuple[int, int]:
    """Trades accepted after `moment` that are now canonical, and candles refreshed since."""
    with connect(f"postgresql://postgres@/market?host={data_dir / 'postgres'}") as conn:
        [(trades, candles)] = conn.execute(
            "SELECT (SELECT count(*) FROM trades WHERE received_at > %(t)s)::int,"
            "       (SELECT count(*) FROM candles WHERE updated_at > %(t)s)::int",
            {"t": moment},
        ).fetchall()
    return trades, candles


def test_up_runs_the_platform_on_the_embedded_default_and_carries_on_after_a_restart(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    port, dagster_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    up = _run_up(data_dir, port, dagster_port)
    try:
        _wait_ready(url, up)
        wait_for("the feeder delivered nothing", lambda: _count(data_dir, ACKED) > 0, 30)
        # Dagster starts, its sensor launches micro-batches
        wait_for("no candles materialized", lambda: _count(data_dir, CANDLES) == 5, 120)
        today = datetime.now(UTC).date()
        days = [(today - timedelta(days=n)).isoformat() for n in (2, 1, 0)]
        backfill = _backfill_like_the_ui(f"http://127.0.0.1:{dagster_port}", days)
        assert backfill == {"status": "COMPLETED_SUCCESS", "runs": [{"status": "SUCCESS"}]}
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=30) == 0
    finally:
        stop(up)
    assert _platform_processes(data_dir) == []

    up = _run_up(data_dir, port, dagster_port)  # the data folder persists across restarts
    try:
        _wait_ready(url, up)
        # The first platform's runs were canceled on its way out, not failed.
        assert _ended_runs(data_dir) <= {"SUCCESS", "CANCELED"}
        restarted = _database_now(data_dir)
        # The restarted feeder's ticks are new trades, not duplicates of the first run's.
        wait_for(
            "nothing fed after the restart was promoted",
            lambda: all(n > 0 for n in _promoted_since(data_dir, restarted)),
            120,
        )
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=30) == 0
    finally:
        stop(up)
    assert _platform_processes(data_dir) == []


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGKILL], ids=["SIGHUP", "SIGKILL"])
def test_no_process_of_the_platform_outlives_up(tmp_path: Path, sig: signal.Signals) -> None:
    """A closed terminal (SIGHUP) or `kill -9` of `mdp up` ends every process it started:
    the API, the feeder, Dagster's daemon, webserver, code servers and runs, PostgreSQL."""
    data_dir = tmp_path / "data"
    port, dagster_port = free_port(), free_port()
    up = _run_up(data_dir, port, dagster_port)
    try:
        _wait_ready(f"http://127.0.0.1:{port}", up)
        wait_for("no micro-batch ran", lambda: _count(data_dir, CANDLES) > 0, 120)
        tree = psutil.Process(up.pid).children(recursive=True)
        platform = {p.pid: p for p in [*tree, *_platform_processes(data_dir)]}
        assert {"api", "daemon", "webserver", "feed", "grpc", "postgres"} <= {
            word for p in platform.values() for word in _roles(p)
        }
        up.send_signal(sig)
        exit_status = up.wait(timeout=30)
        _, alive = psutil.wait_procs(platform.values(), timeout=60)
        assert alive == []
        assert exit_status == (0 if sig == signal.SIGHUP else -signal.SIGKILL)
    finally:
        stop(up)
    assert _platform_processes(data_dir) == []


def _roles(process: psutil.Process) -> set[str]:
    """What a platform process is, from its command line."""
    with contextlib.suppress(psutil.Error):
        cmdline = " ".join(process.cmdline())
        return {
            role
            for role, marker in {
                "api": "mdp serve",
                "feed": "mdp feed",
                "daemon": "dagster-daemon",
                "webserver": "dagster-webserver",
                "grpc": "dagster api grpc",
                "postgres": "pginstall/bin/postgres",
            }.items()
            if marker in cmdline
        }
    return set()


def test_a_clean_stop_after_a_crash_stops_the_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    crashed = subprocess.run(  # a user of the embedded server killed without a chance to leave
        [sys.executable, "-c", CRASHING_USER, str(data_dir / "postgres")], timeout=120
    )
    assert crashed.returncode == -signal.SIGKILL
    assert _platform_processes(data_dir) != [], "the crashed user left PostgreSQL running"

    port = free_port()
    up = _run_up(data_dir, port, free_port(), "--no-feed", stdout=subprocess.PIPE)
    try:
        wait_until_live(f"http://127.0.0.1:{port}", up, timeout=60)
        up.send_signal(signal.SIGTERM)
        output, _ = up.communicate(timeout=30)
        assert up.returncode == 0
    finally:
        stop(up)
    assert "database     stopped" in output.decode()
    assert _platform_processes(data_dir) == []


CRASHING_USER = """
import os, signal, sys
from pathlib import Path
from core.embedded import EmbeddedPostgres
EmbeddedPostgres(Path(sys.argv[1])).start()
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("option", ["--port", "--dagster-port"])
def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path, option: str) -> None:
    requests: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_error(404)

        do_POST = do_GET

    data_dir = tmp_path / "data"
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder) as other:
        threading.Thread(target=other.serve_forever, daemon=True).start()
        taken = other.server_address[1]
        ports = {"--port": free_port(), "--dagster-port": free_port(), option: taken}
        up = _run_up(data_dir, ports["--port"], ports["--dagster-port"], stderr=subprocess.PIPE)
        _, errors = up.communicate(timeout=60)
        other.shutdown()
    assert up.returncode != 0
    message = errors.decode()
    assert f"port {taken} on 127.0.0.1 is taken" in message
    assert f"choose another with {option}" in message
    assert requests == []
    assert _platform_processes(data_dir) == []


def test_a_second_up_on_the_same_data_folder_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    first = _run_up(data_dir, port, free_port(), "--no-feed")
    try:
        wait_until_live(f"http://127.0.0.1:{port}", first, timeout=60)
        second = _run_up(data_dir, free_port(), free_port(), stderr=subprocess.PIPE)
        _, errors = second.communicate(timeout=60)
        assert second.returncode != 0
        message = errors.decode()
        assert f"a platform already runs on the data folder {data_dir}" in message
        assert f"dashboard http://127.0.0.1:{port}/dashboard" in message
        assert first.poll() is None, "the first platform is left alone"
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
    finally:
        stop(first)
    assert _platform_processes(data_dir) == []


def test_commands_find_the_embedded_database_by_themselves(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {**WITHOUT_CREDENTIALS, "MDP_DATA_DIR": str(data_dir)}
    env.pop("DATABASE_URL", None)
    migrate = [sys.executable, "-m", "mdp", "db", "migrate"]
    first = subprocess.run(migrate, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert f"applied {len(migration_ids())} migration(s)" in first.stdout
    again = subprocess.run(migrate, env=env, capture_output=True, text=True, timeout=120)
    assert "applied 0 migration(s): none pending" in again.stdout
    assert _platform_processes(data_dir) == []  # started for the command, stopped after it


FRESHNESS = """
query ($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode { freshnessStatusInfo { freshnessStatus } }
  }
}"""
SENSOR = """
query ($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) { ... on Sensor { sensorState { id status } } }
}"""
STOP_SENSOR = """
mutation ($id: String!) {
  stopSensor(id: $id) { ... on StopSensorMutationResult { instigationState { status } } }
}"""
RUNNING = """
{
  runsOrError(filter: {statuses: [QUEUED, STARTING, STARTED]}) {
    ... on Runs { results { runId } }
  }
}"""
TERMINATE = """
mutation ($runId: String!) { terminateRun(runId: $runId) { __typename } }
"""


def _graphql(dagster_url: str, query: str, **variables: Any) -> Any:
    answer = httpx.post(
        f"{dagster_url}/graphql", json={"query": query, "variables": variables}, timeout=30
    ).json()
    assert "errors" not in answer, answer
    return answer["data"]


def _freshness(dagster_url: str, asset: str) -> str:
    """The asset's freshness status as the Dagster UI shows it ("" while the UI is starting)."""
    try:
        node = _graphql(dagster_url, FRESHNESS, key={"path": [asset]})["assetNodeOrError"]
    except httpx.TransportError:
        return ""
    status: str = node["freshnessStatusInfo"]["freshnessStatus"]
    return status


def test_the_dagster_ui_shows_trades_fresh_while_idle_and_not_once_the_drains_stop(
    tmp_path: Path,
) -> None:
    """A quiet market (no feeder, nothing arrives) keeps `trades` fresh in the Dagster UI's own
    terms (its freshness status), because the drains report it current while idle; once the
    drains stop (the sensor stopped from the UI, its run terminated) it turns to a warning after
    the policy's 2 minutes, and /status/ingestion says stale. The freshness daemon evaluates every
    5 s here instead of 30."""
    data_dir = tmp_path / "data"
    port, dagster_port = free_port(), free_port()
    url, dagster = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{dagster_port}"
    up = _run_up(
        data_dir, port, dagster_port, "--no-feed", env={"FRESHNESS_DAEMON_INTERVAL_SECONDS": "5"}
    )
    try:
        _wait_ready(url, up)
        wait_for("trades fresh while idle", lambda: _freshness(dagster, "trades") == "HEALTHY", 240)
        assert _count(data_dir, ACKED) == 0  # idle indeed
        assert httpx.get(f"{url}/status/ingestion").json()["idle"] is True

        selector = {
            "repositoryLocationName": CODE_LOCATION,
            "repositoryName": "__repository__",
            "sensorName": "trade_inbox_sensor",
        }
        sensor = _graphql(dagster, SENSOR, selector=selector)["sensorOrError"]["sensorState"]
        stopped = _graphql(dagster, STOP_SENSOR, id=sensor["id"])["stopSensor"]
        assert stopped["instigationState"]["status"] == "STOPPED"
        for run in _graphql(dagster, RUNNING)["runsOrError"]["results"]:
            _graphql(dagster, TERMINATE, runId=run["runId"])

        wait_for(
            "/status/ingestion to say stale",
            lambda: httpx.get(f"{url}/status/ingestion").json()["status"] == "stale",
            60,
        )
        wait_for(
            "trades to turn to a freshness warning",
            lambda: _freshness(dagster, "trades") == "WARNING",
            300,
        )
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=30) == 0
    finally:
        stop(up)
