"""`auditchain drift-check`: every `-- creates:` object present and every migration applied as
written, or exit 1 with one exact line per problem; the target is named without its password."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from auditchain.schema import load_migrations
from clihelpers import run_cli
from conftest import PG_HOST, PG_PORT, PG_USER
from schemacopy import add_migration, copy_schema


def target_of(dsn: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{conninfo_to_dict(dsn)['dbname']}"


def ok_line(dsn: str) -> str:
    return f"OK: every declared object is present and every migration applied on {target_of(dsn)}\n"


def missing_line(migration: str, name: str, dsn: str) -> str:
    return (
        f"ERROR: migration {migration} declares -- creates: {name} "
        f"but the object is missing on {target_of(dsn)}"
    )


def test_ok_when_everything_is_in_place(dsn, capsys):
    assert run_cli(capsys, "drift-check", "--dsn", dsn) == (0, ok_line(dsn), "")


def test_dropped_index_is_reported_with_the_exact_line(dsn, conn, capsys):
    conn.execute("DROP INDEX compliance.idx_anchors_pending")

    code, out, _ = run_cli(capsys, "drift-check", "--dsn", dsn)

    dbname = conninfo_to_dict(dsn)["dbname"]
    expected = (
        "ERROR: migration 0004_anchors.sql declares -- creates: compliance.idx_anchors_pending "
        f"but the object is missing on postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{dbname}"
    )
    assert code == 1
    assert expected in out.splitlines()
    assert all(line.startswith("ERROR: ") for line in out.splitlines())
    assert "OK" not in out


def test_missing_function_is_reported_with_the_exact_line(dsn, conn, tmp_path, monkeypatch, capsys):
    schema_dir = copy_schema(tmp_path)
    migration = add_migration(
        schema_dir,
        "some_function",
        "-- creates: compliance.some_function\n"
        "CREATE FUNCTION compliance.some_function() RETURNS integer LANGUAGE sql AS 'SELECT 1';\n",
    )
    monkeypatch.setenv("AUDITCHAIN_SCHEMA_DIR", str(schema_dir))
    assert run_cli(capsys, "migrate", "--quiet", "--dsn", dsn)[0] == 0
    assert run_cli(capsys, "drift-check", "--dsn", dsn) == (0, ok_line(dsn), "")

    conn.execute("DROP FUNCTION compliance.some_function()")
    code, out, _ = run_cli(capsys, "drift-check", "--dsn", dsn)

    assert code == 1
    assert out == missing_line(migration, "compliance.some_function", dsn) + "\n"


def test_an_object_a_later_migration_drops_must_stay_dropped(dsn, conn, capsys):
    """0003 creates idx_audit_events_event_hash and 0013 drops it: its absence is no drift,
    and re-creating it by hand is reported with the dropping migration's name."""
    assert run_cli(capsys, "drift-check", "--dsn", dsn) == (0, ok_line(dsn), "")

    conn.execute("CREATE INDEX idx_audit_events_event_hash ON compliance.audit_events (event_hash)")
    code, out, _ = run_cli(capsys, "drift-check", "--dsn", dsn)

    assert code == 1
    assert out == (
        "ERROR: migration 0013_drop_event_hash_index.sql declares -- drops: "
        f"compliance.idx_audit_events_event_hash but the object is still present on {target_of(dsn)}\n"
    )


DECLARING_MIGRATION = """\
-- Objects of every kind the -- creates: grammar names.
-- creates: drift_probe
-- creates: drift_probe.t
-- creates: drift_probe.t_pkey
-- creates: drift_probe.v
-- creates: drift_probe.s
-- creates: drift_probe.mood
-- creates: drift_probe.f
-- creates: drift_probe.p
-- creates: drift_probe.t.t_guard
-- creates: auditchain_drift_probe_role
CREATE SCHEMA drift_probe;
CREATE TABLE drift_probe.t (id integer CONSTRAINT t_pkey PRIMARY KEY);
CREATE VIEW drift_probe.v AS SELECT id FROM drift_probe.t;
CREATE SEQUENCE drift_probe.s;
CREATE TYPE drift_probe.mood AS ENUM ('calm', 'tense');
CREATE FUNCTION drift_probe.f() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE PROCEDURE drift_probe.p() LANGUAGE sql AS $$SELECT 1$$;
CREATE TRIGGER t_guard BEFORE INSERT ON drift_probe.t FOR EACH ROW EXECUTE FUNCTION drift_probe.f();
DO $$BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'auditchain_drift_probe_role') THEN
        CREATE ROLE auditchain_drift_probe_role NOLOGIN;
    END IF;
END$$;
"""

DROPS = [
    # (declared name, statement that removes exactly that object)
    ("drift_probe.t.t_guard", "DROP TRIGGER t_guard ON drift_probe.t"),
    ("drift_probe.v", "DROP VIEW drift_probe.v"),
    ("drift_probe.t_pkey", "ALTER TABLE drift_probe.t DROP CONSTRAINT t_pkey"),
    ("drift_probe.s", "DROP SEQUENCE drift_probe.s"),
    ("drift_probe.mood", "DROP TYPE drift_probe.mood"),
    ("drift_probe.f", "DROP FUNCTION drift_probe.f()"),
    ("drift_probe.p", "DROP PROCEDURE drift_probe.p()"),
    ("drift_probe.t", "DROP TABLE drift_probe.t"),
    ("drift_probe", "DROP SCHEMA drift_probe"),
    ("auditchain_drift_probe_role", "DROP ROLE auditchain_drift_probe_role"),
]


def test_every_kind_of_declaration_is_checked(dsn, conn, tmp_path, monkeypatch, capsys):
    """Schemas, tables, indexes, views, sequences, types, functions, procedures, triggers
    (schema.table.trigger) and roles: each one missing is reported by name, one at a time."""
    schema_dir = copy_schema(tmp_path)
    migration = add_migration(schema_dir, "drift_probe", DECLARING_MIGRATION)
    monkeypatch.setenv("AUDITCHAIN_SCHEMA_DIR", str(schema_dir))
    try:
        assert run_cli(capsys, "migrate", "--quiet", "--dsn", dsn)[0] == 0
        assert run_cli(capsys, "drift-check", "--dsn", dsn) == (0, ok_line(dsn), "")
        gone: list[str] = []
        for name, statement in DROPS:
            conn.execute(statement)
            gone.append(name)
            code, out, _ = run_cli(capsys, "drift-check", "--dsn", dsn)
            assert code == 1, name
            assert sorted(out.splitlines()) == sorted(missing_line(migration, g, dsn) for g in gone), name
    finally:
        conn.execute("DROP SCHEMA IF EXISTS drift_probe CASCADE")
        conn.execute("DROP ROLE IF EXISTS auditchain_drift_probe_role")


def test_unapplied_migration_fails_the_check(dsn, tmp_path, monkeypatch, capsys):
    schema_dir = copy_schema(tmp_path)
    pending = add_migration(schema_dir, "pending", "CREATE TABLE compliance.pending_probe (id integer);\n")
    monkeypatch.setenv("AUDITCHAIN_SCHEMA_DIR", str(schema_dir))

    code, out, _ = run_cli(capsys, "drift-check", "--dsn", dsn)

    assert code == 1
    assert out == f"ERROR: migration {pending} is not applied on {target_of(dsn)}\n"


def test_empty_database_fails_with_every_migration_unapplied(empty_dsn, capsys):
    code, out, _ = run_cli(capsys, "drift-check", "--dsn", empty_dsn)

    assert code == 1
    lines = out.splitlines()
    migrations = load_migrations()
    dropped = {name for m in migrations for name in m.dropped_objects}
    assert dropped, "the drops grammar is exercised by at least one migration"
    for m in migrations:
        assert f"ERROR: migration {m.name} is not applied on {target_of(empty_dsn)}" in lines
        for declared in m.declared_objects:
            # One-part names may be roles, which are cluster-wide; dropped ones are not expected.
            if "." in declared and declared not in dropped:
                assert missing_line(m.name, declared, empty_dsn) in lines
    assert not any(name in line for name in dropped for line in lines)


def test_edited_migration_fails_the_check(dsn, tmp_path, monkeypatch, capsys):
    schema_dir = copy_schema(tmp_path)
    edited = sorted((schema_dir / "migrations").glob("*.sql"))[-1]
    edited.write_text(edited.read_text(encoding="utf-8").replace("\n", "\n\n", 1), encoding="utf-8")
    monkeypatch.setenv("AUDITCHAIN_SCHEMA_DIR", str(schema_dir))

    code, out, _ = run_cli(capsys, "drift-check", "--dsn", dsn)

    assert code == 1
    assert (
        out == f"ERROR: applied migration {edited.name} was edited after it was applied on {target_of(dsn)}\n"
    )


def test_changed_definitions_fail_the_check(dsn, tmp_path, monkeypatch, capsys):
    schema_dir = copy_schema(tmp_path)
    (schema_dir / "sql" / "99_drift_probe.sql").write_text("SELECT 1;\n", encoding="utf-8")
    monkeypatch.setenv("AUDITCHAIN_SCHEMA_DIR", str(schema_dir))

    code, out, _ = run_cli(capsys, "drift-check", "--dsn", dsn)

    assert code == 1
    assert out == f"ERROR: definitions in sql/ changed since they were applied on {target_of(dsn)}\n"


def _with_password(dsn: str, style: str) -> str:
    params = conninfo_to_dict(dsn)
    if style == "keywords":
        return make_conninfo(dsn, password="secret")
    return f"postgresql://{params['user']}:secret@{params['host']}:{params['port']}/{params['dbname']}"


@pytest.mark.parametrize("style", ["keywords", "url"])
def test_target_never_shows_the_password(dsn, conn, capsys, style):
    secret_dsn = _with_password(dsn, style)
    assert "secret" in secret_dsn

    ok = run_cli(capsys, "drift-check", "--dsn", secret_dsn)
    conn.execute("DROP INDEX compliance.idx_anchors_pending")
    failed = run_cli(capsys, "drift-check", "--dsn", secret_dsn)

    assert ok == (0, ok_line(dsn), "")
    assert failed[0] == 1
    assert f"is missing on {target_of(dsn)}" in failed[1]
    for _, out, err in (ok, failed):
        assert "secret" not in out + err


def test_password_from_database_url_is_not_shown(dsn, capsys, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", _with_password(dsn, "url"))
    code, out, err = run_cli(capsys, "drift-check")
    assert (code, out) == (0, ok_line(dsn))
    assert "secret" not in out + err


def test_declared_objects_grammar():
    """The runner reads `-- creates:` lines anywhere in the file, one name per line."""
    from auditchain.schema import SchemaFile

    text = (
        "-- creates: compliance.a\n"
        "--creates:   compliance.b   \n"
        "    -- creates: compliance.t.trg\n"
        "-- this creates: nothing\n"
        "SELECT 1; -- creates: not_a_declaration\n"
    )
    item = SchemaFile("migration", Path("0001_x.sql"), text)
    assert item.declared_objects == ["compliance.a", "compliance.b", "compliance.t.trg"]
    assert SchemaFile("migration", Path("0002_y.sql"), "-- drops: compliance.a\n").dropped_objects == [
        "compliance.a"
    ]


def test_drift_check_changes_nothing(dsn, conn, capsys):
    """drift-check changes nothing, even when it fails."""
    before = conn.execute(
        "SELECT filename, checksum, applied_at FROM compliance.schema_migrations ORDER BY 1"
    ).fetchall()
    conn.execute("DROP INDEX compliance.idx_anchors_pending")
    assert run_cli(capsys, "drift-check", "--dsn", dsn)[0] == 1
    after = conn.execute(
        "SELECT filename, checksum, applied_at FROM compliance.schema_migrations ORDER BY 1"
    ).fetchall()
    assert after == before
    assert conn.execute("SELECT to_regclass('compliance.idx_anchors_pending')").fetchone()[0] is None
