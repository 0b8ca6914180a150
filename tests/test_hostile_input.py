"""Hostile input: SQL-shaped values are data, never SQL; credentials are compared in constant
time and never reach logs or error bodies; the candle computation holds against a plain reference
for any trades (hypothesis); odd bodies and slow clients."""

from __future__ import annotations

import asyncio
import secrets
import socket
import subprocess
from typing import Any

import httpx
import polars as pl
import pytest
from fastapi import HTTPException
from fastapi.security import HTTPBasicCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

from core.config import Settings
from core.db import Connection
from mdp.processes import free_port, spawn_mdp, stop, wait_until_live
from pipelines.candles import candles_from_trades, roll_up, width_us
from pipelines.ingestion import drain_inbox
from serving.auth import require_ingest_credentials
from tests.conftest import PASSWORD, USER, api_env
from tests.support import tick

INJECTIONS = [
    "AAPL' OR '1'='1",
    "AAPL'; DROP TABLE trades; --",
    'AAPL"; DELETE FROM candles; --',
    "1) UNION SELECT * FROM pg_shadow --",
]


@pytest.mark.parametrize(
    ("user", "password"),
    [("someone", PASSWORD), (USER, "wrong"), ("x", "y"), (USER * 50, PASSWORD * 50)],
)
def test_both_credential_parts_are_always_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch, user: str, password: str
) -> None:
    """No early exit on a wrong user name: the time taken says nothing about which part failed."""
    compared: list[tuple[bytes, bytes]] = []
    constant_time = secrets.compare_digest

    def compare_digest(given: bytes, expected: bytes) -> bool:
        compared.append((given, expected))
        return constant_time(given, expected)

    monkeypatch.setattr("serving.auth.secrets.compare_digest", compare_digest)
    settings = Settings(ingest_username=USER, ingest_password=PASSWORD)  # type: ignore[arg-type]
    with pytest.raises(HTTPException) as refused:
        given = HTTPBasicCredentials(username=user, password=password)
        asyncio.run(require_ingest_credentials(settings, given))
    assert refused.value.status_code == 401
    assert compared == [(user.encode(), USER.encode()), (password.encode(), PASSWORD.encode())]


def test_sql_shaped_values_are_data_in_every_parameter(
    client: httpx.Client, db: Connection
) -> None:
    weird = "x'); DROP TABLE trades; --"
    assert (
        client.post("/ingest/tick", json=tick(1, event_id=weird, source=weird)).status_code == 202
    )
    drain_inbox(db)
    assert db.execute("SELECT event_id, source FROM trades").fetchall() == [(weird, weird)]

    for value in INJECTIONS:
        assert client.get("/candles", params={"symbol": value}).status_code == 404
        assert client.get(f"/tickers/{value}").status_code == 404
        assert (
            client.get("/candles", params={"symbol": "AAPL", "interval": value}).status_code == 422
        )
        assert (
            client.get("/candles", params={"symbol": "AAPL", "page_token": value}).status_code
            == 422
        )
        history = client.get("/tickers/AAPL/history", params={"before": value})
        assert history.status_code == 422
        aggs = client.get(f"/v2/aggs/ticker/{value}/range/1/day/2026-11-01/2026-11-30")
        assert aggs.json()["resultsCount"] == 0
        assert client.get("/stream", params={"symbols": value}).status_code == 404
    assert db.execute("SELECT count(*) FROM trades").fetchone() == (1,)
    assert db.execute("SELECT count(*) FROM symbols").fetchone() == (5,)


def test_credentials_never_reach_logs_or_error_bodies(database_url: str, db: Connection) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = spawn_mdp(
        ["serve", "--port", str(port)],
        {**api_env(database_url), "MDP_LOG_LEVEL": "DEBUG"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    wrong = "wrong-Secret-9f3"
    try:
        wait_until_live(url, server)
        refused = httpx.post(f"{url}/ingest/tick", json=tick(1), auth=(USER, wrong))
        assert refused.status_code == 401
        malformed = httpx.post(
            f"{url}/ingest/tick", json=tick(1), headers={"Authorization": f"Basic {wrong}"}
        )
        assert malformed.status_code == 401
        accepted = httpx.post(f"{url}/ingest/tick", json=tick(2), auth=(USER, PASSWORD))
        assert accepted.status_code == 202
        bodies = refused.text + malformed.text + accepted.text
    finally:
        stop(server)
    output = server.stdout.read().decode() if server.stdout else ""
    for secret in (PASSWORD, wrong):
        assert secret not in output
        assert secret not in bodies


def plain_candles(
    trades: list[dict[str, Any]], width: int
) -> dict[tuple[str, int], tuple[Any, ...]]:
    """Candles the obvious way: sort by (ts, seq), group by symbol and bucket, in plain Python."""
    candles: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for trade in sorted(trades, key=lambda t: (t["ts"], t["seq"])):
        candles.setdefault((trade["symbol"], trade["ts"] // width * width), []).append(trade)
    return {
        key: (
            group[0]["price"],
            max(t["price"] for t in group),
            min(t["price"] for t in group),
            group[-1]["price"],
            sum(t["volume"] for t in group),
            len(group),
        )
        for key, group in candles.items()
    }


trade_lists = st.lists(
    st.fixed_dictionaries({
        "symbol": st.sampled_from(["AAPL", "MSFT"]),
        "ts": st.integers(1_700_000_000_000_000, 1_700_000_000_000_000 + 3 * 86_400_000_000),
        "price": st.floats(0.01, 1e6, allow_nan=False, allow_infinity=False),
        "volume": st.integers(1, 10_000).map(float),
    }),
    min_size=1,
    max_size=200,
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(trade_lists)
def test_candles_match_a_plain_computation_for_any_trades(trades: list[dict[str, Any]]) -> None:
    for seq, trade in enumerate(trades):
        trade["seq"] = seq  # acceptance order: the order hypothesis generated them in
        trade |= dict.fromkeys(("updates_high_low", "updates_open_close", "updates_volume"), True)
    minute = candles_from_trades(pl.DataFrame(trades))
    for interval, frame in [("1m", minute)] + [(i, roll_up(minute, i)) for i in ("5m", "1h", "1d")]:
        got = {
            (r["symbol"], r["bucket_start"]): (
                r["open"], r["high"], r["low"], r["close"], r["volume"], r["trade_count"]
            )
            for r in frame.iter_rows(named=True)
        }  # fmt: skip
        assert got == plain_candles(trades, width_us(interval)), interval


def test_deeply_nested_and_odd_bodies_get_a_4xx(client: httpx.Client, db: Connection) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    posts = [
        ("/ingest/tick", "application/json"),
        ("/ingest/ticks", "application/json"),
        ("/ingest/ticks", "application/x-ndjson"),
        ("/internal/agg-update", "application/json"),
    ]
    for body in (deep, '{"a":' * 50_000 + "1" + "}" * 50_000, "[" + "1," * 200_000 + "1]"):
        for path, media in posts:
            response = client.post(path, content=body, headers={"Content-Type": media})
            assert 400 <= response.status_code < 500, (path, media, response.status_code)
            assert response.json()["detail"]
    assert db.execute("SELECT count(*) FROM trade_inbox").fetchone() == (0,)


def test_slow_clients_do_not_starve_the_others(api_url: str) -> None:
    host, port = api_url.removeprefix("http://").split(":")
    stalled = []
    try:
        for i in range(64):  # half-sent headers and half-sent bodies, left hanging
            conn = socket.create_connection((host, int(port)), timeout=5)
            if i % 2:
                conn.sendall(b"GET /health/liveness HTTP/1.1\r\nHost: x\r\n")
            else:
                conn.sendall(
                    b"POST /ingest/ticks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 1000000\r\n\r\n[{"
                )
            stalled.append(conn)
        for _ in range(20):
            assert httpx.get(f"{api_url}/health/liveness", timeout=2).status_code == 200
        assert httpx.get(f"{api_url}/symbols", timeout=2).status_code == 200
    finally:
        for conn in stalled:
            conn.close()
