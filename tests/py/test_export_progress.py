"""The terminal progress line used by long commands (auditchain.progress): drawn only when
enabled (stderr is a terminal), at most twice a second, with the rate, and erased at the end."""

from __future__ import annotations

import io

import pytest

from auditchain import progress
from auditchain.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(progress.time, "monotonic", fake)
    return fake


def test_draws_done_total_share_and_rate_at_most_twice_a_second(clock):
    screen = io.StringIO()
    bar = Progress("export 42", unit="lines", total=200_000, enabled=True, stream=screen)
    bar.update(1_000)
    assert screen.getvalue() == "", "nothing in the first half second"
    clock.now += 2.0
    bar.update(100_000)
    assert screen.getvalue() == "\rexport 42: 100,000 of 200,000 lines (50%), 50,000 lines/s"
    clock.now += 0.1
    bar.update(105_000)
    assert screen.getvalue().count("\r") == 1, "no redraw within half a second"
    bar.finish()
    assert screen.getvalue().endswith("\r" + " " * 57 + "\r"), "finish erases the line"


def test_without_a_total_shows_the_running_count(clock):
    screen = io.StringIO()
    bar = Progress("verify", unit="events", enabled=True, stream=screen)
    clock.now += 1.0
    bar.update(500)
    assert screen.getvalue() == "\rverify: 500 events, 500 events/s"


def test_disabled_progress_writes_nothing(clock):
    screen = io.StringIO()
    bar = Progress("export", unit="lines", total=10, enabled=False, stream=screen)
    clock.now += 5.0
    bar.update(10)
    bar.finish()
    assert screen.getvalue() == ""


def test_enabled_follows_whether_stderr_is_a_terminal(monkeypatch):
    monkeypatch.setattr(progress, "is_terminal", lambda: True)
    assert Progress("x", unit="lines").enabled
    monkeypatch.setattr(progress, "is_terminal", lambda: False)
    assert not Progress("x", unit="lines").enabled
