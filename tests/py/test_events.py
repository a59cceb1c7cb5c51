"""`auditchain events tail|show` against a real ledger: the events the database chained, with
the hashes it stored as lower-case hex, for roles that may read them; clear exit codes for
nothing found, a malformed id, and a role or schema that cannot be read."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from auditchain.errors import EXIT_CONFIG, EXIT_OK, EXIT_USAGE
from conftest import admin_dsn
from test_anchor import run_cli
from test_watchdog import watchdog_login_fixture  # noqa: F401 (the watchdog_login fixture)


def chain(conn: psycopg.Connection, *events: tuple[str, str, str | None]) -> None:
    """Emit (event_type, actor, tenant) events in order and chain them."""
    for event_type, actor, tenant in events:
        conn.execute("SELECT compliance.emit(%s, %s, '{\"n\": 1}', %s)", (event_type, actor, tenant))
    conn.execute("SELECT compliance.drain()")


def stored(conn: psycopg.Connection) -> dict[int, dict]:
    """The oracle: audit_events itself, hashes turned to hex here rather than by the database."""
    rows = conn.execute(
        "SELECT seq, event_id, tenant_id, event_type, actor, prev_hash, event_hash"
        "  FROM compliance.audit_events"
    )
    return {
        seq: {
            "event_id": str(event_id),
            "tenant_id": tenant,
            "event_type": event_type,
            "actor": actor,
            "prev_hash": bytes(prev).hex(),
            "event_hash": bytes(event_hash).hex(),
        }
        for seq, event_id, tenant, event_type, actor, prev, event_hash in rows
    }


@pytest.fixture
def auditor_login(dsn: str) -> Iterator[str]:
    """A connection string for a LOGIN role whose only membership is compliance_auditor."""
    role = f"ac_auditor_login_{os.getpid()}"
    with psycopg.connect(admin_dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE compliance_auditor").format(sql.Identifier(role)))
    yield make_conninfo(dsn, user=role)
    with psycopg.connect(admin_dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_tail_shows_the_newest_events_oldest_first_with_hex_hashes(conn, auditor_login, capsys):
    chain(conn, ("a.one", "alice", "acme"), ("a.two", "bob", None), ("a.three", "carol", "acme"))
    truth = stored(conn)

    code, out, err = run_cli(capsys, "events", "tail", "-n", "2", "--json", "--dsn", auditor_login)

    assert code == EXIT_OK, err
    events = json.loads(out)
    assert [e["seq"] for e in events] == [2, 3]
    for event in events:
        assert {key: event[key] for key in truth[event["seq"]]} == truth[event["seq"]]
    assert events[1]["prev_hash"] == events[0]["event_hash"]

    code, out, _ = run_cli(capsys, "events", "tail", "--dsn", auditor_login)
    lines = out.splitlines()
    assert code == EXIT_OK
    assert [line.split()[0] for line in lines] == ["1", "2", "3"]
    assert lines[1].split()[2:] == ["-", "a.two", "bob", truth[2]["event_hash"]]


def test_tail_of_one_tenant_and_of_nothing(conn, dsn, capsys):
    code, out, _ = run_cli(capsys, "events", "tail", "--dsn", dsn)
    assert (code, out) == (EXIT_OK, "")

    chain(conn, ("a.one", "alice", "acme"), ("a.two", "bob", "other"), ("a.three", "carol", "acme"))

    code, out, _ = run_cli(capsys, "events", "tail", "--tenant", "acme", "--json", "--dsn", dsn)
    assert code == EXIT_OK
    assert [(e["seq"], e["tenant_id"]) for e in json.loads(out)] == [(1, "acme"), (3, "acme")]
    code, out, _ = run_cli(capsys, "events", "tail", "--tenant", "nobody", "--json", "--dsn", dsn)
    assert (code, json.loads(out)) == (EXIT_OK, [])


def test_show_by_seq_and_by_event_id(conn, dsn, capsys):
    chain(conn, ("a.one", "alice", None), ("a.two", "bob", "acme"))
    truth = stored(conn)[2]

    code, out, err = run_cli(capsys, "events", "show", "2", "--dsn", dsn)

    assert code == EXIT_OK, err
    fields = dict(line.split(None, 1) for line in out.splitlines())
    assert (fields["seq"], fields["event_id"], fields["actor"]) == ("2", truth["event_id"], "bob")
    assert (fields["prev_hash"], fields["event_hash"]) == (truth["prev_hash"], truth["event_hash"])
    assert fields["payload"] == '{"n": 1}'

    code, out, _ = run_cli(capsys, "events", "show", truth["event_id"], "--json", "--dsn", dsn)
    event = json.loads(out)
    assert code == EXIT_OK
    assert {key: event[key] for key in truth} == truth
    assert (event["seq"], event["payload"], event["hash_version"]) == (2, {"n": 1}, 2)


def test_an_erased_actor_and_payload_show_as_erased(conn, dsn, capsys):
    chain(conn, ("a.one", "alice@example.com", "acme"), ("a.two", "bob", "acme"))
    conn.execute("SELECT compliance.erase('{1}', '{payload,actor}', 'request 7', 'GDPR Art. 17')")

    code, out, err = run_cli(capsys, "events", "show", "1", "--dsn", dsn)
    assert code == EXIT_OK, err
    fields = dict(line.split(None, 1) for line in out.splitlines())
    assert (fields["actor"], fields["payload"]) == ("(erased)", "(erased)")
    code, out, err = run_cli(capsys, "events", "tail", "--dsn", dsn)
    assert code == EXIT_OK, err
    assert "(erased)" in out.splitlines()[0] and "alice" not in out


def test_show_of_a_missing_event_is_a_usage_error_not_tampering(conn, dsn, capsys):
    chain(conn, ("a.one", "alice", None))
    queued = conn.execute("SELECT compliance.emit('a.queued', 'bob')").fetchone()[0]

    code, out, err = run_cli(capsys, "events", "show", "2", "--dsn", dsn)
    assert (code, out) == (EXIT_USAGE, "")
    assert err.startswith("auditchain events: no event with seq 2 ")

    code, out, err = run_cli(capsys, "events", "show", str(queued), "--json", "--dsn", dsn)
    assert (code, out) == (EXIT_USAGE, "")
    assert f"no event with event_id {queued} (an event still in the outbox" in err


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "1.5", "9223372036854775808", "01a2-not-a-uuid"])
def test_show_of_a_malformed_id_is_a_usage_error(dsn, bad, capsys):
    with pytest.raises(SystemExit) as usage:
        run_cli(capsys, "events", "show", bad, "--dsn", dsn)
    assert usage.value.code == EXIT_USAGE
    assert f"invalid event {bad!r}" in capsys.readouterr().err


def test_control_characters_in_events_are_escaped_on_a_terminal(conn, dsn, capsys):
    chain(conn, ("a.one", "mallory\x1b[2J\nroot", None))

    code, out, _ = run_cli(capsys, "events", "show", "1", "--dsn", dsn)

    assert code == EXIT_OK
    assert "\x1b" not in out
    assert "actor         mallory\\x1b[2J\\nroot\n" in out
    code, out, _ = run_cli(capsys, "events", "tail", "--json", "--dsn", dsn)
    assert json.loads(out)[0]["actor"] == "mallory\x1b[2J\nroot"


def test_a_role_that_may_not_read_events_or_a_missing_schema_is_a_setup_problem(
    watchdog_login, empty_dsn, capsys
):
    code, _, err = run_cli(capsys, "events", "tail", "--dsn", watchdog_login)
    assert code == EXIT_CONFIG
    assert err == (
        "auditchain events: this role may not read compliance.audit_events_hex: "
        "connect as a compliance_auditor member\n"
    )

    code, _, err = run_cli(capsys, "events", "show", "1", "--dsn", empty_dsn)
    assert code == EXIT_CONFIG
    assert "compliance.audit_events_hex does not exist in this database: run auditchain migrate" in err
