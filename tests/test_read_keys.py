"""READ_API_KEYS: unset, reads are public; set, every read (HTTP, /stream, /ws, /stocks) needs one
of the keys, as a Bearer header (what Polygon clients send) or `?apiKey=`, Polygon's routes
refusing in Polygon's error body; health, metrics and the dashboard's page stay open, and ingest
keeps its own credentials."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from massive import RESTClient
from massive.exceptions import BadResponse
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

# Polygon's reference reads, refused in Polygon's error body (the official client raises on it).
POLYGON_READS = [
    "/v3/trades/AAPL",
    "/v3/reference/tickers",
    "/v3/reference/tickers/AAPL",
    "/v3/reference/conditions",
    "/v1/marketstatus/now",
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


@pytest.mark.parametrize("path", POLYGON_READS)
def test_polygon_reads_need_a_key_and_are_refused_in_polygons_shape(
    keyed_url: str, path: str
) -> None:
    refused = httpx.get(f"{keyed_url}{path}")
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert refused.json()["status"] == "ERROR" and "read API key" in refused.json()["error"]
    assert httpx.get(f"{keyed_url}{path}", headers={"Authorization": "Bearer gamma"}).is_error
    assert httpx.get(f"{keyed_url}{path}", headers={"Authorization": "Bearer beta"}).is_success
    assert httpx.get(f"{keyed_url}{path}?apiKey=alpha").is_success
    with pytest.raises(BadResponse):
        RESTClient(api_key="gamma", base=keyed_url, retries=0).get_market_status()
    assert RESTClient(api_key="alpha", base=keyed_url, retries=0).get_market_status().market


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
