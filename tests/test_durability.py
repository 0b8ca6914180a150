"""Crashes with the synthetic feeder running: `kill -9` of the API, a PostgreSQL restart, `kill -9`
of an ingest run mid-batch, the Dagster daemon stopped. Each ends in a full reconciliation: every
acked `(source, event_id)` is in `trades` exactly once and the candles equal an independent SQL
computation over the trades."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from core.db import CANDLES_LOCK_KEY, Connection, connect, prepare
from core.embedded import EmbeddedPostgres
from mdp.processes import api_server, free_port, spawn_mdp, stop, wait_until_live
from mdp.reconcile import read_ack_log, unpromoted
from pipelines.ingestion import drain_inbox
from tests.candle_reference import assert_candles_match_trades
from tests.conftest import BIN, PASSWORD, ROOT, SYMBOLS, USER, api_env
from tests.support import send, tick

FeedReport = dict[str, int]


@contextmanager
def feeding(
    url: str, env: dict[str, str], ack_log: Path, seconds: float = 600
) -> Iterator[Callable[..., FeedReport]]:
    """The synthetic feeder at 600 ticks/s from 4 sources for `seconds`, logging what was acked.
    Yields `finish(now=False)`: waits for its clean end (after SIGTERM with `now`) and returns its
    counters."""
    log = ack_log.with_suffix(".log")
    with log.open("wb") as output:
        feeder = spawn_mdp(
            [
                *("feed", "--url", url, "--rate", "600", "--batch-size", "25", "--sources", "4"),
                *("--duration", str(seconds), "--ack-log", str(ack_log), "--seed", "11"),
            ],
            env,
            stderr=output,
        )

    def finish(now: bool = False) -> FeedReport:
        if now:
            feeder.send_signal(signal.SIGTERM)
        assert feeder.wait(timeout=seconds + 90) == 0, log.read_text()[-2000:]
        stats = re.search(r"FeedStats\((.*)\)", log.read_text())
        assert stats, log.read_text()[-2000:]
        return {k: int(v) for k, v in (kv.split("=") for kv in stats[1].split(", "))}

    try:
        yield finish
    finally:
        stop(feeder)


def wait_for_acks(ack_log: Path, count: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not ack_log.exists() or len(ack_log.read_bytes().splitlines()) < count:
        assert time.monotonic() < deadline, f"fewer than {count} ticks acked in {timeout} s"
        time.sleep(0.25)


def assert_reconciled(db: Connection, ack_log: Path) -> None:
    """Promote what is pending, then: every acked tick is a trade, once; candles are exact."""
    drain_inbox(db)
    report = unpromoted(db, read_ack_log(ack_log))
    assert report["acked"] > 1000
    assert (report["missing"], report["duplicated"]) == (0, 0)
    assert db.execute("SELECT count(*) FROM trade_inbox").fetchone() == (0,)
    assert_candles_match_trades(db)


def test_every_acked_tick_survives_kill_9_of_the_api(
    database_url: str, db: Connection, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = api_env(database_url)
    ack_log = tmp_path / "acked.tsv"
    api = spawn_mdp(["serve", "--port", str(port)], env)
    wait_until_live(url, api)
    try:
        with feeding(url, env, ack_log) as finish:
            for _ in range(3):
                time.sleep(2)
                api.send_signal(signal.SIGKILL)  # no shutdown, no flush
                api.wait()
                time.sleep(0.5)
                api = spawn_mdp(["serve", "--port", str(port)], env)
                wait_until_live(url, api)
            wait_for_acks(ack_log, 2000)  # however slowly a loaded machine restarts the API
            report = finish(now=True)
        assert report["retries"] > 0 and report["rejected"] == 0  # it retried through the crashes
    finally:
        stop(api)
    assert_reconciled(db, ack_log)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path / "postgres")
    server.start()
    yield server
    server.stop()


def test_a_database_restart_during_a_feed_is_a_503_then_heals_by_itself(
    own_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    database_url = own_server.database("market")
    prepare(database_url, SYMBOLS)
    ack_log = tmp_path / "acked.tsv"
    probe = tick(1, source="PROBE")
    with (
        api_server(api_env(database_url)) as url,
        httpx.Client(base_url=url, auth=(USER, PASSWORD), timeout=15) as client,
        feeding(url, api_env(database_url), ack_log) as finish,
    ):
        wait_for_acks(ack_log, 1200)
        own_server.stop()
        during = client.post("/ingest/tick", json=probe)
        assert during.status_code == 503
        assert "database unavailable" in during.json()["detail"]
        assert client.get("/health/readiness").status_code == 503
        assert client.get("/health/liveness").status_code == 200
        for read in ("/candles?symbol=AAPL", "/tickers/AAPL", "/v2/last/trade/AAPL"):
            assert client.get(read).status_code == 503, read
        status = client.get("/status/ingestion")
        assert (status.status_code, status.json()["db"]["healthy"]) == (503, False)
        assert client.get("/metrics").json()["db"]["healthy"] is False
        time.sleep(2)

        own_server.start()
        deadline = time.monotonic() + 30
        while client.get("/health/readiness").status_code != 200:
            assert time.monotonic() < deadline, "readiness did not recover"
            time.sleep(0.25)
        time.sleep(2)
        report = finish(now=True)
    assert report["retries"] > 0 and report["rejected"] == 0  # it waited the outage out
    with connect(database_url, autocommit=True) as db:
        assert db.execute("SELECT count(*) FROM trade_inbox WHERE source = 'PROBE'").fetchone() == (
            0,
        )
        assert_reconciled(db, ack_log)


def ingestion_status(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/status/ingestion", timeout=5).json()  # type: ignore[no-any-return]


def wait_for_status(url: str, wanted: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (report := ingestion_status(url))["status"] != wanted:
        assert time.monotonic() < deadline, f"status still {report} after {timeout} s"
        time.sleep(0.25)
    return report


def kill_run_worker_mid_batch(daemon: subprocess.Popen[bytes], db: Connection) -> None:
    """SIGKILL the daemon's run worker that is inside a batch's transaction: the process owning
    the client end of the database session that holds the candles lock."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        row = db.execute(
            "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            " WHERE l.locktype = 'advisory' AND l.granted"
            " AND ((l.classid::int8 << 32) | l.objid::int8) = %s",
            (CANDLES_LOCK_KEY,),
        ).fetchone()
        if row:
            for process in psutil.Process(daemon.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):  # gone meanwhile
                    if any(c.laddr.port == row[0] for c in process.net_connections("tcp")):
                        process.kill()
                        return
        time.sleep(0.005)
    raise AssertionError("no micro-batch run of the daemon held the candles lock")


def wait_until_promoted(db: Connection, identities: set[tuple[str, str]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while unpromoted(db, identities)["missing"]:
        assert time.monotonic() < deadline, "ingestion did not catch up"
        time.sleep(1)


def test_killed_runs_and_a_stopped_daemon_heal_and_the_status_tells(
    db: Connection, dagster_env: dict[str, str], tmp_path: Path
) -> None:
    """Under the real scheduler: a run worker killed mid-batch is failed by its code server and
    the next run finishes its work; with the daemon stopped the status turns stale within
    three intervals, and after a restart ingestion catches up."""
    interval = 4
    env = {**dagster_env, **api_env(dagster_env["DATABASE_URL"])}
    env["INGESTION_INTERVAL_SECONDS"] = str(interval)
    daemon_command = [str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")]

    def start_daemon() -> subprocess.Popen[bytes]:
        with (tmp_path / "daemon.log").open("ab") as log:
            return subprocess.Popen(
                daemon_command,
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    backlog = [tick(i, ts=f"2026-11-20T{i % 24:02}:{i % 60:02}:00Z") for i in range(30_000)]
    ack_log = tmp_path / "acked.tsv"
    daemon = start_daemon()
    try:
        with (
            api_server(env) as url,
            httpx.Client(base_url=url, auth=(USER, PASSWORD), timeout=30) as client,
            feeding(url, env, ack_log) as finish,
        ):
            wait_for_status(url, "alive", timeout=120)
            send(client, backlog, batch=5000)
            kill_run_worker_mid_batch(daemon, db)
            wait_until_promoted(db, {("XNAS", t["event_id"]) for t in backlog}, timeout=180)
            wait_for_status(url, "alive", timeout=30)

            os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(timeout=60)
            stale = wait_for_status(url, "stale", timeout=3 * interval + 2 * interval)
            assert stale["heartbeat_age_seconds"] > stale["stale_threshold_seconds"] == 3 * interval
            [(pending,)] = db.execute("SELECT count(*) FROM trade_inbox").fetchall()
            assert pending > 0  # the feed goes on; nothing promotes it

            daemon = start_daemon()
            wait_for_status(url, "alive", timeout=120)
            finish(now=True)
            wait_until_promoted(db, read_ack_log(ack_log), timeout=120)
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(timeout=60)
    assert_reconciled(db, ack_log)
