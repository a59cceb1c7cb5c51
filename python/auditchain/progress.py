"""Progress for long commands (export, verify-bundle): tqdm on stderr, shown only when stderr is
a terminal, so it never mixes with --json on stdout.

    bar = meter("export 0190...", unit="lines", total=50_000)
    bar.update(4096)   # an increment, as tqdm counts
    bar.close()        # erases the line
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm

from .cliutil import is_terminal

REDRAW_SECONDS = 0.5
FALLBACK_COLUMNS = 120


def _columns() -> int:
    """The width of the terminal the bar is drawn on (stderr). One that reports no size, as a
    fresh pseudo-terminal does, would make tqdm draw nothing: assume a wide one then."""
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns or FALLBACK_COLUMNS
    except (OSError, ValueError):
        return FALLBACK_COLUMNS


def meter(label: str, *, unit: str, total: int | None = None, enabled: bool | None = None) -> tqdm:
    return tqdm(
        desc=label,
        unit=f" {unit}",
        total=total,
        disable=not (is_terminal() if enabled is None else enabled),
        file=sys.stderr,
        leave=False,
        mininterval=REDRAW_SECONDS,
        unit_scale=True,
        ncols=_columns(),
    )
