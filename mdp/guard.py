"""`mdp up`'s guard: a small process that outlives `mdp up` however it ends (a closed terminal,
`kill -9`) and then ends what it left behind, so that no part of the platform is orphaned.

`mdp up` starts it first, in a session of its own (the terminal's signals do not reach it), and
tells it on its standard input what to watch, a line each:

    session PID         a child of `mdp up`, started as the leader of session PID
    postgres DATA_DIR   the embedded PostgreSQL that `mdp up` uses
    done                `mdp up` stopped everything itself

At the end of its input without `done`, `mdp up` has died: the guard stops every process of the
sessions it was told (SIGTERM, then SIGKILL after a grace period), then the embedded server
unless another process still uses it. It also holds `mdp up`'s platform lock (an inherited
descriptor) until then, so no new platform starts on the data folder while the old one ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import psutil

GRACE_SECONDS = 10.0


class Guard:
    """`mdp up`'s end of the pipe to its guard."""

    def __init__(self, keep_fds: Iterable[int]) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "mdp.guard"],
            stdin=subprocess.PIPE,
            start_new_session=True,
            pass_fds=tuple(keep_fds),
        )
        assert self._process.stdin is not None
        self._pipe: IO[bytes] = self._process.stdin

    def watch_session(self, pid: int) -> None:
        self._tell(f"session {pid}")

    def watch_postgres(self, data_dir: Path) -> None:
        self._tell(f"postgres {data_dir}")

    def release(self) -> None:
        """Everything is stopped: the guard may go without doing anything."""
        self._tell("done")
        with contextlib.suppress(BrokenPipeError):
            self._pipe.close()
        self._process.wait()

    def _tell(self, line: str) -> None:
        with contextlib.suppress(BrokenPipeError):
            self._pipe.write(f"{line}\n".encode())
            self._pipe.flush()


def end_sessions(sessions: set[int], grace: float = GRACE_SECONDS) -> None:
    """SIGTERM every process in `sessions` (those that appear meanwhile too), SIGKILL whatever is
    left after `grace` seconds; returns when none is left."""
    deadline = time.monotonic() + grace
    signalled: set[int] = set()
    while members := _members(sessions):
        overdue = time.monotonic() > deadline
        for process in members:
            if overdue or process.pid not in signalled:
                with contextlib.suppress(psutil.Error):
                    process.send_signal(signal.SIGKILL if overdue else signal.SIGTERM)
                signalled.add(process.pid)
        psutil.wait_procs(members, timeout=0.5)


def _members(sessions: set[int]) -> list[psutil.Process]:
    members = []
    for pid in psutil.pids():
        with contextlib.suppress(OSError, psutil.Error):  # gone meanwhile
            if pid != os.getpid() and os.getsid(pid) in sessions:
                members.append(psutil.Process(pid))
    return members


def main() -> None:
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    sessions: set[int] = set()
    postgres: Path | None = None
    for line in sys.stdin:
        verb, _, argument = line.strip().partition(" ")
        if verb == "session":
            sessions.add(int(argument))
        elif verb == "postgres":
            postgres = Path(argument)
        elif verb == "done":
            return
    end_sessions(sessions)
    if postgres is not None:
        from core.embedded import stop_if_unused

        stop_if_unused(postgres)


if __name__ == "__main__":
    main()
