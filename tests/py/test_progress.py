"""Progress of long commands (auditchain.progress, tqdm): on stderr only when it is a terminal,
never on stdout (which --json owns), with the label, count and total, erased at the end."""

from __future__ import annotations

import pytest

from auditchain import progress


def test_a_terminal_gets_label_count_and_total_on_stderr_then_the_line_is_erased(monkeypatch, capsys):
    monkeypatch.setattr(progress, "is_terminal", lambda: True)
    bar = progress.meter("export 42", unit="lines", total=200_000)
    bar.update(100_000)
    bar.refresh()
    shown = capsys.readouterr()
    assert shown.out == ""
    assert "export 42" in shown.err and "100k/200k" in shown.err and "lines" in shown.err
    bar.close()
    assert capsys.readouterr().err.endswith("\r"), "leave=False erases the bar"


@pytest.mark.parametrize("enabled", [False, None])
def test_without_a_terminal_nothing_is_written(monkeypatch, capsys, enabled):
    monkeypatch.setattr(progress, "is_terminal", lambda: False)
    bar = progress.meter("verify-bundle", unit="events", total=10, enabled=enabled)
    bar.update(10)
    bar.close()
    assert capsys.readouterr() == ("", "")
