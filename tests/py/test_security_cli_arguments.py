"""Odd command-line arguments: connection strings carrying passwords and odd characters, and
bucket names S3 would never accept, given to every command that takes them (found by
walking the argument parser, so a new command is covered when it lands).

Each run must end with a clear error (exit 2 for unusable arguments, 3 for an unreachable
dependency) naming what failed, never a traceback, and never echo a password or an AWS
secret key.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from auditchain.cli import build_parser, main
from auditchain.errors import EXIT_CONFIG, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from awsfake import free_port

REPO = Path(__file__).resolve().parents[2]
# What a problem of the setup may exit with; never 1, the code of a failed check.
SETUP_FAILURES = {EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_CONFIG}
# `status` reports a database it cannot reach as the monitoring verdict UNKNOWN (3).
STATUS_UNKNOWN = 3
PASSWORD = "Pa$$ w0rd 'q' \"dq\" \u00fc%"
AWS_SECRET = "h8-secret-access-key-never-printed"
CLOSED_PORT = free_port()  # nothing listens here
DEAD_ENDPOINT = f"http://127.0.0.1:{free_port()}"

# Values that get a command past its own argument checks up to the point where it
# connects. A new required option without a value here fails test_every_command_is_covered.
PLAIN_VALUES = {
    "--stage": "test",
    "--confirm-stage": "test",
    "--bucket": "ac-cli-odd",
    "--filter": "{}",
    "--requested-by": "auditor",
    "--days": "1",
    "--output": "/dev/null",
    "bundle": "s3://ac-cli-odd/exports/x/",
    "--name": "auditchain/1/db",
    "--out": "/nonexistent/checkpoint.key",
    "--vkey": "auditchain/1/db+00000000+AAAA",
    "receipt": "/nonexistent/event.tlog-proof",
    "event": "1",
}


def commands() -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]):
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subparsers:
            yield path, parser
        for action in subparsers:
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))

    yield from walk(build_parser(), ())


def options_of(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings}


def minimal_argv(path: tuple[str, ...], parser: argparse.ArgumentParser) -> list[str]:
    """The command with its required options and, of each required choice, the first."""
    argv = list(path)
    for group in parser._mutually_exclusive_groups:
        if group.required:
            argv.append(group._group_actions[0].option_strings[0])
    positionals = []
    for action in parser._actions:
        if not action.required:
            continue
        name = action.option_strings[0] if action.option_strings else action.dest
        if action.option_strings:
            argv += [name, PLAIN_VALUES[name]]
        else:
            positionals.append(PLAIN_VALUES[name])
    if "--endpoint-url" in options_of(parser):
        argv += ["--endpoint-url", DEAD_ENDPOINT]
    return argv + positionals


DSN_COMMANDS = [(" ".join(p), parser) for p, parser in commands() if "--dsn" in options_of(parser)]
BUCKET_COMMANDS = [(" ".join(p), parser) for p, parser in commands() if "--bucket" in options_of(parser)]

USERINFO = f"ac_user:{quote(PASSWORD, safe='')}"
ODD_DSNS = {
    "URL with an encoded password": f"postgresql://{USERINFO}@127.0.0.1:{CLOSED_PORT}/db",
    "key=value with a quoted password": (
        f"host=127.0.0.1 port={CLOSED_PORT} user=ac_user dbname=db password='"
        + PASSWORD.replace("\\", "\\\\").replace("'", "\\'")
        + "'"
    ),
    "unterminated quote": f"host=127.0.0.1 user=ac_user password='{PASSWORD}",
    "unknown keyword": f"host=127.0.0.1 port={CLOSED_PORT} passwrod={quote(PASSWORD)}",
    "port that is not a number": f"postgresql://{USERINFO}@127.0.0.1:notaport/db",
    "newline and tab in the database name": (
        f"host=127.0.0.1 port={CLOSED_PORT} dbname='a\nb\tc' password=x{quote(PASSWORD)}"
    ),
    "100 kB of options": (
        f"host=127.0.0.1 port={CLOSED_PORT} password={quote(PASSWORD)} options='{'-c a.b=c ' * 10000}'"
    ),
}

ODD_BUCKETS = ["a b", "../etc", "b\u00fccket", "x" * 300, "a\nb"]


@pytest.fixture(autouse=True)
def secrets_in_the_environment(monkeypatch):
    """A secret AWS key and libpq password the commands can see but must never print; one try
    per AWS call so that a dead endpoint fails fast."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAH8TESTKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    for name in ("DATABASE_URL", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "AUDITCHAIN_BUCKET"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture):
    """main() in-process; returns the exit code and everything it printed or logged. An
    unexpected exception (a traceback on a terminal) fails the test."""

    def run(argv: list[str]) -> tuple[int, str]:
        capsys.readouterr()
        caplog.clear()
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code
        out, err = capsys.readouterr()
        return code, out + err + caplog.text

    return run


def assert_clear_and_discreet(code: int, output: str, expected_codes: set[int]) -> None:
    assert code in expected_codes, output
    assert output.strip(), "the failure is explained"
    assert "Traceback" not in output
    for secret in (PASSWORD, quote(PASSWORD, safe=""), quote(PASSWORD), AWS_SECRET):
        assert secret not in output, f"a secret was printed: {output!r}"
    assert "Pa$$" not in output


def test_every_command_is_covered():
    for path, parser in commands():
        minimal_argv(path, parser)  # a KeyError names an option PLAIN_VALUES lacks
    assert len(DSN_COMMANDS) >= 9 and len(BUCKET_COMMANDS) >= 6


@pytest.mark.slow
@pytest.mark.parametrize(("command", "parser"), DSN_COMMANDS, ids=[c for c, _ in DSN_COMMANDS])
def test_odd_connection_strings(run, subtests, command, parser):
    expected = SETUP_FAILURES | {STATUS_UNKNOWN} if command == "status" else SETUP_FAILURES
    for name, dsn in ODD_DSNS.items():
        with subtests.test(name):
            code, output = run([*minimal_argv(tuple(command.split()), parser), "--dsn", dsn])
            assert_clear_and_discreet(code, output, expected)
    with subtests.test("password in DATABASE_URL"):
        os.environ["DATABASE_URL"] = ODD_DSNS["URL with an encoded password"]
        try:
            code, output = run(minimal_argv(tuple(command.split()), parser))
        finally:
            del os.environ["DATABASE_URL"]
        assert_clear_and_discreet(code, output, expected)


@pytest.mark.slow
@pytest.mark.parametrize(("command", "parser"), BUCKET_COMMANDS, ids=[c for c, _ in BUCKET_COMMANDS])
def test_odd_bucket_names(dsn, run, subtests, command, parser):
    """Against a real database, so that the bucket is what fails."""
    for bucket in ODD_BUCKETS:
        with subtests.test(repr(bucket)):
            argv = [*minimal_argv(tuple(command.split()), parser), "--bucket", bucket]
            if "--dsn" in options_of(parser):
                argv += ["--dsn", dsn]
            code, output = run(argv)
            # export run touches S3 only when a job is queued: with none, it has nothing to do.
            assert_clear_and_discreet(
                code, output, {EXIT_OK, *SETUP_FAILURES} if command == "export run" else SETUP_FAILURES
            )


def test_an_invalid_bucket_name_is_a_usage_error(dsn, run):
    code, output = run(["verify", "--bucket", "a b", "--endpoint-url", DEAD_ENDPOINT, "--dsn", dsn])
    assert code == EXIT_USAGE, output


def cli_subprocess(*argv: bytes) -> tuple[int, str]:
    """The CLI as a shell runs it (arguments are bytes; those that are not UTF-8 reach Python
    as lone surrogates)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "python")}
    proc = subprocess.run(
        [sys.executable.encode(), b"-m", b"auditchain.cli", *argv], env=env, capture_output=True, timeout=120
    )
    return proc.returncode, (proc.stdout + proc.stderr).decode("utf-8", "replace")


def test_bucket_arguments_that_are_not_utf8_on_the_real_command_line():
    for argv in (
        [b"verify-bundle", b"s3://bad\xffbucket/x", b"--endpoint-url", DEAD_ENDPOINT.encode()],
        [b"bucket", b"check", b"--bucket", b"\xfe\xff", b"--endpoint-url", DEAD_ENDPOINT.encode()],
    ):
        assert_clear_and_discreet(*cli_subprocess(*argv), SETUP_FAILURES)


def test_a_connection_string_that_is_not_utf8_on_the_real_command_line():
    dsn = b"host=127.0.0.1 port=%d password=" % CLOSED_PORT + PASSWORD.encode() + b"\xff"
    assert_clear_and_discreet(*cli_subprocess(b"drift-check", b"--dsn", dsn), SETUP_FAILURES)


def test_a_url_libpq_cannot_parse_is_not_echoed_with_its_password(run):
    code, output = run(["drift-check", "--dsn", f"postgresql://{USERINFO}@[::1/db"])
    assert_clear_and_discreet(code, output, {EXIT_USAGE})
