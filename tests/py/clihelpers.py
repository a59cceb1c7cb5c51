"""The CLI in-process, as `auditchain ARGV` would run it, for tests that read its output."""

from __future__ import annotations

import pytest

from auditchain.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `auditchain ARGV` in this process; returns (exit code, stdout, stderr) of that run only."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
