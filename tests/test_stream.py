"""`GET /stream` (and `GET /ws`, the same events over a WebSocket): trade events as ticks are
accepted, candle events as micro-batches change candles, filters, and resumption from the last
event id without gaps or duplicates, across API workers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect as ws_connect

from core.db import Connection
from mdp.imports import import_file
from mdp.processes import api_server
from pipelines.ingestion import drain_inbox
from tests.conftest import PASSWORD, USER, api_env
from tests.support import ServerSentEvents, send, tick

Event = dict[str, Any]
Follow = Callable[..., AbstractContextManager[Iterator[Event]]]


@contextmanager
def events(
    url: str, headers: dict[str, str] | None = None, **params: str
) -> Iterator[Iterator[Event]]:
    """The events of one /stream connection, parsed, as an iterator (10 s of silence fails)."""
    with httpx.stream(
        "GET", f"{url}/stream", params=params, headers=headers or {}, timeout=10
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")

        def parse() -> Iterator[Event]:
            parser = ServerSentEvents()
            for line in response.iter_lines():
                if event := parser.line(line):
                    yield event

        yield parse()


@contextmanager
def ws_events(url: str, **params: str) -> Iterator[Iterator[Event]]:
    """The events of one /ws connection, each message's array flattened, as an iterator (10 s
    of silence fails)."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    with ws_connect(f"ws://{url.removeprefix('http://')}/ws?{query}", open_timeout=10) as ws:

        def parse() -> Iterator[Event]:
            while True:
                yield from json.loads(ws.recv(timeout=10))

        yield parse()


def take(stream: Iterator[Event], count: int) -> list[Event]:
    return [next(stream) for _ in range(count)]


def test_trades_stream_live_and_resume_from_the_last_event_id(
    api_url: str, client: httpx.Client, db: Connection
) -> None:
    with events(api_url, events="trade", symbols="AAPL") as stream:
        send(client, [tick(i, price=100.0 + i) for i in range(4)])
        send(client, [tick(9, symbol="MSFT")])  # filtered out
        send(client, [tick(1, price=555.0)])  # a resend: not a new trade
        send(client, [tick(4, price=104.0)])
        first = take(stream, 5)
    assert [e["event"] for e in first] == ["trade"] * 5
    assert [e["data"]["event_id"] for e in first] == ["e-0", "e-1", "e-2", "e-3", "e-4"]
    assert [e["data"]["price"] for e in first] == [100.0, 101.0, 102.0, 103.0, 104.0]

    drain_inbox(db)  # promotion in between does not disturb the replay
    send(client, [tick(5, price=105.0)])
    resume = {"Last-Event-ID": first[1]["id"]}
    with events(api_url, headers=resume, events="trade", symbols="AAPL") as stream:
        replay = take(stream, 4)
    assert [e["data"]["event_id"] for e in replay] == ["e-2", "e-3", "e-4", "e-5"]


def test_candle_events_follow_micro_batches(
    api_url: str, client: httpx.Client, db: Connection
) -> None:
    with events(api_url, events="candle", symbols="AAPL") as stream:
        send(client, [tick(1, ts="2026-11-20T10:00:00Z", price=10.0)])
        drain_inbox(db)
        changed = take(stream, 5)
    assert sorted(e["data"]["interval"] for e in changed) == sorted(["1m", "5m", "15m", "1h", "1d"])
    one_minute = next(e["data"] for e in changed if e["data"]["interval"] == "1m")
    assert one_minute["bucket_start"] == "2026-11-20T10:00:00Z"
    assert (one_minute["close"], one_minute["trade_count"]) == (10.0, 1)


def test_announced_candles_reach_the_stream_and_need_credentials(
    api_url: str, client: httpx.Client, db: Connection
) -> None:
    send(client, [tick(1, ts="2026-11-20T10:00:00Z", price=10.0)])
    drain_inbox(db)
    body = {
        "candles": [{"symbol": "AAPL", "interval": "1h", "bucket_start": "2026-11-20T10:00:00Z"}]
    }
    assert httpx.post(f"{api_url}/internal/agg-update", json=body).status_code == 401
    with events(api_url, events="candle") as stream:
        assert client.post("/internal/agg-update", json=body).status_code == 202
        [event] = take(stream, 1)
    assert (event["data"]["interval"], event["data"]["open"]) == ("1h", 10.0)


def test_bad_stream_requests_get_a_4xx(api_url: str) -> None:
    assert httpx.get(f"{api_url}/stream", params={"events": "quotes"}).status_code == 422
    assert httpx.get(f"{api_url}/stream", params={"symbols": "NOPE"}).status_code == 404
    bad_id = {"Last-Event-ID": "yesterday"}
    assert httpx.get(f"{api_url}/stream", headers=bad_id).status_code == 422


@pytest.mark.parametrize("follow", [events, ws_events], ids=["sse", "ws"])
def test_a_tick_accepted_by_one_worker_reaches_a_stream_on_another(
    database_url: str, db: Connection, follow: Follow
) -> None:
    with api_server(api_env(database_url), workers=2) as url, follow(url, events="trade") as stream:
        for i in range(6):  # new connections: both workers accept some
            response = httpx.post(f"{url}/ingest/tick", json=tick(100 + i), auth=(USER, PASSWORD))
            assert response.status_code == 202
        received = take(stream, 6)
    assert [e["data"]["event_id"] for e in received] == [f"e-{100 + i}" for i in range(6)]


def _stream_figures(client: httpx.Client) -> tuple[float, float]:
    text = client.get("/metrics", headers={"Accept": "text/plain"}).text
    samples = {
        (s.name, s.labels.get("reason")): s.value
        for family in parse_prometheus(text)
        for s in family.samples
    }
    return samples[("mdp_stream_subscribers", None)], samples.get(
        ("mdp_streams_ended_total", "client"), 0.0
    )


def test_open_and_ended_streams_are_counted(api_url: str, client: httpx.Client) -> None:
    open_before, left_before = _stream_figures(client)
    with events(api_url, events="trade", symbols="AAPL") as stream:
        send(client, [tick(1)])
        take(stream, 1)
        assert _stream_figures(client)[0] == open_before + 1
    deadline = time.monotonic() + 30  # the server notices the client left at its next write
    while _stream_figures(client) != (open_before, left_before + 1):
        assert time.monotonic() < deadline, _stream_figures(client)
        send(client, [tick(2)])
        time.sleep(0.2)


def test_ws_carries_the_stream_and_resumes_from_the_last_event_id(
    api_url: str, client: httpx.Client, db: Connection
) -> None:
    with ws_events(api_url, events="trade", symbols="AAPL") as stream:
        send(client, [tick(i, price=100.0 + i) for i in range(3)])
        send(client, [tick(9, symbol="MSFT"), tick(1, price=555.0)])  # filtered out, a resend
        first = take(stream, 3)
    send(client, [tick(i, price=100.0 + i) for i in range(3, 6)])  # while nobody listens
    with ws_events(api_url, events="trade", symbols="AAPL", last_event_id=first[-1]["id"]) as ws:
        send(client, [tick(6, price=106.0)])
        missed = take(ws, 4)
    got = [(e["event"], e["data"]["event_id"], e["data"]["price"]) for e in first + missed]
    assert got == [("trade", f"e-{i}", 100.0 + i) for i in range(7)]


def test_ws_refuses_an_unknown_symbol_with_the_reason(api_url: str) -> None:
    with (
        pytest.raises(ConnectionClosedError) as closed,
        ws_events(api_url, symbols="NOPE") as stream,
    ):
        next(stream)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "unknown symbol 'NOPE'")


def test_imported_history_is_not_news_to_stream_readers(
    api_url: str, client: httpx.Client, db: Connection, database_url: str, tmp_path: Path
) -> None:
    """Trades loaded by `mdp import` while readers follow the stream never reach them (history
    is not news); the next live tick does, first."""
    history = tmp_path / "history.ndjson"
    history.write_text(
        "\n".join(json.dumps(tick(i, event_id=f"h-{i}", price=50.0 + i)) for i in range(500))
    )
    with ws_events(api_url, events="trade") as ws, events(api_url, events="trade") as sse:
        imported = import_file(database_url, history, "ticks", None, register=False)
        assert imported.stored == 500
        send(client, [tick(1, price=101.0)])
        assert [e["data"]["event_id"] for e in (next(ws), next(sse))] == ["e-1", "e-1"]
    seqs = db.execute("SELECT min(seq), max(seq) FROM trades WHERE event_id LIKE 'h-%'").fetchone()
    assert seqs is not None and seqs[1] < 0  # below every live trade, in file order
    newest = client.get("/tickers/AAPL/history", params={"limit": 1}).json()["trades"]
    assert newest[0]["price"] == 549.0  # the file's last line, on the equal timestamps
