"""Ack means durable: a 202 survives `kill -9` of the API, and a database outage is a 503 that
heals by itself."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mdp.database import Connection, connect, prepare
from mdp.embedded import EmbeddedPostgres
from mdp.processes import api_server, free_port, spawn_mdp, stop, wait_until_live
from tests.conftest import PASSWORD, SYMBOLS, USER, api_env
from tests.test_ingest_api import tick


def acked_identities(ack_log: Path) -> set[tuple[str, str]]:
    lines = ack_log.read_text().splitlines()
    return {(s, e) for s, e in (line.split("\t") for line in lines)}


def test_every_acked_tick_survives_kill_9_of_the_api(
    database_url: str, db: Connection, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = api_env(database_url)
    ack_log = tmp_path / "acked.tsv"
    api = spawn_mdp(["serve", "--port", str(port)], env)
    wait_until_live(url, api)
    feeder = spawn_mdp(
        [
            *("feed", "--url", url, "--rate", "600", "--batch-size", "25", "--sources", "4"),
            *("--duration", "10", "--ack-log", str(ack_log), "--seed", "11"),
        ],
        env,
    )
    try:
        for _ in range(3):
            time.sleep(2)
            api.send_signal(
                signal.SIGKILL
            )  # no shutdown, no flush: whatever was acked must be there
            api.wait()
            time.sleep(0.5)
            api = spawn_mdp(["serve", "--port", str(port)], env)
            wait_until_live(url, api)
        assert feeder.wait(timeout=60) == 0
    finally:
        stop(feeder)
        stop(api)
    acked = acked_identities(ack_log)
    stored = set(db.execute("SELECT source, event_id FROM trade_inbox").fetchall())
    assert len(acked) > 1000
    assert acked <= stored


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path / "postgres")
    server.start()
    yield server
    server.stop()


def test_database_outage_is_a_503_for_writes_and_reads_and_heals_by_itself(
    own_server: EmbeddedPostgres,
) -> None:
    database_url = own_server.database("market")
    prepare(database_url, SYMBOLS)
    with (
        api_server(api_env(database_url)) as url,
        httpx.Client(base_url=url, auth=(USER, PASSWORD), timeout=15) as client,
    ):
        assert client.post("/ingest/tick", json=tick(1)).status_code == 202

        own_server.stop()
        during = client.post("/ingest/tick", json=tick(2))
        assert during.status_code == 503
        assert "database unavailable" in during.json()["detail"]
        assert client.get("/health/readiness").status_code == 503
        assert client.get("/health/liveness").status_code == 200
        for read in ("/candles?symbol=AAPL", "/tickers/AAPL", "/v2/last/trade/AAPL"):
            assert client.get(read).status_code == 503, read
        status = client.get("/status/ingestion")
        assert (status.status_code, status.json()["db"]["healthy"]) == (503, False)
        assert client.get("/metrics").json()["db"]["healthy"] is False

        own_server.start()
        deadline = time.monotonic() + 30
        while (response := client.post("/ingest/tick", json=tick(3))).status_code != 202:
            assert response.status_code == 503
            assert time.monotonic() < deadline, "ingest did not recover"
            time.sleep(0.5)
        assert client.get("/health/readiness").status_code == 200
    with connect(database_url) as conn:
        ids = [r[0] for r in conn.execute("SELECT event_id FROM trade_inbox ORDER BY seq")]
    assert ids == ["e-1", "e-3"]
