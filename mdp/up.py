"""`mdp up`: database, migrations, API, Dagster webserver and daemon, and feeder as one supervised
process tree."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx

from mdp.database import create_database, dagster_storage_url, prepare, with_database
from mdp.embedded import EmbeddedPostgres
from mdp.settings import Settings

STOP_GRACE_SECONDS = 8.0
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DAGSTER_DATABASE = "dagster"


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]


def run_platform(settings: Settings, *, host: str, port: int, dagster_port: int, feed: bool) -> int:
    embedded: EmbeddedPostgres | None = None
    children: list[Child] = []
    stop = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        env = dict(os.environ)
        if settings.database_url:
            database_url = settings.database_url
            _say(f"database     {_redact(database_url)} (DATABASE_URL)")
        else:
            embedded = EmbeddedPostgres(settings.data_dir / "postgres")
            embedded.start()
            database_url = embedded.database("market")
            _say(f"database     embedded PostgreSQL in {embedded.data_dir}")
        env["DATABASE_URL"] = database_url
        applied = prepare(database_url, settings.symbol_list)
        _say(f"migrations   {len(applied)} applied, schema up to date")

        if not settings.ingest_username or not settings.ingest_password:
            env["INGEST_USERNAME"] = "feeder"
            env["INGEST_PASSWORD"] = secrets.token_urlsafe(18)
            user, password = env["INGEST_USERNAME"], env["INGEST_PASSWORD"]
            _say(f"credentials  generated for this run: {user} / {password}")
        api_url = f"http://{host}:{port}"
        env["API_URL"] = api_url

        env.update(_dagster_instance(settings, database_url, embedded))
        _say(f"dagster home {env['DAGSTER_HOME']} (logs in {settings.data_dir / 'logs'})")

        workspace = str(PROJECT_ROOT / "workspace.yaml")
        dagster_ui = f"http://{host}:{dagster_port}"
        env["MDP_DAGSTER_URL"] = dagster_ui  # the dashboard links to it
        children.append(_spawn("api", _mdp("serve", "--host", host, "--port", str(port)), env))
        logs = settings.data_dir.resolve() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        daemon = ["dagster-daemon", "run", "-w", workspace]
        children.append(_spawn("daemon", daemon, env, logs / "dagster-daemon.log"))
        webserver = ["dagster-webserver", "-h", host, "-p", str(dagster_port), "-w", workspace]
        children.append(_spawn("dagster-ui", webserver, env, logs / "dagster-webserver.log"))
        if feed:
            children.append(_spawn("feeder", _mdp("feed", "--url", api_url), env))
        _say(f"dashboard    {api_url}/dashboard")
        _say(f"API          {api_url}  (docs {api_url}/docs)")
        _say(f"Dagster UI   {dagster_ui}  (starting)")

        ready = {f"{api_url}/health/liveness": "API", f"{dagster_ui}/server_info": "Dagster UI"}
        while ready and not stop.wait(0.5):
            for url, name in list(ready.items()):
                if _answers(url):
                    _say(f"{name:<12} answering")
                    del ready[url]
            _check_children(children, stop)
        if not stop.is_set():
            _say("ready; Ctrl-C stops everything")

        while not stop.wait(0.5):
            _check_children(children, stop)
        return 0
    finally:
        _stop_children(children)
        if embedded is not None:
            embedded.stop()
            _say("database     stopped")


def _dagster_instance(
    settings: Settings, database_url: str, embedded: EmbeddedPostgres | None
) -> dict[str, str]:
    """DAGSTER_HOME holding the project's dagster.yaml, and the instance database behind it:
    DAGSTER_PG_URL when set, else a `dagster` database on the market database's server."""
    home = (settings.dagster_home or settings.data_dir / "dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    storage = os.environ.get("DAGSTER_PG_URL")
    if not storage:
        if embedded is not None:
            storage = embedded.database(DAGSTER_DATABASE)
        else:
            create_database(database_url, DAGSTER_DATABASE)
            storage = with_database(database_url, DAGSTER_DATABASE)
    return {"DAGSTER_HOME": str(home), "DAGSTER_PG_URL": dagster_storage_url(storage)}


def _mdp(*args: str) -> list[str]:
    return [sys.executable, "-m", "mdp", *args]


def _spawn(name: str, command: list[str], env: dict[str, str], log: Path | None = None) -> Child:
    """Start a child in a session of its own: the terminal's Ctrl-C reaches only us, and we stop
    children in order, each with its whole process group (Dagster's code servers and run workers
    included). With `log`, its output goes to that file instead of the terminal."""
    if not Path(command[0]).is_absolute():
        command = [str(Path(sys.executable).with_name(command[0])), *command[1:]]
    output = log.open("ab") if log else None
    try:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=PROJECT_ROOT,
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


def _check_children(children: list[Child], stop: threading.Event) -> None:
    for child in children:
        if child.process.poll() is not None:
            _say(f"{child.name} exited with {child.process.returncode}; stopping")
            stop.set()


def _signal_group(child: Child, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.process.pid, sig)


def _stop_children(children: list[Child]) -> None:
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
        _say(f"{child.name:<12} stopped")


def _redact(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _say(message: str) -> None:
    print(f"mdp up  {message}", flush=True)
