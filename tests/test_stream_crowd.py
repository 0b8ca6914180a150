"""Crowds on `/stream` and `/ws`: one reader per API process serves them all, every connection
gets exactly its events in order, a connection that stops reading neither holds up the others nor
loses an event, a resume past the change log's window is told so, the process refuses streams
past its cap, and no number of readers makes an ack wait."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import socket
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosedError

from core.db import Connection, connect
from mdp.processes import api_server
from tests.conftest import PASSWORD, USER, api_env
from tests.support import ServerSentEvents, tick, wait_for

WAIT_SECONDS = 60.0  # generous bounds for a loaded machine; no test measures time
Event = dict[str, Any]


async def until(what: str, condition: Callable[[], bool]) -> None:
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            while not condition():  # noqa: ASYNC110 - the readers' own state, polled
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(what) from None


async def post(url: str, ticks: list[dict[str, Any]]) -> None:
    async with httpx.AsyncClient(base_url=url, auth=(USER, PASSWORD), timeout=30) as http:
        response = await http.post("/ingest/ticks", json=ticks)
        assert response.status_code == 202, response.text


@contextlib.asynccontextmanager
async def sse(
    url: str, received: list[Event], resume: str | None = None, **params: str
) -> AsyncIterator[None]:
    """A /stream connection (resuming after the event id `resume`) appending its parsed events
    to `received` while open (open once the response has started: its place is taken)."""
    headers = {"Last-Event-ID": resume} if resume else {}
    async with (
        httpx.AsyncClient(timeout=WAIT_SECONDS) as http,
        http.stream("GET", f"{url}/stream", params=params, headers=headers) as response,
    ):
        assert response.status_code == 200

        async def parse() -> None:
            parser = ServerSentEvents()
            async for line in response.aiter_lines():
                if event := parser.line(line):
                    received.append(event)

        async with reading(parse()):
            yield


@contextlib.asynccontextmanager
async def ws(url: str, received: list[Event], **params: str) -> AsyncIterator[None]:
    """A /ws connection appending its events to `received` while open."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    async with ws_connect(f"ws://{url.removeprefix('http://')}/ws?{query}") as connection:

        async def read() -> None:
            async for message in connection:
                received.extend(json.loads(message))

        async with reading(read()):
            yield


@contextlib.asynccontextmanager
async def reading(job: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """`job` running in the background while inside."""
    task = asyncio.create_task(job)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics", headers={"Accept": "text/plain"}).text
    return sum(
        s.value
        for family in parse_prometheus(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def ids(events: list[Event]) -> list[str]:
    return [e["data"]["event_id"] for e in events if e["event"] == "trade"]


def test_a_crowd_of_streams_on_distinct_symbols_is_served_by_one_reader(
    database_url: str, db: Connection
) -> None:
    """60 /stream and 60 /ws connections, each on its own set of symbols, get exactly the trades
    of their symbols in acceptance order, while the database is read about once per batch
    posted: reads do not multiply with connections."""
    symbols = [f"CRWD{i}" for i in range(12)]
    db.execute("INSERT INTO symbols (symbol) SELECT unnest(%s::text[])", [symbols])
    sse_sets = [tuple(c) for c in itertools.combinations(symbols, 2)][:60]
    ws_sets = [tuple(c) for c in itertools.combinations(symbols, 3)][::3][:60]
    batches = [
        [tick(b * 100 + i, symbol=symbols[(b * 7 + i * 5) % 12], event_id=f"c{b}-{i}")
         for i in range(25)]
        for b in range(20)
    ]  # fmt: skip

    async def scenario(url: str) -> tuple[list[list[Event]], float]:
        received: list[list[Event]] = [[] for _ in sse_sets + ws_sets]
        async with contextlib.AsyncExitStack() as crowd:
            for got, wanted in zip(received, sse_sets, strict=False):
                await crowd.enter_async_context(sse(url, got, symbols=",".join(wanted)))
            for got, wanted in zip(received[len(sse_sets) :], ws_sets, strict=True):
                await crowd.enter_async_context(ws(url, got, symbols=",".join(wanted)))
            reads_before = metric(url, "mdp_stream_reads_total")
            for number, batch in enumerate(batches):
                await post(url, batch)
                expected = sum(len(_wanted(batches[: number + 1], s)) for s in sse_sets + ws_sets)
                await until("every event", functools.partial(_at_least, received, expected))
            reads = metric(url, "mdp_stream_reads_total") - reads_before
        return received, reads

    with api_server(api_env(database_url)) as url:
        received, reads = asyncio.run(scenario(url))
    for got, wanted in zip(received, sse_sets + ws_sets, strict=True):
        assert ids(got) == _wanted(batches, wanted)
        assert [e["data"]["seq"] for e in got] == sorted(e["data"]["seq"] for e in got)
    assert reads < len(received)  # one reader per process, not one per connection


def _at_least(received: list[list[Event]], count: int) -> bool:
    return sum(map(len, received)) >= count


def _wanted(batches: list[list[dict[str, Any]]], symbols: tuple[str, ...]) -> list[str]:
    return [t["event_id"] for batch in batches for t in batch if t["symbol"] in symbols]


def test_a_resume_joins_the_shared_reader_without_gap_or_repeat(
    api_url: str, db: Connection
) -> None:
    """While one connection keeps the shared reader going, others resume from ids of its
    events: each gets exactly the events after its id, then the live ones."""

    async def scenario() -> list[list[Event]]:
        first: list[Event] = []
        async with sse(api_url, first, events="trade", symbols="AAPL"):
            await post(api_url, [tick(i, price=100.0 + i) for i in range(30)])
            await until("30 events", lambda: len(first) >= 30)
            resumed: list[list[Event]] = [[], []]
            fifth, twentieth = first[4]["id"], first[19]["id"]
            async with (
                sse(api_url, resumed[0], fifth, events="trade", symbols="AAPL"),
                ws(api_url, resumed[1], events="trade", symbols="AAPL", last_event_id=twentieth),
            ):
                await post(api_url, [tick(i, price=100.0 + i) for i in range(30, 40)])
                await until("the resumed events", lambda: len(resumed[0]) >= 35)
                await until("the resumed events", lambda: len(resumed[1]) >= 20)
        return resumed

    from_fifth, from_twentieth = asyncio.run(scenario())
    assert ids(from_fifth) == [f"e-{i}" for i in range(5, 40)]
    assert ids(from_twentieth) == [f"e-{i}" for i in range(20, 40)]


def test_a_reader_that_stops_reading_holds_up_nobody_and_loses_nothing(
    api_url: str, db: Connection
) -> None:
    """A /stream connection stops reading (a 4 KiB receive buffer, nothing read) while trades
    pour in: once it is far behind it leaves the shared reader (counted), and a /ws connection
    gets every trade meanwhile; when it reads again it gets every trade, in order, exactly once."""
    stalled = stalled_stream(api_url, "/stream?events=trade")
    posted: list[str] = []

    async def scenario() -> list[Event]:
        fell_behind = metric(api_url, "mdp_streams_fell_behind_total")
        prompt: list[Event] = []
        async with ws(api_url, prompt, events="trade"):
            async with asyncio.timeout(WAIT_SECONDS * 2):
                while metric(api_url, "mdp_streams_fell_behind_total") == fell_behind:
                    batch = [
                        tick(n, symbol="MSFT", source="s" * 64, event_id=f"{n:0128}")
                        for n in range(len(posted), len(posted) + 2000)
                    ]
                    await post(api_url, batch)
                    posted.extend(t["event_id"] for t in batch)
            await until("every trade to the prompt reader", lambda: len(prompt) >= len(posted))
        return prompt

    prompt = asyncio.run(scenario())
    assert ids(prompt) == posted
    late = list(itertools.islice(sse_events(stalled), len(posted)))
    stalled.close()
    assert ids(late) == posted


def stalled_stream(url: str, path: str) -> socket.socket:
    """A GET of `path` on a socket with a 4 KiB receive buffer, read by hand (`sse_events`) or
    not at all: nothing reads for it meanwhile. Returned once the response has started."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(WAIT_SECONDS)
    sock.connect((host, int(port)))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"chunked" in head.lower(), head
    return sock


def sse_events(sock: socket.socket) -> Iterator[Event]:
    """The events of a chunked text/event-stream response on `sock`, parsed."""
    body = sock.makefile("rb")
    text = b""
    parser = ServerSentEvents()
    while size := int(body.readline().strip(), 16):
        text += body.read(size)
        body.readline()  # the chunk's CRLF
        *lines, text = text.split(b"\n")
        for line in lines:
            if event := parser.line(line.rstrip(b"\r").decode()):
                yield event


def test_a_resume_past_the_change_log_window_is_told_so(
    api_url: str, client: httpx.Client, db: Connection, database_url: str
) -> None:
    """Candle changes are kept 15 minutes. A resume whose candle changes were pruned meanwhile
    gets a `gap` event first (then the changes still kept); a resume within the window none."""
    from pipelines.ingestion import drain_inbox

    with connect(database_url, autocommit=True) as conn:
        [(kept_before,)] = conn.execute("SELECT coalesce(max(id), 0) FROM candle_updates")
    client.post("/ingest/ticks", json=[tick(1, ts="2026-11-20T10:00:00Z", price=10.0)])
    drain_inbox(db)  # five candle changes, one per interval
    [(newest,)] = db.execute("SELECT max(id) FROM candle_updates").fetchall()
    # What the prune does to changes older than the window (announce_candles.sql).
    db.execute("DELETE FROM candle_updates WHERE id <= %s", [newest - 2])

    def first_events(resume: str, count: int) -> list[Event]:
        got: list[Event] = []

        async def read() -> None:
            async with sse(api_url, got, resume, events="candle"):
                await until("events", lambda: len(got) >= count)

        asyncio.run(read())
        return got[:count]

    gap, *changes = first_events(f"0.{kept_before}", 3)
    assert gap["event"] == "gap"
    assert gap["data"]["missed"] == "candle"
    assert gap["data"]["resumes_after"] == newest - 2
    assert [e["event"] for e in changes] == ["candle", "candle"]
    assert [e["event"] for e in first_events(f"0.{newest - 2}", 2)] == ["candle", "candle"]


def test_streams_past_the_process_cap_are_refused_clearly(database_url: str) -> None:
    """With MDP_STREAMS_PER_PROCESS=2, a third /stream gets 503 with Retry-After and a third /ws
    is closed with 1013 (try again later), each saying why; once one leaves, a new one is let in."""
    env = {**api_env(database_url), "MDP_STREAMS_PER_PROCESS": "2"}

    async def scenario(url: str) -> None:
        held: list[Event] = []
        async with sse(url, held), ws(url, held):
            await until("two streams followed", lambda: metric(url, "mdp_stream_subscribers") >= 2)
            async with httpx.AsyncClient() as http:
                refused = await http.get(f"{url}/stream", timeout=WAIT_SECONDS)
            assert refused.status_code == 503
            assert refused.headers["Retry-After"].isdigit()
            assert "MDP_STREAMS_PER_PROCESS" in refused.json()["detail"]
            with pytest.raises(ConnectionClosedError) as closed:
                async with ws_connect(f"ws://{url.removeprefix('http://')}/ws") as third:
                    await third.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        await until("the streams gone", lambda: metric(url, "mdp_stream_subscribers") == 0)
        async with sse(url, held):
            pass  # let in again

    with api_server(env) as url:
        asyncio.run(scenario(url))


def test_acks_never_wait_for_readers(
    api_url: str, client: httpx.Client, db: Connection, database_url: str
) -> None:
    """Every read connection of the API held by reads stuck behind a lock: a tick is still
    acknowledged, since the inbox writer has connections of its own."""
    readers: list[threading.Thread] = []
    with connect(database_url) as locker:
        locker.execute("LOCK TABLE candles IN ACCESS EXCLUSIVE MODE")
        for _ in range(10):
            readers.append(threading.Thread(target=_read_bars, args=(api_url,)))
            readers[-1].start()
        wait_for(
            "the API's read connections stuck behind the lock",
            lambda: _waiting_on_a_lock(db) >= 8,
            timeout=WAIT_SECONDS,
        )
        ack = client.post("/ingest/tick", json=tick(2))
        locker.rollback()
    for reader in readers:
        reader.join(WAIT_SECONDS)
    assert ack.status_code == 202, ack.text
    assert db.execute("SELECT count(*) FROM trade_inbox WHERE event_id = 'e-2'").fetchone() == (1,)


def _read_bars(url: str) -> None:
    with contextlib.suppress(httpx.HTTPError):  # a read that found no connection (503) is fine
        httpx.get(f"{url}/v2/aggs/ticker/AAPL/range/1/minute/2026-11-20/2026-11-20", timeout=120)


def _waiting_on_a_lock(db: Connection) -> int:
    row = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock'"
    ).fetchone()
    assert row is not None
    return int(row[0])
