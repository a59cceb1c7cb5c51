"""A one-line progress display on stderr for long commands, shown only when stderr is a terminal.

    progress = Progress("export 0190...", unit="lines", total=50_000)
    for done in ...:
        progress.update(done)       # cheap: redraws at most twice a second
    progress.finish()               # clears the line

Output never goes to stdout, so it cannot mix with --json.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from .cliutil import is_terminal

REDRAW_SECONDS = 0.5


class Progress:
    def __init__(
        self,
        label: str,
        *,
        unit: str,
        total: int | None = None,
        enabled: bool | None = None,
        stream: TextIO | None = None,
    ):
        self.label, self.unit, self.total = label, unit, total
        self.enabled = is_terminal() if enabled is None else enabled
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self._next_draw = self.started + REDRAW_SECONDS
        self._width = 0

    def update(self, done: int) -> None:
        """Report how many units are done so far (a running total, not an increment)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self._next_draw:
            return
        self._next_draw = now + REDRAW_SECONDS
        text = f"{self.label}: {done:,}"
        if self.total:
            text += f" of {self.total:,} {self.unit} ({100 * done // self.total}%)"
        else:
            text += f" {self.unit}"
        text += f", {done / max(now - self.started, 1e-9):,.0f} {self.unit}/s"
        self._width = max(self._width, len(text))
        print(f"\r{text.ljust(self._width)}", end="", file=self.stream, flush=True)

    def finish(self) -> None:
        """Erase the progress line so that whatever is printed next starts clean."""
        if self.enabled and self._width:
            print(f"\r{' ' * self._width}\r", end="", file=self.stream, flush=True)
        self._width = 0
