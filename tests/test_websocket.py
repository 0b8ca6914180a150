"""`GET /stocks` with the official `massive` WebSocketClient, unchanged, as the client: auth,
trades as `T` events equal to the ticks ingested, second and minute bars equal to the trades of
their bucket (and sent again when a late trade changes them), subscriptions that start and stop
them, a stalled consumer cut off, and a clean close when the API stops; and the bounds: unknown
symbols refused in the status message, channels per connection and connections per key capped."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from massive import WebSocketClient
from massive.exceptions import AuthError
from massive.websocket.models import EquityAgg, EquityTrade
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from core.db import Connection
from mdp.processes import api_server
from tests.conftest import PASSWORD, USER, api_env
from tests.support import tick, wait_for

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WAIT_SECONDS = 30.0  # generous bounds for a loaded machine; no test measures time


@contextlib.asynccontextmanager
async def connected(
    api_url: str, key: str, *channels: str, bars: list[EquityAgg] | None = None
) -> AsyncIterator[tuple[WebSocketClient, list[EquityTrade]]]:
    """A massive client on our /stocks, subscribed to `channels`, collecting trades (and, when
    `bars` is given, second and minute bars into it)."""
    client = WebSocketClient(
        api_key=key, feed=api_url.removeprefix("http://"), market="stocks", secure=False,
        subscriptions=list(channels), max_reconnects=0,
    )  # fmt: skip
    trades: list[EquityTrade] = []

    async def collect(messages: list[Any]) -> None:
        trades.extend(m for m in messages if isinstance(m, EquityTrade))
        if bars is not None:
            bars.extend(m for m in messages if isinstance(m, EquityAgg))

    running = asyncio.create_task(client.connect(collect))
    try:
        yield client, trades
    finally:
        await client.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, WAIT_SECONDS)


async def until(what: str, condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_SECONDS):
        while not condition():  # noqa: ASYNC110 - the client's own state, polled
            await asyncio.sleep(0.05)


async def post(api_url: str, ticks: list[dict[str, Any]]) -> None:
    async with httpx.AsyncClient(base_url=api_url, auth=(USER, PASSWORD)) as http:
        assert (await http.post("/ingest/ticks", json=ticks)).status_code == 202


async def live(api_url: str, trades: list[EquityTrade], symbol: str = "AAPL") -> None:
    """Post probe ticks until one arrives: the subscription is in force on the server (the client
    sends it on its own schedule). Probes are not part of what a test checks (`real`)."""
    async with asyncio.timeout(WAIT_SECONDS):
        while not any(t.id.startswith("probe-") for t in trades):
            await post(api_url, [tick(0, symbol=symbol, event_id=f"probe-{uuid.uuid4().hex}")])
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await until("a probe", lambda: any(t.id.startswith("probe-") for t in trades))


def real(trades: list[EquityTrade]) -> list[EquityTrade]:
    return [t for t in trades if not t.id.startswith("probe-")]


def test_trades_arrive_as_t_events_equal_to_the_ticks(api_url: str, db: Connection) -> None:
    moments = [datetime(2026, 11, 20, 14, 30, i, 250_000, tzinfo=UTC) for i in range(3)]
    ticks = [
        tick(i, ts=m.isoformat(), price=100.5 + i, volume=10 + i) for i, m in enumerate(moments)
    ]

    async def scenario() -> list[EquityTrade]:
        async with connected(api_url, "any key", "T.AAPL") as (_, trades):
            await live(api_url, trades)
            await post(api_url, ticks)
            await post(api_url, [tick(9, symbol="MSFT"), tick(1, price=555.0)])  # other, resend
            await post(api_url, [tick(3, ts=moments[0].isoformat(), price=99.0)])
            await until("4 trades", lambda: len(real(trades)) >= 4)
            return real(trades)

    trades = asyncio.run(scenario())
    assert [(t.symbol, t.id, t.price, t.size, t.timestamp) for t in trades] == [
        ("AAPL", "e-0", 100.5, 10, int(moments[0].timestamp() * 1000)),
        ("AAPL", "e-1", 101.5, 11, int(moments[1].timestamp() * 1000)),
        ("AAPL", "e-2", 102.5, 12, int(moments[2].timestamp() * 1000)),
        ("AAPL", "e-3", 99.0, 100, int(moments[0].timestamp() * 1000)),
    ]
    assert [t.sequence_number for t in trades] == sorted(t.sequence_number for t in trades)


def test_unsubscribing_stops_the_events(api_url: str, db: Connection) -> None:
    async def scenario() -> list[dict[str, Any]]:
        client = WebSocketClient(
            api_key="any key", feed=api_url.removeprefix("http://"), market="stocks",
            secure=False, subscriptions=["T.AAPL", "T.MSFT"], max_reconnects=0, raw=True,
        )  # fmt: skip
        events: list[dict[str, Any]] = []

        async def collect(frame: str | bytes) -> None:
            events.extend(json.loads(frame))

        def said(message: str) -> bool:
            return any(e.get("message") == message for e in events)

        running = asyncio.create_task(client.connect(collect))
        try:
            await until("subscribed", lambda: said("subscribed to: T.MSFT"))
            await post(api_url, [tick(1)])
            await until("e-1", lambda: any(e.get("i") == "e-1" for e in events))
            client.unsubscribe("T.AAPL")
            await until("unsubscribed", lambda: said("unsubscribed to: T.AAPL"))
            await post(api_url, [tick(2)])
            await post(api_url, [tick(3, symbol="MSFT")])  # accepted after: arrives after
            await until("the MSFT trade", lambda: any(e.get("sym") == "MSFT" for e in events))
        finally:
            await client.close()
            await asyncio.wait_for(running, WAIT_SECONDS)
        return [e for e in events if e["ev"] == "T"]

    trades = asyncio.run(scenario())
    assert [(t["sym"], t["i"]) for t in trades] == [("AAPL", "e-1"), ("MSFT", "e-3")]


def test_a_wrong_key_is_refused_when_read_keys_are_set(database_url: str) -> None:
    env = {**api_env(database_url), "READ_API_KEYS": "alpha, beta"}

    async def connect(url: str, key: str) -> None:
        client = WebSocketClient(
            api_key=key, feed=url.removeprefix("http://"), market="stocks", secure=False,
            max_reconnects=0,
        )  # fmt: skip

        async def ignore(_: list[Any]) -> None:
            await client.close()  # the first frame after auth: authenticated

        await asyncio.wait_for(client.connect(ignore), WAIT_SECONDS)

    with api_server(env) as url:
        with pytest.raises(AuthError, match="authentication failed"):
            asyncio.run(connect(url, "gamma"))
        asyncio.run(_authenticated(url, "beta"))


async def _authenticated(url: str, key: str) -> None:
    """The key is accepted: the client gets past auth and receives our subscription reply."""
    client = WebSocketClient(
        api_key=key, feed=url.removeprefix("http://"), market="stocks", secure=False,
        subscriptions=["T.AAPL"], max_reconnects=0, raw=True,
    )  # fmt: skip
    frames: list[str | bytes] = []

    async def keep(frame: str | bytes) -> None:
        frames.append(frame)
        await client.close()

    await asyncio.wait_for(client.connect(keep), WAIT_SECONDS)
    assert b"subscribed to: T.AAPL" in (
        frames[0] if isinstance(frames[0], bytes) else frames[0].encode()
    )


def test_every_subscriber_gets_trades_accepted_by_either_worker(
    database_url: str, db: Connection
) -> None:
    """Four clients, spread over two API workers by the kernel, and ticks posted on new
    connections (spread likewise): every client gets every trade, in acceptance order."""

    async def scenario(url: str) -> list[list[str]]:
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(connected(url, "any key", "T.MSFT"))
                for _ in range(4)
            ]
            for _, trades in clients:
                await live(url, trades, symbol="MSFT")
            for i in range(8):
                async with httpx.AsyncClient(base_url=url, auth=(USER, PASSWORD)) as http:
                    sent = await http.post("/ingest/tick", json=tick(100 + i, symbol="MSFT"))
                    assert sent.status_code == 202
            await until(
                "8 trades each",
                lambda: all(len(real(ts)) >= 8 for _, ts in clients),
            )
            # Another client's probes may reach a client that was live already: not trades here.
            return [
                [t.id for t in trades if not t.id.startswith("probe-")] for _, trades in clients
            ]

    with api_server(api_env(database_url), workers=2) as url:
        received = asyncio.run(scenario(url))
    assert received == [[f"e-{100 + i}" for i in range(8)]] * 4


def expected_bars(ticks: list[dict[str, Any]], width_ms: int) -> dict[int, tuple[Any, ...]]:
    """Bars computed here from the ticks, by bucket start (epoch ms): open, high, low, close,
    volume, VWAP (rounded), average size."""
    buckets: dict[int, list[dict[str, Any]]] = {}
    for t in sorted(ticks, key=lambda t: datetime.fromisoformat(t["ts"])):
        ms = (datetime.fromisoformat(t["ts"]) - EPOCH) // timedelta(milliseconds=1)
        buckets.setdefault(ms // width_ms * width_ms, []).append(t)
    return {
        start: (
            ts[0]["price"], max(t["price"] for t in ts), min(t["price"] for t in ts),
            ts[-1]["price"], sum(t["volume"] for t in ts),
            round(sum(t["price"] * t["volume"] for t in ts) / sum(t["volume"] for t in ts), 9),
            sum(t["volume"] for t in ts) / len(ts),
        )
        for start, ts in buckets.items()
    }  # fmt: skip


def bar_values(bar: EquityAgg) -> tuple[Any, ...]:
    assert bar.vwap is not None
    return (
        bar.open, bar.high, bar.low, bar.close, bar.volume, round(bar.vwap, 9), bar.average_size
    )  # fmt: skip


def test_second_bars_equal_the_trades_of_their_second(api_url: str, db: Connection) -> None:
    """Ticks stamped now: their second closes, and its `A` bar is what the ticks make."""

    async def scenario() -> tuple[dict[int, tuple[Any, ...]], dict[int, EquityAgg]]:
        bars: list[EquityAgg] = []
        async with connected(api_url, "any key", "T.AAPL", "A.AAPL", bars=bars) as (_, trades):
            await live(api_url, trades)
            now = datetime.now(UTC)
            ticks = [
                tick(i, ts=(now - timedelta(milliseconds=7 * i)).isoformat(),
                     price=[101.0, 99.5, 100.25][i], volume=10 + i)
                for i in range(3)
            ]  # fmt: skip
            await post(api_url, ticks)
            expected = expected_bars(ticks, 1000)
            first: dict[int, EquityAgg] = {}
            await until(
                "a bar for each second",
                lambda: all(any(b.start_timestamp == s for b in bars) for s in expected),
            )
            for bar in bars:
                first.setdefault(bar.start_timestamp or 0, bar)
            return expected, first

    expected, first = asyncio.run(scenario())
    for start, values in expected.items():
        bar = first[start]
        assert (bar.event_type, bar.symbol, bar.end_timestamp) == ("A", "AAPL", start + 1000)
        assert bar_values(bar) == values


async def minute_bars_sent_twice(
    api_url: str,
    start: int,
    ticks: list[dict[str, Any]],
    change: Callable[[], Awaitable[None]],
) -> list[EquityAgg]:
    """The `AM` bars of AAPL's minute starting at `start` (epoch ms): sent once `ticks` are
    posted, then again after `change`."""
    bars: list[EquityAgg] = []
    async with connected(api_url, "any key", "T.AAPL", "AM.AAPL", bars=bars) as (_, trades):
        await live(api_url, trades)

        def ours() -> list[EquityAgg]:
            return [b for b in bars if b.start_timestamp == start]

        await post(api_url, ticks)
        await until("the minute's bar", lambda: len(ours()) == 1)
        await change()
        await until("the bar sent again", lambda: len(ours()) >= 2)
        return ours()


def test_a_late_trade_sends_the_minute_bar_again_with_its_new_values(
    api_url: str, db: Connection
) -> None:
    """A closed minute's `AM` bar, then a resend (nothing changes: no bar), then a late trade with
    a new high: the bar again, corrected."""
    minute = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
    start = int(minute.timestamp() * 1000)
    ticks = [
        tick(i, ts=(minute + timedelta(seconds=10 * i)).isoformat(), price=100.0 + i % 2,
             volume=5 * (i + 1))
        for i in range(4)
    ]  # fmt: skip
    late = tick(99, ts=(minute + timedelta(seconds=59)).isoformat(), price=120.0, volume=1)

    async def resend_then_late() -> None:
        await post(api_url, [ticks[1]])  # a resend: no new trade, no new bar
        await post(api_url, [late])

    bars = asyncio.run(minute_bars_sent_twice(api_url, start, ticks, resend_then_late))
    assert [(b.event_type, b.symbol, b.end_timestamp) for b in bars] == [
        ("AM", "AAPL", start + 60_000)
    ] * 2
    assert [bar_values(b) for b in bars] == [
        expected_bars(ticks, 60_000)[start],
        expected_bars([*ticks, late], 60_000)[start],
    ]


def test_a_cancel_sends_the_minute_bar_again_without_the_trade(
    api_url: str, db: Connection
) -> None:
    """A closed minute's `AM` bar, then a cancel of its high (still pending): the bar again,
    restated without it."""
    minute = datetime(2026, 11, 20, 16, 0, tzinfo=UTC)
    start = int(minute.timestamp() * 1000)
    ticks = [
        tick(i, ts=(minute + timedelta(seconds=10 * i)).isoformat(), price=[100.0, 130.0, 101.0][i],
             volume=5 * (i + 1))
        for i in range(3)
    ]  # fmt: skip

    async def cancel_the_high() -> None:
        async with httpx.AsyncClient(base_url=api_url, auth=(USER, PASSWORD)) as http:
            body = {"trades": [{"source": "XNAS", "event_id": "e-1"}]}
            assert (await http.post("/ingest/cancels", json=body)).status_code == 200

    bars = asyncio.run(minute_bars_sent_twice(api_url, start, ticks, cancel_the_high))
    assert [bar_values(b) for b in bars] == [
        expected_bars(ticks, 60_000)[start],
        expected_bars([ticks[0], ticks[2]], 60_000)[start],
    ]


async def slow_ends(api_url: str) -> float:
    async with httpx.AsyncClient(base_url=api_url) as http:
        text = (await http.get("/metrics", headers={"Accept": "text/plain"})).text
    return sum(
        s.value
        for family in parse_prometheus(text)
        for s in family.samples
        if s.name == "mdp_streams_ended_total" and s.labels.get("reason") == "slow"
    )


def stalled_subscriber(api_url: str, *messages: dict[str, Any]) -> socket.socket:
    """A WebSocket connection to /stocks, written by hand so that no library reads for it: it
    sends `messages` and then never reads (a 4 KiB receive buffer soon fills)."""
    host, port = api_url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(WAIT_SECONDS)
    sock.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /stocks HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .encode()
    )  # fmt: skip
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    for message in messages:
        payload = json.dumps(message).encode()
        assert len(payload) < 126
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    return sock


def test_a_stalled_consumer_is_cut_off_and_never_holds_up_the_others(
    api_url: str, db: Connection
) -> None:
    """One connection subscribes to every trade and stops reading: once it is too far behind
    the server ends it as slow, while a massive client on the same server gets every trade, in
    order."""

    async def scenario() -> tuple[list[str], list[str]]:
        before = await slow_ends(api_url)
        stalled = stalled_subscriber(
            api_url, {"action": "auth", "params": "k"}, {"action": "subscribe", "params": "T.*"}
        )
        posted: list[str] = []
        async with connected(api_url, "any key", "T.*") as (_, trades):
            await live(api_url, trades)
            async with asyncio.timeout(120):
                while await slow_ends(api_url) == before:
                    batch = [tick(len(posted) + i, symbol="MSFT", price=100.0 + i % 10,
                                  event_id=f"slow-{len(posted) + i}")
                             for i in range(1000)]  # fmt: skip
                    await post(api_url, batch)
                    posted += [t["event_id"] for t in batch]
            await until("every trade", lambda: len(real(trades)) >= len(posted))
            stalled.close()
            return posted, [t.id for t in real(trades)]

    posted, received = asyncio.run(scenario())
    assert received == posted


def test_a_stopping_api_closes_its_websockets_cleanly(database_url: str) -> None:
    """Stopping the API closes /stocks and /ws connections with 1012 (service restart): clients
    know to reconnect, none is left hanging."""
    with contextlib.ExitStack() as clients:
        with api_server(api_env(database_url)) as url:
            host = url.removeprefix("http://")
            stream = clients.enter_context(ws_connect(f"ws://{host}/ws", open_timeout=WAIT_SECONDS))
            stocks = clients.enter_context(
                ws_connect(f"ws://{host}/stocks", open_timeout=WAIT_SECONDS)
            )
            stocks.send(json.dumps({"action": "auth", "params": "k"}))
            stocks.send(json.dumps({"action": "subscribe", "params": "T.*"}))
            while "subscribed to" not in str(stocks.recv(timeout=WAIT_SECONDS)):
                pass
        for connection in (stream, stocks):
            with pytest.raises(ConnectionClosedError) as closed:
                connection.recv(timeout=WAIT_SECONDS)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1012


Status = tuple[str, str]  # a status message's (status, message)


@contextlib.contextmanager
def stocks_connection(url: str, key: str) -> Iterator[tuple[ClientConnection, list[Status]]]:
    """A /stocks connection by hand, past its auth step: the connection and what auth got."""
    with ws_connect(f"ws://{url.removeprefix('http://')}/stocks", open_timeout=WAIT_SECONDS) as ws:
        assert statuses(ws) == [("connected", "Connected Successfully")]
        ws.send(json.dumps({"action": "auth", "params": key}))
        yield ws, statuses(ws)


def statuses(ws: ClientConnection) -> list[Status]:
    return [(e["status"], e["message"]) for e in json.loads(ws.recv(timeout=WAIT_SECONDS))]


def change(ws: ClientConnection, params: str, action: str = "subscribe") -> list[Status]:
    """Send a subscribe (or unsubscribe): the statuses it is answered with."""
    ws.send(json.dumps({"action": action, "params": params}))
    return statuses(ws)


def test_unknown_symbols_are_refused_in_the_status_message_and_the_wildcard_kept(
    api_url: str, db: Connection
) -> None:
    """As Polygon answers a subscription it will not serve: an `error` status naming it, while
    the rest of the subscribe is applied; the official client gets the trades it asked for."""

    async def scenario() -> list[dict[str, Any]]:
        client = WebSocketClient(
            api_key="any key", feed=api_url.removeprefix("http://"), market="stocks",
            secure=False, subscriptions=["T.AAPL", "T.NOPE", "AM.*", "X.AAPL"], max_reconnects=0,
            raw=True,
        )  # fmt: skip
        events: list[dict[str, Any]] = []

        async def collect(frame: str | bytes) -> None:
            events.extend(json.loads(frame))

        running = asyncio.create_task(client.connect(collect))
        try:
            await until("four answers", lambda: sum(e["ev"] == "status" for e in events) >= 4)
            await post(api_url, [tick(1)])
            await until("the AAPL trade", lambda: any(e.get("i") == "e-1" for e in events))
        finally:
            await client.close()
            await asyncio.wait_for(running, WAIT_SECONDS)
        return events

    answers = {(e["status"], e["message"]) for e in asyncio.run(scenario()) if e["ev"] == "status"}
    assert answers == {
        ("success", "subscribed to: T.AAPL"),
        ("success", "subscribed to: AM.*"),
        ("error", "unknown symbol 'NOPE': not subscribed to T.NOPE"),
        ("error", "unknown channel 'X.AAPL' (T, A and AM are served)"),
    }


def test_a_symbol_registered_since_the_server_started_can_be_subscribed(
    api_url: str, db: Connection
) -> None:
    with stocks_connection(api_url, "any key") as (ws, _):
        assert change(ws, "T.NEWCO")[0][0] == "error"
        db.execute("INSERT INTO symbols (symbol) VALUES ('NEWCO')")
        # The server re-reads the symbols at most every 2 s: asked again until it has.
        wait_for(
            "NEWCO subscribed",
            lambda: change(ws, "T.NEWCO") == [("success", "subscribed to: T.NEWCO")],
            WAIT_SECONDS,
        )


@pytest.fixture(scope="module")
def capped_url(database_url: str) -> Iterator[str]:
    """An API with read keys, at most three channels per /stocks connection and two connections
    per key."""
    env = {
        **api_env(database_url),
        "READ_API_KEYS": "alpha,beta",
        "MDP_STOCKS_MAX_CHANNELS": "3",
        "MDP_STOCKS_MAX_CONNECTIONS_PER_KEY": "2",
    }
    with api_server(env) as url:
        yield url


def test_a_subscribe_past_the_channel_cap_is_refused_as_a_whole(
    capped_url: str, db: Connection
) -> None:
    over = (
        "error",
        "subscription limit reached: at most 3 channels per connection; nothing of this"
        " subscribe was applied (unsubscribe some, or use a wildcard such as T.*)",
    )
    with stocks_connection(capped_url, "alpha") as (ws, _):
        assert change(ws, "T.AAPL,T.MSFT") == [
            ("success", "subscribed to: T.AAPL"),
            ("success", "subscribed to: T.MSFT"),
        ]
        assert change(ws, "T.GOOGL,T.TSLA") == [over]
        assert change(ws, ",".join(f"T.S{i}" for i in range(200_000))) == [over]
        assert change(ws, "A.*") == [("success", "subscribed to: A.*")]  # a wildcard is one
        assert change(ws, "T.MSFT", "unsubscribe") == [("success", "unsubscribed to: T.MSFT")]
        assert change(ws, "T.TSLA") == [("success", "subscribed to: T.TSLA")]

        # GOOGL was refused with TSLA: its trade, accepted first, never comes.
        asyncio.run(post(capped_url, [tick(1, symbol="GOOGL"), tick(2, symbol="TSLA")]))
        trades: list[dict[str, Any]] = []
        while not trades:
            trades = [e for e in json.loads(ws.recv(timeout=WAIT_SECONDS)) if e["ev"] == "T"]
        assert (trades[0]["sym"], trades[0]["i"]) == ("TSLA", "e-2")


def test_a_key_holds_at_most_the_configured_connections(capped_url: str, db: Connection) -> None:
    """The connection past the cap is told `max_connections`, as Polygon does, and closed with
    1008; another key has its own count, and a key that closes one connects again."""
    with contextlib.ExitStack() as held:
        for _ in range(2):
            _, answer = held.enter_context(stocks_connection(capped_url, "alpha"))
            assert answer == [("auth_success", "authenticated")]
        with stocks_connection(capped_url, "alpha") as (refused, answer):
            assert answer == [
                (
                    "max_connections",
                    "maximum number of connections reached: 2 per key on this server",
                )
            ]
            with pytest.raises(ConnectionClosedError) as closed:
                refused.recv(timeout=WAIT_SECONDS)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        with stocks_connection(capped_url, "beta") as (_, answer):
            assert answer == [("auth_success", "authenticated")]

        # The official client is refused likewise: it ends, it does not hang.
        client = WebSocketClient(
            api_key="alpha", feed=capped_url.removeprefix("http://"), market="stocks",
            secure=False, subscriptions=["T.AAPL"], max_reconnects=0,
        )  # fmt: skip

        async def ignore(_: list[Any]) -> None:
            return None

        with pytest.raises(ConnectionClosedError):
            asyncio.run(asyncio.wait_for(client.connect(ignore), WAIT_SECONDS))

    def admitted() -> bool:
        with stocks_connection(capped_url, "alpha") as (_, answer):
            return answer == [("auth_success", "authenticated")]

    wait_for("alpha admitted once its connections closed", admitted, WAIT_SECONDS)
