"""The command line as a user runs it: where the connection comes from, exit codes, and error
messages that name the target without its password and without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from auditchain import __version__
from auditchain.cli import COMMANDS, main
from auditchain.errors import EXIT_CONFIG, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from conftest import PG_HOST, PG_PORT, PG_USER

REPO = Path(__file__).resolve().parents[2]


def auditchain(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m auditchain.cli ARGV` in a clean environment plus `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "DATABASE_URL"}
    base["PYTHONPATH"] = str(REPO / "python")
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "auditchain.cli", *argv], env=base, capture_output=True, text=True, timeout=120
    )


def ok_for(dbname: str) -> str:
    return (
        "OK: every declared object is present and every migration applied on "
        f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{dbname}\n"
    )


@pytest.fixture
def dbname(dsn: str) -> str:
    return conninfo_to_dict(dsn)["dbname"]


def test_dsn_option(dsn, dbname):
    proc = auditchain("drift-check", "--dsn", dsn)
    assert (proc.returncode, proc.stdout) == (0, ok_for(dbname)), proc.stderr


def test_database_url(dsn, dbname):
    url = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{dbname}"
    proc = auditchain("drift-check", env={"DATABASE_URL": url})
    assert (proc.returncode, proc.stdout) == (0, ok_for(dbname)), proc.stderr


def test_libpq_pg_variables(dsn, dbname):
    env = {"PGHOST": PG_HOST, "PGPORT": str(PG_PORT), "PGUSER": PG_USER, "PGDATABASE": dbname}
    proc = auditchain("drift-check", env=env)
    assert (proc.returncode, proc.stdout) == (0, ok_for(dbname)), proc.stderr


def test_dsn_option_wins_over_database_url_which_wins_over_pg_variables(dsn, dbname):
    nowhere = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/auditchain_no_such_db"
    pg_nowhere = {"PGHOST": PG_HOST, "PGPORT": str(PG_PORT), "PGUSER": PG_USER, "PGDATABASE": "no_such_db"}

    proc = auditchain("drift-check", "--dsn", dsn, env={"DATABASE_URL": nowhere, **pg_nowhere})
    assert (proc.returncode, proc.stdout) == (0, ok_for(dbname)), proc.stderr

    url = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{dbname}"
    proc = auditchain("drift-check", env={"DATABASE_URL": url, **pg_nowhere})
    assert (proc.returncode, proc.stdout) == (0, ok_for(dbname)), proc.stderr


@pytest.mark.parametrize("command", [["migrate"], ["migrate", "--dry-run"], ["drift-check"]])
def test_unreachable_server_exits_3_without_password_or_traceback(command):
    dsn = "postgresql://postgres:secret@127.0.0.1:1/auditchain?connect_timeout=5"
    proc = auditchain(*command, "--dsn", dsn)
    assert proc.returncode == EXIT_UNAVAILABLE
    assert "cannot connect to postgresql://postgres@127.0.0.1:1/auditchain: connection failed" in proc.stderr
    assert "Connection refused" in proc.stderr
    assert "secret" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_database_is_a_setup_problem_named_without_password():
    proc = auditchain("drift-check", "--dsn", f"postgresql://{PG_USER}:secret@{PG_HOST}:{PG_PORT}/no_such_db")
    assert proc.returncode == EXIT_CONFIG
    assert f"cannot connect to postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/no_such_db" in proc.stderr
    assert "secret" not in proc.stdout + proc.stderr


def test_refused_migration_does_not_show_the_password(dsn, tmp_path):
    schema_dir = tmp_path / "schema"
    (schema_dir / "sql").mkdir(parents=True)
    (schema_dir / "migrations").mkdir()
    # A schema folder that lacks every applied migration: the runner refuses and names the target.
    (schema_dir / "migrations" / "0001_other.sql").write_text("SELECT 1;\n", encoding="utf-8")
    params = conninfo_to_dict(dsn)
    secret_dsn = f"{dsn} password=secret"
    proc = auditchain("migrate", "--dsn", secret_dsn, env={"AUDITCHAIN_SCHEMA_DIR": str(schema_dir)})
    assert proc.returncode == 1
    assert f"refusing to migrate postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{params['dbname']}" in proc.stderr
    assert "secret" not in proc.stdout + proc.stderr


def test_invalid_connection_string_is_a_usage_error():
    proc = auditchain("drift-check", "--dsn", "host=127.0.0.1 port")
    assert proc.returncode == EXIT_USAGE
    assert "invalid connection string" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_command_is_a_usage_error():
    proc = auditchain("no-such-command")
    assert proc.returncode == EXIT_USAGE


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"auditchain {__version__}"

    proc = auditchain("--help")
    assert proc.returncode == 0
    for command in ("migrate", "drift-check", "dist"):
        assert command in proc.stdout


def test_console_script_is_installed(dsn, dbname):
    script = Path(sys.executable).parent / "auditchain"
    assert script.exists(), "pip install -e '.[dev]' installs the `auditchain` console script"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    proc = subprocess.run(
        [str(script), "drift-check", "--dsn", dsn], env=env, capture_output=True, text=True, timeout=120
    )
    assert (proc.returncode, proc.stdout) == (0, ok_for(dbname)), proc.stderr


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_help(command, capsys):
    """Each command loads on its own, including those whose module registers several."""
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == EXIT_OK
    assert capsys.readouterr().out.startswith(f"usage: auditchain {command} ")
