"""`mdp up`: database, migrations, API, Dagster webserver and daemon, and feeder as one supervised
process tree.

One platform per data folder: `mdp up` holds the folder's platform lock for its lifetime, and
checks its ports before it starts anything. Its children run in sessions of their own (the
terminal's signals reach only `mdp up`) and are stopped in order, each with its whole session.
SIGINT, SIGTERM and SIGHUP (a closed terminal) stop the platform cleanly; should `mdp up` die
without stopping it (`kill -9`), its guard (`mdp.guard`) ends what it left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

import httpx
import psutil

from core.config import Settings
from core.db import create_database, dagster_storage_url, prepare, with_database
from core.embedded import EmbeddedPostgres
from core.files import shipped
from mdp.guard import Guard
from mdp.processes import free_port
from pipelines.names import CODE_LOCATION

STOP_GRACE_SECONDS = 8.0
FIRST_STOPPED = ("feeder", "daemon")
DAGSTER_DATABASE = "dagster"
EXIT_FAILED = 1
EXIT_REFUSED = 2


RUNS_IN_FLIGHT = """
{ runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED]}) {
    ... on Runs { results { runId } } } }
"""
TERMINATE_RUNS = """
mutation ($runIds: [String!]!) {
  terminateRuns(runIds: $runIds, terminatePolicy: SAFE_TERMINATE) { __typename } }
"""


class Refused(Exception):
    """The platform cannot start as asked; the message says why and what to do instead."""


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]


def run_platform(settings: Settings, *, host: str, port: int, dagster_port: int, feed: bool) -> int:
    """Run the platform until a signal stops it or a child fails; the exit status."""
    api_url, dagster_url = f"http://{host}:{port}", f"http://{host}:{dagster_port}"
    try:
        lock = platform_lock(settings.data_dir)
        with lock:
            _check_ports(host, {"--port": port, "--dagster-port": dagster_port})
            describe(lock, dashboard=f"{api_url}/dashboard", dagster_url=dagster_url)
            platform = Platform(settings, lock, host, dagster_url, api_url)
            try:
                if platform.start(feed=feed):
                    platform.say(
                        "ready; Ctrl-C stops everything, and so does closing this terminal"
                    )
                    platform.supervise()
            finally:
                status = platform.stop()
            return status
    except Refused as exc:
        print(f"mdp up: refusing to start: {exc}", file=sys.stderr, flush=True)
        return EXIT_REFUSED


class Platform:
    """The platform's processes on its database: the API (unless `api_url` is None: Dagster
    alone, for a command that needs it), the Dagster code server, daemon and webserver, the feeder
    when asked. `start`, then `supervise` until a signal or a child's failure, then `stop`."""

    def __init__(
        self,
        settings: Settings,
        lock: IO[str],
        host: str,
        dagster_url: str,
        api_url: str | None = None,
        name: str = "mdp up",
    ) -> None:
        self.settings = settings
        self.host = host
        self.api_url = api_url
        self.dagster_url = dagster_url
        self.name = name
        self.children: list[Child] = []
        self.stopping = threading.Event()
        self.failure: str | None = None
        self.embedded: EmbeddedPostgres | None = None
        self.guard = Guard(keep_fds=[lock.fileno()])  # first: from here on nothing is orphaned

    def say(self, message: str) -> None:
        with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
            print(f"{self.name}  {message}", flush=True)

    def start(self, *, feed: bool = False) -> bool:
        """Start everything; True once it all answers, False if stopped or failed meanwhile."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        env = self._prepare()
        logs = self.settings.data_dir.resolve() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.say(f"dagster home {env['DAGSTER_HOME']} (logs in {logs})")
        self._spawn_all(env, logs)
        if self.api_url is not None:
            self._wait_until_answering(f"{self.api_url}/health/liveness")
            if self.stopping.is_set():
                return False
            self.say(f"API          {self.api_url}  (docs {self.api_url}/docs)")
            self.say(f"dashboard    {self.api_url}/dashboard")
            if feed:  # only now: its ticks go to our API, not to whatever else answers
                self._start("feeder", _mdp("feed", "--url", self.api_url), env)
                self.say(f"feeder       posting to {self.api_url}")
        self._wait_until_answering(f"{self.dagster_url}/server_info")
        if self.stopping.is_set():
            return False
        self.say(f"Dagster UI   {self.dagster_url}")
        return True

    def supervise(self) -> None:
        while not self.stopping.wait(0.5):
            self._check_children()

    def stop(self) -> int:
        """Stop every child, then the embedded database if no one else uses it; the exit
        status."""
        self.stopping.set()
        try:
            self._stop_children()
            if self.embedded is not None:
                departure = self.embedded.stop()
                if departure == "stopped":
                    self.say("database     stopped")
                elif departure == "in use":
                    self.say("database     left running: another command still uses it")
        finally:
            self.guard.release()
        if self.failure:
            self.say(f"stopped because {self.failure}")
            return EXIT_FAILED
        return 0

    def _prepare(self) -> dict[str, str]:
        """The database (the embedded one started or joined), migrations, credentials and the
        Dagster instance: the children's environment."""
        env = dict(os.environ)
        if self.settings.database_url:
            database_url = self.settings.database_url
            self.say(f"database     {_redact(database_url)} (DATABASE_URL)")
        else:
            self.embedded = EmbeddedPostgres(self.settings.data_dir / "postgres")
            self.guard.watch_postgres(self.embedded.data_dir)
            self.embedded.start()
            database_url = self.embedded.database("market")
            self.say(f"database     embedded PostgreSQL in {self.embedded.data_dir}")
        env["DATABASE_URL"] = database_url
        applied = prepare(database_url, self.settings.symbol_list, self.settings.market_timezone)
        self.say(f"migrations   {len(applied)} applied, schema up to date")
        env["MDP_DAGSTER_URL"] = self.dagster_url  # the dashboard links to it
        if self.api_url is not None:
            env.update(self._credentials())
            env["API_URL"] = self.api_url
        env.update(dagster_instance(self.settings, database_url, self.embedded))
        return env

    def _spawn_all(self, env: dict[str, str], logs: Path) -> None:
        # One code server for the daemon and the webserver: left to themselves, each starts its
        # own, and the daemon replaces its own every minute (seconds of CPU each time).
        code_port = free_port()
        workspace = _workspace(Path(env["DAGSTER_HOME"]), code_port)
        code_server = [
            "dagster", "api", "grpc", "-m", CODE_LOCATION,
            "--location-name", CODE_LOCATION, "-h", "127.0.0.1", "-p", str(code_port),
        ]  # fmt: skip
        dagster_port = self.dagster_url.rsplit(":", 1)[1]
        webserver = ["dagster-webserver", "-h", self.host, "-p", dagster_port]
        if self.api_url is not None:
            api_port = self.api_url.rsplit(":", 1)[1]
            self._start("api", _mdp("serve", "--host", self.host, "--port", api_port), env)
        self._start("code-server", code_server, env, logs / "dagster-code.log")
        self._wait_until_listening(code_port)
        daemon = ["dagster-daemon", "run", "-w", str(workspace)]
        self._start("daemon", daemon, env, logs / "dagster-daemon.log")
        webserver += ["-w", str(workspace)]
        self._start("dagster-ui", webserver, env, logs / "dagster-webserver.log")

    def _on_signal(self, signum: int, _: FrameType | None) -> None:
        if not self.stopping.is_set():
            self.say(f"{signal.Signals(signum).name}: stopping")
        self.stopping.set()

    def _credentials(self) -> dict[str, str]:
        if self.settings.ingest_username and self.settings.ingest_password:
            return {}
        user, password = "feeder", secrets.token_urlsafe(18)
        self.say(f"credentials  generated for this run: {user} / {password}")
        return {"INGEST_USERNAME": user, "INGEST_PASSWORD": password}

    def _start(
        self, name: str, command: list[str], env: dict[str, str], log: Path | None = None
    ) -> None:
        child = _spawn(name, command, env, log)
        self.guard.watch_session(child.process.pid)
        self.children.append(child)

    def _wait_until_listening(self, port: int) -> None:
        while not self.stopping.is_set():
            self._check_children()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return
            self.stopping.wait(0.5)

    def _wait_until_answering(self, url: str) -> None:
        while not self.stopping.is_set():
            self._check_children()  # first: a dead child's port may be answered by another
            if self.stopping.is_set() or _answers(url):
                return
            self.stopping.wait(0.5)

    def _check_children(self) -> None:
        for child in self.children:
            if child.process.poll() is not None and not self.stopping.is_set():
                self.failure = f"{child.name} exited with status {child.process.returncode}"
                self.say(f"{child.name} exited with status {child.process.returncode}; stopping")
                self.stopping.set()

    def _stop_children(self) -> None:
        """The feeder and the Dagster daemon first (nothing new is sent or launched), then the
        runs in flight are canceled, then the rest, each child with its whole process group."""
        _stop([c for c in self.children if c.name in FIRST_STOPPED], self.say)
        if any(c.name == "dagster-ui" for c in self.children):
            self._cancel_runs()
        _stop([c for c in self.children if c.name not in FIRST_STOPPED], self.say)

    def _cancel_runs(self) -> None:
        """Ask Dagster to cancel the runs in flight (the drain run above all) before stopping it:
        they end CANCELED, as stopped on purpose, not FAILED as if they had crashed."""
        graphql = f"{self.dagster_url}/graphql"
        try:
            found = httpx.post(graphql, json={"query": RUNS_IN_FLIGHT}, timeout=5).json()
            runs = [r["runId"] for r in found["data"]["runsOrError"]["results"]]
            if not runs:
                return
            self.say(f"dagster      canceling {len(runs)} run(s) in flight")
            httpx.post(
                graphql,
                json={"query": TERMINATE_RUNS, "variables": {"runIds": runs}},
                timeout=STOP_GRACE_SECONDS,
            )
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            while time.monotonic() < deadline:
                found = httpx.post(graphql, json={"query": RUNS_IN_FLIGHT}, timeout=5).json()
                if not found["data"]["runsOrError"]["results"]:
                    return
                time.sleep(0.25)
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            pass  # the webserver is not answering: stopping the processes ends the runs anyway


def dagster_instance(
    settings: Settings, database_url: str, embedded: EmbeddedPostgres | None
) -> dict[str, str]:
    """DAGSTER_HOME holding the project's dagster.yaml, and the instance database behind it:
    DAGSTER_PG_URL when set, else a `dagster` database on the market database's server."""
    home = (settings.dagster_home or settings.data_dir / "dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(shipped("dagster.yaml"), home / "dagster.yaml")
    storage = settings.dagster_pg_url
    if not storage:
        if embedded is not None:
            storage = embedded.database(DAGSTER_DATABASE)
        else:
            create_database(database_url, DAGSTER_DATABASE)
            storage = with_database(database_url, DAGSTER_DATABASE)
    return {"DAGSTER_HOME": str(home), "DAGSTER_PG_URL": dagster_storage_url(storage)}


def platform_lock(data_dir: Path) -> IO[str]:
    """The data folder's platform lock, held for the platform's lifetime (and by its guard until
    what it left behind is stopped). Its content says who holds it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = (data_dir / "platform.lock").open("a+", encoding="utf-8")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise Refused(
            f"a platform already runs on the data folder {data_dir.resolve()}"
            f"{_holder_text(holder(data_dir))}. Stop it "
            "first (Ctrl-C in its terminal), or give this one a data folder and ports of its own: "
            "MDP_DATA_DIR=data2 mdp up --port 8001 --dagster-port 3001"
        ) from None
    return lock


def describe(lock: IO[str], *, dashboard: str | None, dagster_url: str) -> None:
    """Say in the lock file who holds it and where it answers."""
    lock.seek(0)
    lock.truncate()
    lock.write(
        json.dumps(
            {
                "pid": os.getpid(),
                "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "dashboard": dashboard,
                "dagster_ui": dagster_url,
            }
        )
    )
    lock.flush()


def holder(data_dir: Path) -> dict[str, Any]:
    """What the holder of the data folder's platform lock wrote about itself."""
    try:
        described = json.loads((data_dir / "platform.lock").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return described if isinstance(described, dict) else {}


def _holder_text(described: dict[str, Any]) -> str:
    if not {"pid", "started_at", "dagster_ui"} <= described.keys():
        return ""
    dashboard = f"dashboard {described['dashboard']}, " if described.get("dashboard") else ""
    return (
        f" (pid {described['pid']}, since {described['started_at']}: {dashboard}"
        f"Dagster UI {described['dagster_ui']})"
    )


def _check_ports(host: str, ports: dict[str, int]) -> None:
    if len(set(ports.values())) < len(ports):
        raise Refused(f"{' and '.join(ports)} must differ")
    for option, port in ports.items():
        if _taken(host, port):
            raise Refused(
                f"port {port} on {host} is taken{_listener(port)}; "
                f"choose another with {option} PORT"
            )


def _taken(host: str, port: int) -> bool:
    """Whether binding `host:port` fails, as it would for our server (SO_REUSEADDR, as uvicorn)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise Refused(f"cannot listen on {host}: {exc.strerror}") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError:
            return True
    return False


def _listener(port: int) -> str:
    """` by NAME (pid N)` for the process listening on `port`, when the system tells."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
                return f" by {psutil.Process(conn.pid).name()} (pid {conn.pid})"
    return ""


def _workspace(dagster_home: Path, code_port: int) -> Path:
    """A workspace file pointing the daemon and the webserver at our code server."""
    workspace = dagster_home / "workspace.yaml"
    workspace.write_text(
        "# Written by `mdp up` at every start: the code server it runs for this platform.\n"
        "load_from:\n"
        "  - grpc_server:\n"
        "      host: 127.0.0.1\n"
        f"      port: {code_port}\n"
        f"      location_name: {CODE_LOCATION}\n",
        encoding="utf-8",
    )
    return workspace


def _mdp(*args: str) -> list[str]:
    return [sys.executable, "-m", "mdp", *args]


def _spawn(name: str, command: list[str], env: dict[str, str], log: Path | None = None) -> Child:
    """Start a child in a session of its own: the terminal's signals reach only us, and we stop
    children in order, each with its whole process group (Dagster's code servers and run workers
    included). With `log`, its output goes to that file instead of the terminal."""
    if not Path(command[0]).is_absolute():
        command = [str(Path(sys.executable).with_name(command[0])), *command[1:]]
    output = log.open("ab") if log else None
    try:
        process = subprocess.Popen(
            command,
            env=env,
            start_new_session=True,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
        )
    finally:
        if output:
            output.close()
    return Child(name, process)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


def _stop(children: list[Child], say: Callable[[str], None]) -> None:
    """SIGTERM to each child's process group, SIGKILL to what is left after the grace period."""
    for child in reversed(children):
        _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in reversed(children):
        try:
            child.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
        _signal_group(child, signal.SIGKILL)  # whatever it left behind in its group
        say(f"{child.name:<12} stopped")


def _signal_group(child: Child, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.process.pid, sig)


def _redact(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
