"""An API process's LISTEN connection heals: killed by the database or silently cut on the way,
it is found dead and replaced within seconds, and the process then serves the candles another
process changed meanwhile, not the ones it had cached (docs/design.md §8)."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import quote

import httpx
from psycopg.conninfo import conninfo_to_dict

from core.db import Connection, libpq_url
from mdp.processes import free_port, spawn_mdp, stop, wait_until_live
from pipelines.ingestion import drain_inbox
from serving.listener import APPLICATION_NAME
from tests.conftest import PASSWORD, USER, api_env
from tests.support import all_candles, send, tick, wait_for
from tests.test_candle_cache import DAY, WINDOW, a_morning

LATE_BUCKET = f"{DAY}T10:02:00Z"
HEALED_WITHIN = 60  # seconds: a bound for a loaded machine; the listener needs about ten


@contextmanager
def an_api(database_url: str) -> Iterator[tuple[httpx.Client, str]]:
    """An `mdp serve` process of its own, and the application name of its LISTEN connection."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = spawn_mdp(["serve", "--port", str(port)], api_env(database_url))
    try:
        wait_until_live(url, process)
        with httpx.Client(base_url=url, auth=(USER, PASSWORD), timeout=10) as client:
            yield client, f"{APPLICATION_NAME} {process.pid}"
    finally:
        stop(process)


def a_late_trade(client: httpx.Client, db: Connection) -> None:
    """A new high in the closed 10:02 bucket, acknowledged and promoted by other processes."""
    send(client, [tick(999, ts=f"{DAY}T10:02:45Z", price=500.0)])
    drain_inbox(db)


def late_bucket(api: httpx.Client) -> dict[str, Any]:
    return {c["bucket_start"]: c for c in all_candles(api, **WINDOW)}[LATE_BUCKET]


def serves_the_late_trade(api: httpx.Client) -> bool:
    candle = late_bucket(api)
    return candle["high"] == 500.0 and candle["is_final"] is True


def test_a_listener_terminated_by_the_database_is_replaced(
    client: httpx.Client, db: Connection, database_url: str
) -> None:
    with an_api(database_url) as (api, listener):
        a_morning(client, db)
        assert late_bucket(api)["high"] != 500.0  # cached now
        terminate = (
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s"
        )
        [(killed, _)] = wait_for(
            "the API to listen",
            lambda: db.execute(terminate, (listener,)).fetchall(),
            timeout=HEALED_WITHIN,
            poll=0.1,
        )
        a_late_trade(client, db)
        wait_for(
            "the API to serve the late trade",
            lambda: serves_the_late_trade(api),
            timeout=HEALED_WITHIN,
            poll=0.2,
        )
        wait_for(
            "the API to listen again",
            lambda: db.execute(
                "SELECT FROM pg_stat_activity WHERE application_name = %s AND pid <> %s",
                (listener, killed),
            ).fetchall(),
            timeout=HEALED_WITHIN,
            poll=0.2,
        )


def test_a_listener_cut_off_without_a_word_is_replaced(
    client: httpx.Client, db: Connection, database_url: str
) -> None:
    with Proxy(database_url) as proxy, an_api(proxy.database_url) as (api, listener):
        a_morning(client, db)
        assert late_bucket(api)["high"] != 500.0  # cached now
        wait_for("the API to listen", lambda: proxy.cut(listener), timeout=HEALED_WITHIN)
        a_late_trade(client, db)  # its notification is lost on the way
        wait_for(
            "the API to serve the late trade",
            lambda: serves_the_late_trade(api),
            timeout=HEALED_WITHIN,
            poll=0.2,
        )


class Proxy:
    """A TCP proxy to the database that can cut a connection off without closing it: from then
    on what either side sends is dropped, as on a dead network path or behind a proxy that timed
    the connection out. Connections are told apart by the application name in their startup
    packet (plaintext: the URL it gives disables TLS and GSS encryption)."""

    def __init__(self, database_url: str) -> None:
        params = conninfo_to_dict(libpq_url(database_url))
        host, port = str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)
        self._upstream: tuple[socket.AddressFamily, Any] = (
            (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}")
            if host.startswith("/")
            else (socket.AF_INET, (host, port))
        )
        self._listener = socket.create_server(("127.0.0.1", 0))
        credentials = quote(str(params.get("user") or ""), safe="")
        if password := params.get("password"):
            credentials += ":" + quote(str(password), safe="")
        self.database_url = (
            f"postgresql://{credentials}@127.0.0.1:{self._listener.getsockname()[1]}"
            f"/{params['dbname']}?sslmode=disable&gssencmode=disable"
        )
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self, application_name: str) -> int:
        """Cut the open connections of `application_name` off; how many there were."""
        with self._lock:
            links = [link for link in self._links if link.application_name == application_name]
        for link in links:
            link.cut.set()
        return len(links)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()
        with self._lock:
            for link in self._links:
                link.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.socket(self._upstream[0], socket.SOCK_STREAM)
        try:
            startup = _recv_exactly(client, 4)
            startup += _recv_exactly(client, struct.unpack("!I", startup)[0] - 4)
            upstream.connect(self._upstream[1])
            upstream.sendall(startup)
        except OSError:
            client.close()
            upstream.close()
            return
        fields = startup[8:].split(b"\0")
        options = dict(zip(fields[0::2], fields[1::2], strict=False))
        link = _Link(client, upstream, options.get(b"application_name", b"").decode())
        with self._lock:
            self._links.append(link)
        threading.Thread(target=link.pump, args=(upstream, client), daemon=True).start()
        link.pump(client, upstream)


class _Link:
    """One proxied connection: a client's socket and the database's."""

    def __init__(self, client: socket.socket, upstream: socket.socket, name: str) -> None:
        self.client, self.upstream, self.application_name = client, upstream, name
        self.cut = threading.Event()

    def pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self.cut.is_set():
                    target.sendall(data)
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        for end in (self.client, self.upstream):
            with suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)  # wakes the other pump, blocked in recv
            end.close()


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed during the startup packet")
        data += chunk
    return data
