"""The whole platform as `mdp up` runs it, on the benchmark database, for the benchmarks that
need Dagster's daemon: freshness and soak."""

from __future__ import annotations

import base64
import contextlib
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil

from core.db import (
    connect,
    create_database,
    dagster_storage_url,
    drop_database,
    with_database,
)
from mdp.processes import free_port, spawn_mdp, stop, wait_until_live

DAGSTER_DATABASE = "mdp_bench_dagster"


@dataclass
class RunningPlatform:
    api: str
    credentials: tuple[str, str]
    process: subprocess.Popen[bytes]
    dagster_database: str

    @property
    def ingest_headers(self) -> dict[str, str]:
        """The headers of a JSON ingest request with the platform's credentials."""
        token = base64.b64encode(":".join(self.credentials).encode()).decode()
        return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


@contextmanager
def running_platform(url: str, *, feed: bool = True) -> Iterator[RunningPlatform]:
    """`mdp up` on emptied market tables and a Dagster instance database of its own; yields once
    the first micro-batch has run, and stops everything on the way out."""
    drop_database(url, DAGSTER_DATABASE)  # each run's Dagster history of its own
    create_database(url, DAGSTER_DATABASE)
    dagster_database = with_database(url, DAGSTER_DATABASE)
    with connect(url) as conn:
        conn.execute("TRUNCATE trade_inbox, trades, candles, ingest_batches, candle_updates")
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    credentials = ("bench", secrets.token_urlsafe(12))
    with tempfile.TemporaryDirectory(prefix="mdp-bench-") as data_dir:
        env = {
            "DATABASE_URL": url,
            "DAGSTER_PG_URL": dagster_storage_url(dagster_database),
            "MDP_DATA_DIR": data_dir,
            "INGEST_USERNAME": credentials[0],
            "INGEST_PASSWORD": credentials[1],
        }
        args = ["up", "--port", str(port), "--dagster-port", str(free_port())]
        if not feed:
            args.append("--no-feed")
        process = spawn_mdp(args, env, stdout=sys.stderr)  # stdout carries the JSON report
        try:
            wait_until_live(api, process, timeout=120)
            _wait_for_first_batch(url, timeout=180)
            yield RunningPlatform(api, credentials, process, dagster_database)
        finally:
            stop(process, signal.SIGTERM, timeout=30)


def _wait_for_first_batch(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if conn.execute("SELECT 1 FROM ingest_batches").fetchone():
                return
            time.sleep(1)
    raise TimeoutError("no micro-batch ran: is the Dagster daemon starting?")


def cpu_seconds(url: str, platform_pid: int) -> dict[str, float]:
    """CPU seconds used so far by each part of the machine's load: the API, Dagster (daemon,
    webserver, code server and its run workers), PostgreSQL (when it runs on this machine) and
    this process, the load generator."""
    parts = {"load_generator": sum(psutil.Process().cpu_times()[:2]), "api": 0.0, "dagster": 0.0}
    with contextlib.suppress(psutil.Error):
        for part, child in _parts(platform_pid):
            parts[part] += _tree_cpu(child)
        with connect(url) as conn:
            [(backend,)] = conn.execute("SELECT pg_backend_pid()").fetchall()
            server = psutil.Process(backend).parent()  # on this machine: the postmaster
            if server and "postgres" in server.name():
                parts["postgres"] = _tree_cpu(server)
    return parts


def api_process(platform_pid: int) -> psutil.Process:
    """The API (`mdp serve`) of the platform `mdp up` runs as `platform_pid`."""
    for part, child in _parts(platform_pid):
        if part == "api":
            return child
    raise RuntimeError("no API process under mdp up")


def _parts(platform_pid: int) -> Iterator[tuple[str, psutil.Process]]:
    """The platform's children that are the API or Dagster, named so."""
    for child in psutil.Process(platform_pid).children():
        command = " ".join(child.cmdline())
        if "mdp serve" in command:
            yield "api", child
        elif "dagster" in command:
            yield "dagster", child


def _tree_cpu(root: psutil.Process) -> float:
    """User and system CPU seconds of a process, its descendants and their reaped children."""
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total
