"""Progress for long commands (export, verify-bundle): tqdm on stderr, shown only when stderr is
a terminal, so it never mixes with --json on stdout.

    bar = meter("export 0190...", unit="lines", total=50_000)
    bar.update(4096)   # an increment, as tqdm counts
    bar.close()        # erases the line
"""

from __future__ import annotations

import shutil
import sys

from tqdm import tqdm

from .cliutil import is_terminal

REDRAW_SECONDS = 0.5


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
        # A terminal that reports no size (a fresh pseudo-terminal) makes tqdm draw nothing.
        ncols=shutil.get_terminal_size((120, 24)).columns,
    )
