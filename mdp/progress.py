"""The progress line of a long command (`mdp backfill`, `mdp import`): redrawn in place on a
terminal, printed as lines of their own into a log."""

from __future__ import annotations

import sys
import time


class ProgressLine:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.tty = sys.stdout.isatty()

    def draw(self, line: str) -> None:
        if self.tty:
            sys.stdout.write(f"\r{line}")
            sys.stdout.flush()
        else:
            print(line, flush=True)

    def end(self) -> None:
        if self.tty:
            sys.stdout.write("\n")
            sys.stdout.flush()
