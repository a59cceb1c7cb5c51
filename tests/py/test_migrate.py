"""`auditchain migrate`: applies each migration once, re-applies sql/ when it changes, refuses an
edited migration before doing anything, lists without changing in --dry-run, and lets one
runner work at a time."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from auditchain.migrate import MIGRATION_LOCK_KEY, migrate
from auditchain.schema import load_definitions, load_migrations
from clihelpers import run_cli
from conftest import PG_HOST, PG_PORT, PG_USER, drop_database
from schemacopy import add_migration, copy_schema

PG_DUMP = "/usr/lib/postgresql/15/bin/pg_dump"
REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------- helpers


def add_probe_definition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Use a schema copy with sql/99_probe.sql (compliance.probe() returns 1); return that file."""
    schema_dir = copy_schema(tmp_path)
    probe = schema_dir / "sql" / "99_probe.sql"
    probe.write_text(
        "CREATE OR REPLACE FUNCTION compliance.probe() RETURNS integer LANGUAGE sql AS 'SELECT 1';\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("AUDITCHAIN_SCHEMA_DIR", str(schema_dir))
    return probe


def recorded(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT filename, kind, checksum, applied_at, applied_by FROM compliance.schema_migrations "
        "ORDER BY filename"
    ).fetchall()


def dbname_of(dsn: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]


def schema_dump(dsn: str) -> str:
    out = subprocess.run(
        [PG_DUMP, "--schema-only", "-d", dsn], check=True, capture_output=True, text=True
    ).stdout
    # pg_dump >= 15.14 wraps the dump in \restrict <random key>; drop that and the SET preamble.
    keep = [
        line
        for line in out.splitlines()
        if line.strip() and not line.startswith(("--", "SET ", "SELECT pg_catalog.set_config", "\\"))
    ]
    return "\n".join(keep)


CATALOG_SQL = """
SELECT 'namespace', nspname FROM pg_namespace
UNION ALL SELECT 'class', c.oid::regclass::text || ':' || c.relkind::text FROM pg_class c
UNION ALL SELECT 'proc', p.oid::regprocedure::text FROM pg_proc p
UNION ALL SELECT 'type', t.oid::regtype::text FROM pg_type t
UNION ALL SELECT 'trigger', tgname FROM pg_trigger
UNION ALL SELECT 'extension', extname FROM pg_extension
UNION ALL SELECT 'default_acl', defaclrole::text FROM pg_default_acl
ORDER BY 1, 2
"""


def catalog(dsn: str) -> tuple[list[tuple], str]:
    """Everything in the database's catalog that a migration could add, plus its pg_dump."""
    with psycopg.connect(dsn, autocommit=True) as c:
        rows = c.execute(CATALOG_SQL).fetchall()
    return rows, schema_dump(dsn)


def cli_env(schema_dir: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PYTHONPATH"] = str(REPO / "python")
    if schema_dir is not None:
        env["AUDITCHAIN_SCHEMA_DIR"] = str(schema_dir)
    return env


# ---------------------------------------------------------------------------- tests


def test_first_migrate_applies_everything_and_second_is_a_noop(empty_dsn, capsys):
    code, _, err = run_cli(capsys, "migrate", "--dsn", empty_dsn)
    assert code == 0, err
    for m in load_migrations():
        assert f"applying migration {m.name}" in err

    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        before_rows = recorded(conn)
    before_catalog = catalog(empty_dsn)
    expected = {m.name for m in load_migrations()} | {d.name for d in load_definitions()}
    assert {row[0] for row in before_rows} == expected

    code, out, err = run_cli(capsys, "migrate", "--dsn", empty_dsn)
    assert code == 0, err
    assert "applying" not in err
    assert f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{dbname_of(empty_dsn)} is up to date" in err
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert recorded(conn) == before_rows  # applied_at included: nothing was re-run
    assert catalog(empty_dsn) == before_catalog


def test_checksum_is_sha256_of_the_file_text(conn):
    rows = {r[0]: r[2] for r in recorded(conn)}
    for item in load_migrations() + load_definitions():
        assert rows[item.name] == hashlib.sha256(item.path.read_bytes()).hexdigest()


def test_edited_applied_migration_is_refused_and_nothing_is_applied(dsn, conn, tmp_path):
    schema_dir = copy_schema(tmp_path)
    edited = sorted((schema_dir / "migrations").glob("*.sql"))[0]
    edited.write_text(
        edited.read_text(encoding="utf-8") + "\n-- an innocent-looking edit\n", encoding="utf-8"
    )
    pending = add_migration(
        schema_dir, "must_not_run", "CREATE TABLE compliance.must_not_exist (id integer);\n"
    )
    (schema_dir / "sql" / "99_must_not_run.sql").write_text(
        "CREATE FUNCTION compliance.must_not_exist_fn() RETURNS integer LANGUAGE sql AS 'SELECT 1';\n",
        encoding="utf-8",
    )
    before = recorded(conn)

    proc = subprocess.run(
        [sys.executable, "-m", "auditchain.cli", "migrate", "--dsn", dsn],
        env=cli_env(schema_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert proc.returncode == 1, proc.stderr
    assert f"applied migration {edited.name} was edited after it was applied" in proc.stderr
    assert "nothing was applied" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert conn.execute("SELECT to_regclass('compliance.must_not_exist')").fetchone()[0] is None
    assert conn.execute("SELECT to_regproc('compliance.must_not_exist_fn')").fetchone()[0] is None
    assert recorded(conn) == before
    assert pending not in {r[0] for r in recorded(conn)}


def test_applied_migration_missing_from_disk_is_refused(dsn, conn, tmp_path, monkeypatch, capsys):
    schema_dir = copy_schema(tmp_path)
    gone = sorted((schema_dir / "migrations").glob("*.sql"))[-1]
    gone.unlink()
    monkeypatch.setenv("AUDITCHAIN_SCHEMA_DIR", str(schema_dir))
    before = recorded(conn)

    code, _, err = run_cli(capsys, "migrate", "--dsn", dsn)

    assert code == 1
    assert f"applied migration {gone.name} is missing from migrations/" in err
    assert recorded(conn) == before


def test_dry_run_lists_pending_work_and_changes_nothing(empty_dsn, capsys):
    before = catalog(empty_dsn)

    code, out, err = run_cli(capsys, "migrate", "--dry-run", "--dsn", empty_dsn)

    assert code == 0, err
    expected = [f"would apply migration {m.name}" for m in load_migrations()]
    if load_definitions():
        expected.append(f"would apply {len(load_definitions())} definition files from sql/")
    assert out.splitlines() == expected
    assert catalog(empty_dsn) == before
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        assert c.execute("SELECT to_regnamespace('compliance')").fetchone()[0] is None


def test_dry_run_on_a_migrated_database_lists_only_what_is_new(dsn, conn, tmp_path, monkeypatch, capsys):
    code, out, _ = run_cli(capsys, "migrate", "--dry-run", "--dsn", dsn)
    assert (code, out) == (0, "nothing to do\n")

    schema_dir = copy_schema(tmp_path)
    pending = add_migration(schema_dir, "dry_probe", "CREATE TABLE compliance.dry_probe (id integer);\n")
    monkeypatch.setenv("AUDITCHAIN_SCHEMA_DIR", str(schema_dir))
    before_rows, before_catalog = recorded(conn), catalog(dsn)

    code, out, _ = run_cli(capsys, "migrate", "--dry-run", "--dsn", dsn)

    assert (code, out) == (0, f"would apply migration {pending}\n")
    assert recorded(conn) == before_rows
    assert catalog(dsn) == before_catalog


def _waiting_for_migration_lock(conn: psycopg.Connection, dbname: str) -> int:
    key = MIGRATION_LOCK_KEY
    return conn.execute(
        """SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
            WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = %s
              AND l.classid = %s AND l.objid = %s AND l.objsubid = 1""",
        (dbname, (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
    ).fetchone()[0]


def test_two_concurrent_runners_apply_each_migration_exactly_once(empty_dsn):
    """Both runners are started while the lock is held, so both are provably waiting on it
    when it is released; each migration is applied by exactly one of them and both succeed."""
    dbname = dbname_of(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as gate:
        gate.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        runners = [
            subprocess.Popen(
                [sys.executable, "-m", "auditchain.cli", "migrate", "--dsn", empty_dsn],
                env=cli_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        deadline = time.monotonic() + 60
        while _waiting_for_migration_lock(gate, dbname) < 2:
            assert all(r.poll() is None for r in runners), "a runner finished without waiting for the lock"
            assert time.monotonic() < deadline, "runners never queued on the migration lock"
            time.sleep(0.05)
        gate.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    results = [r.communicate(timeout=120) for r in runners]

    assert [r.returncode for r in runners] == [0, 0], results
    for m in load_migrations():
        appliers = [err for _, err in results if f"applying migration {m.name}\n" in err]
        assert len(appliers) == 1, (m.name, results)
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        names = [r[0] for r in recorded(c)]
    assert names == sorted({m.name for m in load_migrations()} | {d.name for d in load_definitions()})


def test_concurrent_runners_in_threads_started_together(empty_dsn):
    barrier = threading.Barrier(2)
    plans, errors = [], []

    def runner() -> None:
        try:
            barrier.wait()
            plans.append(migrate(empty_dsn, quiet=True))
        except Exception as exc:  # reported through the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=runner) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)

    assert errors == []
    assert sorted(p.is_noop for p in plans) == [False, True]  # one applied, the other found nothing to do
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        assert len(recorded(c)) == len(load_migrations()) + len(load_definitions())


def test_changed_definition_is_reapplied_on_next_migrate(dsn, conn, tmp_path, monkeypatch, capsys):
    probe = add_probe_definition(tmp_path, monkeypatch)
    assert run_cli(capsys, "migrate", "--dsn", dsn)[0] == 0
    assert conn.execute("SELECT compliance.probe()").fetchone()[0] == 1
    first = {r[0]: r for r in recorded(conn)}

    probe.write_text(probe.read_text(encoding="utf-8").replace("SELECT 1", "SELECT 2"), encoding="utf-8")
    code, _, err = run_cli(capsys, "migrate", "--dsn", dsn)

    assert code == 0, err
    assert "definition files from sql/" in err
    assert conn.execute("SELECT compliance.probe()").fetchone()[0] == 2
    second = {r[0]: r for r in recorded(conn)}
    assert second["99_probe.sql"][2] != first["99_probe.sql"][2]
    for name, row in second.items():
        if row[1] == "definition":  # every definition is re-applied, in order
            assert row[3] > first[name][3], name
        else:  # migrations are never re-run
            assert row == first[name], name

    # Unchanged again: nothing re-applied.
    assert run_cli(capsys, "migrate", "--dsn", dsn)[0] == 0
    assert recorded(conn) == sorted(second.values())


def test_removed_definition_file_is_forgotten_but_its_object_stays(dsn, conn, tmp_path, monkeypatch, capsys):
    """Dropping an object takes a migration: deleting its sql/ file only forgets the file."""
    probe = add_probe_definition(tmp_path, monkeypatch)
    assert run_cli(capsys, "migrate", "--dsn", dsn)[0] == 0

    probe.unlink()
    assert run_cli(capsys, "migrate", "--dsn", dsn)[0] == 0
    assert "99_probe.sql" not in {r[0] for r in recorded(conn)}
    assert conn.execute("SELECT to_regproc('compliance.probe')").fetchone()[0] is not None

    add_migration(probe.parents[1], "drop_probe", "DROP FUNCTION compliance.probe();\n")
    assert run_cli(capsys, "migrate", "--dsn", dsn)[0] == 0
    assert conn.execute("SELECT to_regproc('compliance.probe')").fetchone()[0] is None


def test_failing_migration_is_rolled_back_and_named(dsn, conn, tmp_path, monkeypatch, capsys):
    schema_dir = copy_schema(tmp_path)
    good = add_migration(schema_dir, "good", "CREATE TABLE compliance.good_probe (id integer);\n")
    bad = add_migration(
        schema_dir,
        "bad",
        "CREATE TABLE compliance.half_done (id integer);\n"
        "SELECT no_such_column FROM compliance.good_probe;\n",
    )
    monkeypatch.setenv("AUDITCHAIN_SCHEMA_DIR", str(schema_dir))

    code, _, err = run_cli(capsys, "migrate", "--dsn", dsn)

    assert code == 1
    assert f"migration {bad} failed and was rolled back" in err
    assert "no_such_column" in err
    names = {r[0] for r in recorded(conn)}
    assert good in names and bad not in names  # each migration is its own transaction
    assert conn.execute("SELECT to_regclass('compliance.half_done')").fetchone()[0] is None


def test_create_database_flag_creates_and_migrates(capsys):
    name = f"auditchain_create_{os.getpid()}"
    target = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    try:
        code, _, err = run_cli(capsys, "migrate", "--create-database", "--quiet", "--dsn", target)
        assert (code, err) == (0, "")
        with psycopg.connect(target, autocommit=True) as c:
            assert len(recorded(c)) == len(load_migrations()) + len(load_definitions())
        # A second run with the flag finds the database and does nothing.
        assert run_cli(capsys, "migrate", "--create-database", "--quiet", "--dsn", target)[0] == 0
    finally:
        drop_database(name)
