"""Run platform processes as children and wait until they answer: used by benchmarks and tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_mdp(args: list[str], env: Mapping[str, str], **popen: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
        [sys.executable, "-m", "mdp", *args], env={**os.environ, **env}, **popen
    )


def wait_until_live(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"API exited with {process.returncode} before answering")
        try:
            if httpx.get(f"{url}/health/liveness", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"API at {url} did not answer within {timeout} s")


def stop(
    process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0
) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def api_server(env: Mapping[str, str], *, workers: int = 1) -> Iterator[str]:
    """`mdp serve` on a free port with `env`; yields its base URL once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = spawn_mdp(["serve", "--port", str(port), "--workers", str(workers)], env)
    try:
        wait_until_live(url, process)
        yield url
    finally:
        stop(process)
