"""Bounded everything, on the write side: a body is refused before it is read (credentials first,
then its size from Content-Length), an unread body costs the API no memory on any kind of route,
and ingest holds a bounded number of body bytes at once: past them `503` with Retry-After, and
nothing of an acknowledged batch is lost."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psutil
import pytest
from pydantic import ValidationError

from core.config import Settings
from core.db import Connection
from mdp.feeder import FeedStats, post_until_acked, retry_pause
from mdp.processes import free_port, spawn_mdp, stop, wait_until_live
from tests.conftest import PASSWORD, USER, api_env
from tests.support import tick, wait_for

MiB = 2**20
HUGE = 256 * MiB
WAIT_SECONDS = 30.0  # bounds for a loaded machine, never measurements
AUTHORIZATION = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@contextlib.contextmanager
def api_process(database_url: str, **env: str) -> Iterator[tuple[str, psutil.Process]]:
    """A fresh `mdp serve` (one process: the API is that process) and its psutil handle."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = spawn_mdp(["serve", "--port", str(port)], {**api_env(database_url), **env})
    try:
        wait_until_live(url, server)
        yield url, psutil.Process(server.pid)
    finally:
        stop(server)


class PeakGrowth:
    """How far a process's resident memory rose above where it was on entry, at its highest,
    sampled every 10 ms while inside."""

    def __init__(self, process: psutil.Process) -> None:
        self._process = process
        self._done = threading.Event()
        self.start = self._rss()
        self.peak = self.start
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    @property
    def mib(self) -> float:
        return (self.peak - self.start) / MiB

    def _rss(self) -> int:
        return int(self._process.memory_info().rss)

    def _sample(self) -> None:
        while not self._done.wait(0.01):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakGrowth:
        self._sampler.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._sampler.join()
        self.peak = max(self.peak, self._rss())


def filler(size: int, chunk: int = MiB) -> Iterator[bytes]:
    """`size` bytes of a body, a chunk at a time: the test never holds it."""
    block = b" " * chunk
    for start in range(0, size, chunk):
        yield block[: min(chunk, size - start)]


def answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP response off `sock`: status, headers (lower-case names), body."""
    received = b""
    while b"\r\n\r\n" not in received:
        data = sock.recv(65536)
        assert data, f"closed before answering: {received!r}"
        received += data
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
    while len(body) < int(headers.get("content-length", 0)):
        data = sock.recv(65536)
        assert data, "closed in the middle of the answer"
        body += data
    return int(status_line.split()[1]), headers, body


def declare(api_url: str, request_line: str, *headers: str) -> socket.socket:
    """A connection that sends a request's headers, declaring a 256 MiB body it never sends."""
    host, port = api_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=WAIT_SECONDS)
    lines = [request_line, f"Host: {host}", "Content-Type: application/json", *headers]
    sock.sendall(("\r\n".join([*lines, f"Content-Length: {HUGE}"]) + "\r\n\r\n").encode())
    return sock


def test_refusals_are_answered_before_any_byte_of_the_body(api_url: str, db: Connection) -> None:
    """Credentials are checked, and a declared size is judged, with the body unread: every
    request below is answered although its 256 MiB body never comes; and the server then drops
    the connection of its own accord (its keep-alive timeout), held by nothing."""
    auth = f"Authorization: {AUTHORIZATION}"
    expected = [
        ("POST /ingest/ticks HTTP/1.1", (), 401),
        ("POST /ingest/tick HTTP/1.1", (), 401),
        ("POST /internal/agg-update HTTP/1.1", (), 401),
        ("POST /ingest/ticks HTTP/1.1", (auth,), 413),
        ("POST /internal/agg-update HTTP/1.1", (auth,), 413),
        ("GET /candles?symbol=AAPL HTTP/1.1", (), 200),
        ("POST /nowhere HTTP/1.1", (), 404),
    ]
    connections = [(declare(api_url, line, *headers), code) for line, headers, code in expected]
    try:
        for (sock, code), (line, _, _) in zip(connections, expected, strict=True):
            status, headers, body = answer(sock)
            assert status == code, line
            assert headers["content-type"] == "application/json", line
            if code >= 400:
                assert json.loads(body)["detail"], line
        for sock, _ in connections:
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(65536) == b"", "the server dropped the connection"
    finally:
        for sock, _ in connections:
            sock.close()
    assert db.execute("SELECT count(*) FROM trade_inbox").fetchone() == (0,)


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("POST", "/ingest/ticks", 401),
        ("POST", "/internal/agg-update", 401),
        ("GET", "/candles?symbol=AAPL", 200),
        ("POST", "/nowhere", 404),
    ],
    ids=["ingest", "agg-update", "a read", "an unknown path"],
)
def test_a_256_mib_body_without_credentials_costs_the_api_no_memory(
    database_url: str, db: Connection, method: str, path: str, code: int
) -> None:
    """The whole body is sent, with a Content-Length and then chunked (the client does not stop
    at the early answer): the server answers without reading it, then drains it unbuffered; its
    resident memory grows less than 16 MiB."""
    declared = {"Content-Length": str(HUGE), "Content-Type": "application/json"}
    with api_process(database_url) as (url, process), httpx.Client(base_url=url) as client:
        for _ in range(3):  # first requests settle lazy imports and buffers
            client.request(method, path, content=b"[]")
        for headers in (declared, {"Content-Type": "application/json"}):
            with PeakGrowth(process) as growth:
                response = client.request(
                    method, path, content=filler(HUGE), headers=headers, timeout=120
                )
            assert response.status_code == code
            assert growth.mib < 16, f"+{growth.mib:.0f} MiB"
        assert client.get("/health/liveness").status_code == 200


def test_a_chunked_body_to_agg_update_is_cut_off_at_the_limit(
    client: httpx.Client, db: Connection
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"candles": ['
        yield from filler(11 * MiB)

    response = client.post("/internal/agg-update", content=chunks())
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


def test_agg_update_refuses_bad_bodies_as_before(client: httpx.Client) -> None:
    """Read by hand now, the body is judged as FastAPI judged it: not JSON a 400, the wrong
    shape a 422 naming the field."""
    malformed = client.post(
        "/internal/agg-update",
        content=b'{"candles": [',
        headers={"Content-Type": "application/json"},
    )
    assert malformed.status_code == 400
    assert "malformed JSON" in malformed.json()["detail"]
    wrong = client.post("/internal/agg-update", json={"candles": [{"symbol": "AAPL"}]})
    assert wrong.status_code == 422
    fields = {e["field"] for e in wrong.json()["errors"]}
    assert fields == {"body.candles.0.interval", "body.candles.0.bucket_start"}


BATCHES = 100
TICK = (
    '{"symbol":"AAPL","price":187.25,"volume":100,"ts":"2026-11-20T14:30:00.123456+00:00",'
    '"source":"B000","event_id":"%09d"}'
)
PER_CHUNK = 512  # ticks


def batch_chunks(limit: int) -> tuple[list[bytes], int]:
    """A JSON batch as large as fits in `limit` bytes, in chunks that end between ticks (its
    source, B000, is replaced per batch), and how many ticks it holds."""
    count = (limit - 1) // (len(TICK % 0) + 1)
    ticks = [TICK % i for i in range(count)]
    parts = [",".join(ticks[i : i + PER_CHUNK]) for i in range(0, count, PER_CHUNK)]
    chunks = [b"[" + parts[0].encode()] + [b"," + p.encode() for p in parts[1:]]
    chunks[-1] += b"]"
    assert sum(map(len, chunks)) <= limit
    return chunks, count


def test_a_crowd_of_large_batches_is_bounded_in_memory_and_loses_nothing(
    database_url: str, db: Connection
) -> None:
    """100 authenticated batches of 10 MiB (84k ticks each) at once, on the default budget: each
    is acknowledged or refused with 503 and Retry-After, nothing else; the API grows less than
    256 MiB; every tick of an acknowledged batch is stored exactly once, none of a refused one."""
    template, count = batch_chunks(Settings().ingest_max_body_bytes)
    length = str(sum(map(len, template)))

    async def body(source: bytes) -> AsyncIterator[bytes]:
        for chunk in template:
            yield chunk.replace(b'"B000"', b'"' + source + b'"')

    async def crowd(url: str) -> list[tuple[str, httpx.Response]]:
        async with httpx.AsyncClient(
            base_url=url,
            auth=(USER, PASSWORD),
            timeout=300,
            limits=httpx.Limits(max_connections=BATCHES),
        ) as http:

            async def post(source: str) -> tuple[str, httpx.Response]:
                response = await http.post(
                    "/ingest/ticks",
                    content=body(source.encode()),
                    headers={"Content-Length": length, "Content-Type": "application/json"},
                )
                return source, response

            return await asyncio.gather(*(post(f"B{i:03d}") for i in range(1, BATCHES + 1)))

    with api_process(database_url) as (url, process):
        httpx.post(f"{url}/ingest/ticks", json=[tick()], auth=(USER, PASSWORD))  # settle
        with PeakGrowth(process) as growth:
            answers = asyncio.run(crowd(url))

    acked = {source for source, r in answers if r.status_code == 202}
    for source, response in answers:
        if source not in acked:
            assert response.status_code == 503, (source, response.status_code, response.text)
            assert response.headers["Retry-After"] == "1"
            assert "in flight" in response.json()["detail"]
    assert acked, "a batch within the budget is accepted"
    assert growth.mib < 256, f"+{growth.mib:.0f} MiB"
    stored = db.execute(
        "SELECT source, count(*), count(DISTINCT event_id) FROM trade_inbox"
        " WHERE source LIKE 'B%' GROUP BY source"
    ).fetchall()
    assert sorted(stored) == [(source, count, count) for source in sorted(acked)]


def holding(api_url: str, size: int) -> socket.socket:
    """A batch of `size` bytes declared and its body not sent yet, once the server asked for it
    (`100 Continue`): its bytes are reserved from then on."""
    host, port = api_url.removeprefix("http://").split(":")
    holder = socket.create_connection((host, int(port)), timeout=WAIT_SECONDS)
    holder.sendall(
        f"POST /ingest/ticks HTTP/1.1\r\nHost: {host}\r\nAuthorization: {AUTHORIZATION}\r\n"
        f"Content-Type: application/json\r\nExpect: 100-continue\r\n"
        f"Content-Length: {size}\r\n\r\n".encode()
    )
    assert holder.recv(65536).startswith(b"HTTP/1.1 100 Continue")
    return holder


def test_the_budget_is_held_until_the_answer_and_refuses_past_it(
    database_url: str, db: Connection
) -> None:
    """With room for one body of 2,000 bytes: a request that declared one and is being read holds
    the room (the server asked for its body: `100 Continue`), so another, declared or chunked, is
    refused at once with 503; once the first is answered, the room is free again."""
    room = {"MDP_INGEST_MAX_BODY_BYTES": "2000", "MDP_INGEST_MAX_INFLIGHT_BYTES": "2000"}
    batch = json.dumps([tick(1), tick(2)]).encode().ljust(1500)
    with api_process(database_url, **room) as (url, _), httpx.Client(base_url=url) as client:
        holder = holding(url, len(batch))

        def refused(content: Any) -> httpx.Response:
            return client.post("/ingest/ticks", content=content, auth=(USER, PASSWORD))

        declared = refused(batch[:600])
        assert declared.status_code == 503
        assert declared.headers["Retry-After"] == "1"
        chunked = refused(iter([batch[:600]]))
        assert chunked.status_code == 503

        holder.sendall(batch)
        assert answer(holder)[0] == 202
        holder.close()
        assert refused(json.dumps([tick(3)]).encode()).status_code == 202
    stored = db.execute("SELECT event_id FROM trade_inbox ORDER BY seq").fetchall()
    assert stored == [("e-1",), ("e-2",), ("e-3",)]


def test_a_chunked_body_reserves_its_bytes_as_they_are_read(
    database_url: str, db: Connection
) -> None:
    """No Content-Length to reserve up front: each chunk is reserved as it is read, so a chunked
    body being read holds room as much as it has sent."""
    room = {"MDP_INGEST_MAX_BODY_BYTES": "2000", "MDP_INGEST_MAX_INFLIGHT_BYTES": "2000"}
    with api_process(database_url, **room) as (url, _), httpx.Client(base_url=url) as client:
        host, port = url.removeprefix("http://").split(":")
        holder = socket.create_connection((host, int(port)), timeout=WAIT_SECONDS)
        part = b"[" + b" " * 1499
        holder.sendall(
            f"POST /ingest/ticks HTTP/1.1\r\nHost: {host}\r\nAuthorization: {AUTHORIZATION}\r\n"
            f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            + f"{len(part):x}\r\n".encode()
            + part
            + b"\r\n"
        )

        def busy() -> bool:
            # Not JSON: were it let in, a 400, and nothing stored either way.
            probe = client.post("/ingest/ticks", content=b"x" * 600, auth=(USER, PASSWORD))
            assert probe.status_code in (400, 503)
            return probe.status_code == 503

        wait_for("the chunk read and its bytes reserved", busy, WAIT_SECONDS)
        rest = json.dumps(tick(1)).encode() + b"]"
        holder.sendall(f"{len(rest):x}\r\n".encode() + rest + b"\r\n0\r\n\r\n")
        assert answer(holder)[0] == 202
        holder.close()
        assert not busy()
    assert db.execute("SELECT count(*) FROM trade_inbox").fetchone() == (1,)


def test_the_feeder_waits_out_a_503_for_its_retry_after_and_delivers(
    database_url: str, db: Connection
) -> None:
    """While the API has no room the feeder's batch is refused with 503 and sent again after
    the Retry-After (1 s, plus up to half as much: clients refused together come back spread),
    until it is acknowledged."""
    refused = httpx.Response(503, headers={"Retry-After": "3"})
    assert all(3 <= retry_pause(refused, 0.1) <= 4.5 for _ in range(100))
    assert retry_pause(httpx.Response(503), 0.4) == 0.4

    room = {"MDP_INGEST_MAX_BODY_BYTES": "2000", "MDP_INGEST_MAX_INFLIGHT_BYTES": "2000"}
    first = json.dumps([tick(1)]).encode().ljust(2000)
    stats = FeedStats()

    async def feed(url: str, holder: socket.socket) -> bool:
        async with httpx.AsyncClient(base_url=url, auth=(USER, PASSWORD)) as client:
            sending = asyncio.create_task(
                post_until_acked(client, [tick(2), tick(3)], stats, asyncio.Event())
            )
            async with asyncio.timeout(WAIT_SECONDS):
                while stats.retries < 2:  # noqa: ASYNC110 - the feeder's own count, polled
                    await asyncio.sleep(0.05)
            holder.sendall(first)
            return await asyncio.wait_for(sending, WAIT_SECONDS)

    with api_process(database_url, **room) as (url, _):
        holder = holding(url, len(first))
        assert asyncio.run(feed(url, holder))
        assert answer(holder)[0] == 202
        holder.close()
    assert stats.rejected == 0
    stored = db.execute("SELECT event_id FROM trade_inbox ORDER BY seq").fetchall()
    assert stored == [("e-1",), ("e-2",), ("e-3",)]


def test_the_budget_must_hold_one_body_at_the_limit() -> None:
    with pytest.raises(ValidationError, match="MDP_INGEST_MAX_INFLIGHT_BYTES"):
        Settings.model_validate(
            {"MDP_INGEST_MAX_BODY_BYTES": 20 * MiB, "MDP_INGEST_MAX_INFLIGHT_BYTES": 10 * MiB}
        )
