"""READ_API_KEYS: unset, reads are public; set, every read (HTTP, /stream, /ws, /stocks) needs one
of the keys, as a Bearer header (what Polygon clients send) or `?apiKey=`; health, metrics and
the dashboard's page stay open, and ingest keeps its own credentials."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from massive import RESTClient
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect as ws_connect

from core.db import Connection
from mdp.processes import api_server
from tests.conftest import PASSWORD, USER, api_env
from tests.support import tick

READS = [
    "/symbols",
    "/tickers/AAPL",
    "/tickers/AAPL/history",
    "/candles?symbol=AAPL&interval=1m",
    "/v2/aggs/ticker/AAPL/range/1/minute/2026-11-20/2026-11-20",
    "/v2/last/trade/AAPL",
]


@pytest.fixture(scope="module")
def keyed_url(database_url: str) -> Iterator[str]:
    with api_server({**api_env(database_url), "READ_API_KEYS": "alpha, beta"}) as url:
        yield url


@pytest.mark.parametrize("path", READS)
def test_a_read_needs_one_of_the_keys(keyed_url: str, db: Connection, path: str) -> None:
    with httpx.Client(base_url=keyed_url, timeout=10) as http:
        assert http.post("/ingest/tick", json=tick(1), auth=(USER, PASSWORD)).status_code == 202
        refused = http.get(path)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "read API key" in refused.json()["detail"]
        assert http.get(path, headers={"Authorization": "Bearer gamma"}).status_code == 401
        assert http.get(path, headers={"Authorization": "Bearer beta"}).status_code == 200
        joiner = "&" if "?" in path else "?"
        assert http.get(f"{path}{joiner}apiKey=alpha").status_code == 200


def test_operations_stay_open_and_ingest_keeps_its_own_credentials(
    keyed_url: str, db: Connection
) -> None:
    with httpx.Client(base_url=keyed_url, timeout=10) as http:
        for path in ("/health/liveness", "/metrics", "/status/ingestion", "/dashboard"):
            assert http.get(path).status_code == 200, path
        assert http.post("/ingest/tick", json=tick(1), auth=(USER, PASSWORD)).status_code == 202


def test_the_official_client_reads_with_its_key(keyed_url: str, db: Connection) -> None:
    httpx.post(f"{keyed_url}/ingest/tick", json=tick(1), auth=(USER, PASSWORD)).raise_for_status()
    trade = RESTClient(api_key="beta", base=keyed_url).get_last_trade("AAPL")
    assert (trade.id, trade.price) == ("e-1", 187.25)


def test_streams_need_a_key_too(keyed_url: str) -> None:
    with httpx.Client(base_url=keyed_url, timeout=10) as http:
        assert http.get("/stream").status_code == 401
        with http.stream("GET", "/stream?apiKey=beta") as stream:
            assert stream.status_code == 200
    ws = f"ws://{keyed_url.removeprefix('http://')}/ws"
    with pytest.raises(ConnectionClosedError) as closed, ws_connect(ws, open_timeout=10) as conn:
        conn.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "authentication failed")
    with ws_connect(f"{ws}?apiKey=alpha", open_timeout=10) as conn, pytest.raises(TimeoutError):
        conn.recv(timeout=0.5)  # open and quiet: nothing was accepted since
