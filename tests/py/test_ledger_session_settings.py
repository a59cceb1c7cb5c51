"""The chain does not depend on the session: events emitted and drained by a session with
odd TimeZone, DateStyle, IntervalStyle, extra_float_digits, lc_* settings and a schema of
hostile look-alikes first on its search_path hash exactly as in a plain session, and
verify_chain and the incremental verifier report the same, clean or tampered, in both.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

ODD_SETTINGS = (
    "SET TimeZone = 'Pacific/Chatham'",
    "SET DateStyle = 'SQL, DMY'",
    "SET IntervalStyle = 'sql_standard'",
    "SET extra_float_digits = 3",
    "SET lc_monetary = 'C.UTF-8'",
    "SET lc_numeric = 'C.UTF-8'",
    "SET lc_time = 'C.UTF-8'",
    "SET search_path = hostile, pg_catalog, public",
)

# Look-alikes of what hashing and comparing use; with `hostile` before pg_catalog they
# win wherever a name is resolved through the caller's search_path.
HOSTILE = """
CREATE SCHEMA hostile;
CREATE FUNCTION hostile.sha256(bytea) RETURNS bytea LANGUAGE sql AS $$ SELECT '\\x00'::bytea $$;
CREATE FUNCTION hostile.encode(bytea, text) RETURNS text LANGUAGE sql AS $$ SELECT 'x' $$;
CREATE FUNCTION hostile.convert_to(text, name) RETURNS bytea LANGUAGE sql AS $$ SELECT '\\x00'::bytea $$;
CREATE FUNCTION hostile.octet_length(text) RETURNS integer LANGUAGE sql AS $$ SELECT 0 $$;
CREATE FUNCTION hostile.now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT 'epoch'::timestamptz $$;
CREATE FUNCTION hostile.byteaeq_always(bytea, bytea) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
CREATE FUNCTION hostile.byteane_never(bytea, bytea) RETURNS boolean LANGUAGE sql AS $$ SELECT false $$;
CREATE OPERATOR hostile.= (LEFTARG = bytea, RIGHTARG = bytea, FUNCTION = hostile.byteaeq_always);
CREATE OPERATOR hostile.<> (LEFTARG = bytea, RIGHTARG = bytea, FUNCTION = hostile.byteane_never);
CREATE FUNCTION hostile.textcat_lie(text, text) RETURNS text LANGUAGE sql AS $$ SELECT '' $$;
CREATE OPERATOR hostile.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = hostile.textcat_lie);
"""

EVENTS = [
    (
        "payment.captured",
        "user-1",
        '{"amount": 12.5, "rate": 0.1, "big": 1e300, "tiny": 1.5e-7}',
        "tenant-a",
        None,
    ),
    (
        "payment.refunded",
        "üser-2",
        '{"note": "naïve café", "list": [1, 2.25, null]}',
        None,
        "2024-02-29 23:59:59.999999+00",
    ),
    ("auth.login", "user-3", "{}", "tenant-b", "1970-01-01 00:00:00+00"),
    ("data.export_initiated", "svc", '{"when": "2024-05-01T12:00:00Z", "cost": "$1,234.50"}', "t", None),
]


@pytest.fixture
def odd(dsn, conn) -> Iterator[psycopg.Connection]:
    """A session with every odd setting and the hostile look-alikes active."""
    conn.execute(HOSTILE)
    with psycopg.connect(dsn, autocommit=True) as session:
        for statement in ODD_SETTINGS:
            session.execute(statement)
        assert session.execute("SELECT '\\x01'::bytea = '\\x02'::bytea").fetchone()[0], "look-alikes active"
        yield session


def emit_and_drain(session: psycopg.Connection) -> None:
    for event_type, actor, payload, tenant, occurred_at in EVENTS:
        session.execute(
            "SELECT compliance.emit(%s, %s, %s::jsonb, %s, %s::timestamptz)",
            (event_type, actor, payload, tenant, occurred_at),
        )
    assert session.execute("SELECT compliance.drain()").fetchone()[0] == len(EVENTS)


def chain(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT seq, prev_hash, event_hash, compliance.event_hash(prev_hash, compliance._row_record(e))"
        "  FROM compliance.audit_events AS e ORDER BY seq"
    ).fetchall()


def verify(session: psycopg.Connection) -> tuple:
    return session.execute(
        "SELECT ok, events_checked, first_bad_seq, problem FROM compliance.verify_chain()"
    ).fetchone()


def test_events_chained_by_an_odd_session_hash_as_in_a_plain_one(conn, odd):
    emit_and_drain(odd)
    plain = chain(conn)
    assert all(stored == recomputed for _seq, _prev, stored, recomputed in plain), (
        "hashes match a plain session"
    )
    assert chain(odd) == plain, "building blocks compute the same in the odd session"
    assert verify(odd) == verify(conn) == (True, len(EVENTS), None, None)


def test_verification_reports_the_same_tampering_in_both_sessions(conn, odd):
    emit_and_drain(conn)
    with conn.transaction():
        conn.execute("ALTER TABLE compliance.audit_events DISABLE TRIGGER forbid_row_change")
        conn.execute(
            "UPDATE compliance.audit_events SET payload = payload || '{\"amount\": 13}' WHERE seq = 1"
        )
        conn.execute("ALTER TABLE compliance.audit_events ENABLE ALWAYS TRIGGER forbid_row_change")
    expected = (False, len(EVENTS), 1, "content changed: the event no longer matches its event_hash")
    assert verify(odd) == verify(conn) == expected
    assert odd.execute(
        "SELECT ok, events_checked, first_bad_seq, problem FROM compliance.verify_chain(2)"
    ).fetchone() == (
        True,
        len(EVENTS) - 1,
        None,
        None,
    )

    odd.execute("SELECT compliance.verify_new_events()")
    assert conn.execute(
        "SELECT verified_seq, last_ok, first_bad_seq FROM compliance.verification_state"
    ).fetchone() == (0, False, 1)


def test_incremental_verifier_records_the_same_head_in_both_sessions(conn, odd):
    emit_and_drain(odd)
    assert odd.execute("SELECT compliance.verify_new_events()").fetchone()[0] == len(EVENTS)
    state = conn.execute(
        "SELECT verified_seq, verified_hash, last_ok FROM compliance.verification_state"
    ).fetchone()
    head = conn.execute(
        "SELECT seq, event_hash FROM compliance.audit_events ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    assert state == (*head, True)
