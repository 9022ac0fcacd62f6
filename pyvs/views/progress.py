"""A progress bar on stderr for runs that take a while (pyvs compare)."""

from __future__ import annotations

import sys
import time


class Progress:
    """Shown once a run has taken more than a second; one line per step off a terminal."""

    def __init__(self, total: int) -> None:
        self.start = time.monotonic()
        self.total = total
        self.n = 0
        self.shown = False
        self.tty = sys.stderr.isatty()

    def step(self, label: str) -> None:
        if time.monotonic() - self.start > 1.0:
            self._show(label)
        self.n += 1

    def _show(self, label: str) -> None:
        width = 30
        fill = width * self.n // max(self.total, 1)
        bar = f"[{'#' * fill}{'.' * (width - fill)}] {self.n}/{self.total} {label}"
        sys.stderr.write("\r" + bar.ljust(70) if self.tty else bar + "\n")
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            self._show("done")
            if self.tty:
                sys.stderr.write("\n")
