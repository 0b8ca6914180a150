"""`mdp up`: database, migrations, API and feeder as one supervised process tree."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from types import FrameType

from mdp.database import prepare
from mdp.embedded import EmbeddedPostgres
from mdp.settings import Settings

STOP_GRACE_SECONDS = 8.0


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]


def run_platform(settings: Settings, *, host: str, port: int, feed: bool) -> int:
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

        children.append(_spawn("api", ["serve", "--host", host, "--port", str(port)], env))
        if feed:
            children.append(_spawn("feeder", ["feed", "--url", api_url], env))
        _say(f"API          {api_url}  (docs {api_url}/docs)")
        _say("ready; Ctrl-C stops everything")

        while not stop.wait(0.5):
            for child in children:
                if child.process.poll() is not None:
                    _say(f"{child.name} exited with {child.process.returncode}; stopping")
                    stop.set()
        return 0
    finally:
        _stop_children(children)
        if embedded is not None:
            embedded.stop()
            _say("database     stopped")


def _spawn(name: str, args: list[str], env: dict[str, str]) -> Child:
    # A session of its own: the terminal's Ctrl-C reaches only us, and we stop children in order.
    process = subprocess.Popen(
        [sys.executable, "-m", "mdp", *args], env=env, start_new_session=True
    )
    return Child(name, process)


def _stop_children(children: list[Child]) -> None:
    for child in reversed(children):
        if child.process.poll() is None:
            child.process.terminate()
    for child in reversed(children):
        try:
            child.process.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()
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
