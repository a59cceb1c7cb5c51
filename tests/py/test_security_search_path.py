"""search_path hijack: a session whose own schema comes before pg_catalog on its search_path,
full of look-alike functions, operators and aggregates, must not change what emit, drain,
run_drainer or verify_chain compute, accept or report. Every result is compared with a
clean session's."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

# Each look-alike answers something plausible but wrong, so any name the ledger resolved
# through the caller's search_path would change a hash, accept bad input or hide tampering.
LOOK_ALIKES = """
CREATE FUNCTION sha256(bytea) RETURNS bytea LANGUAGE sql AS $$ SELECT '\\x00'::pg_catalog.bytea $$;
CREATE FUNCTION digest(bytea, text) RETURNS bytea LANGUAGE sql AS $$ SELECT '\\x00'::pg_catalog.bytea $$;
CREATE FUNCTION digest(text, text) RETURNS bytea LANGUAGE sql AS $$ SELECT '\\x00'::pg_catalog.bytea $$;
CREATE FUNCTION encode(bytea, text) RETURNS text LANGUAGE sql AS $$ SELECT 'hijacked'::pg_catalog.text $$;
CREATE FUNCTION decode(text, text) RETURNS bytea LANGUAGE sql AS $$ SELECT '\\x00'::pg_catalog.bytea $$;
CREATE FUNCTION convert_to(text, name) RETURNS bytea LANGUAGE sql AS $$ SELECT '\\x00'::pg_catalog.bytea $$;
CREATE FUNCTION octet_length(text) RETURNS integer LANGUAGE sql AS $$ SELECT 1 $$;
CREATE FUNCTION length(text) RETURNS integer LANGUAGE sql AS $$ SELECT 5 $$;
CREATE FUNCTION btrim(text) RETURNS text LANGUAGE sql AS $$ SELECT 'x'::pg_catalog.text $$;
CREATE FUNCTION jsonb_typeof(jsonb) RETURNS text LANGUAGE sql AS $$ SELECT 'object'::pg_catalog.text $$;
CREATE FUNCTION now() RETURNS timestamptz LANGUAGE sql
    AS $$ SELECT '2000-01-01 00:00:00+00'::pg_catalog.timestamptz $$;
CREATE FUNCTION clock_timestamp() RETURNS timestamptz LANGUAGE sql
    AS $$ SELECT '2000-01-01 00:00:00+00'::pg_catalog.timestamptz $$;
CREATE FUNCTION gen_random_uuid() RETURNS uuid LANGUAGE sql
    AS $$ SELECT '00000000-0000-4000-8000-000000000000'::pg_catalog.uuid $$;
CREATE FUNCTION hashtext(text) RETURNS integer LANGUAGE sql AS $$ SELECT 1 $$;
CREATE FUNCTION pg_try_advisory_xact_lock(bigint) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
CREATE FUNCTION first_arg(bigint, bigint) RETURNS bigint LANGUAGE sql AS $$ SELECT $1 $$;
CREATE AGGREGATE max(bigint) (SFUNC = first_arg, STYPE = bigint, INITCOND = '0');

CREATE FUNCTION same_bytea(bytea, bytea) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
CREATE FUNCTION differ_bytea(bytea, bytea) RETURNS boolean LANGUAGE sql AS $$ SELECT false $$;
CREATE FUNCTION same_bigint(bigint, bigint) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
CREATE FUNCTION differ_bigint(bigint, bigint) RETURNS boolean LANGUAGE sql AS $$ SELECT false $$;
CREATE FUNCTION never_integer(integer, integer) RETURNS boolean LANGUAGE sql AS $$ SELECT false $$;
CREATE FUNCTION never_timestamptz(timestamptz, timestamptz) RETURNS boolean LANGUAGE sql
    AS $$ SELECT false $$;
CREATE FUNCTION never_text(text, text) RETURNS boolean LANGUAGE sql AS $$ SELECT false $$;
CREATE FUNCTION left_bytea(bytea, bytea) RETURNS bytea LANGUAGE sql AS $$ SELECT $1 $$;
CREATE FUNCTION left_text(text, text) RETURNS text LANGUAGE sql AS $$ SELECT $1 $$;
CREATE OPERATOR = (LEFTARG = bytea, RIGHTARG = bytea, FUNCTION = same_bytea);
CREATE OPERATOR <> (LEFTARG = bytea, RIGHTARG = bytea, FUNCTION = differ_bytea);
CREATE OPERATOR = (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = same_bigint);
CREATE OPERATOR <> (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = differ_bigint);
CREATE OPERATOR > (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = differ_bigint);
CREATE OPERATOR < (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = differ_bigint);
CREATE OPERATOR > (LEFTARG = integer, RIGHTARG = integer, FUNCTION = never_integer);
CREATE OPERATOR > (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = never_timestamptz);
CREATE OPERATOR < (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = never_timestamptz);
CREATE OPERATOR !~ (LEFTARG = text, RIGHTARG = text, FUNCTION = never_text);
CREATE OPERATOR || (LEFTARG = bytea, RIGHTARG = bytea, FUNCTION = left_bytea);
CREATE OPERATOR || (LEFTARG = text, RIGHTARG = text, FUNCTION = left_text);
"""

# Look-alike type names: domains that refuse every non-NULL value.
LOOK_ALIKE_TYPES = """
CREATE DOMAIN text AS pg_catalog.text CHECK (VALUE IS NULL);
CREATE DOMAIN timestamptz AS pg_catalog.timestamptz CHECK (VALUE IS NULL);
"""

EVENTS = [
    (
        "payment.captured",
        "user-1",
        '{"amount": 12.5, "currency": "EUR"}',
        "tenant-a",
        "2024-05-01 12:00:00+00",
    ),
    ("auth.login", "user-2", "{}", None, "2024-05-01 12:00:00.000001+00"),
    ("data.export_initiated", "service:exporter", '{"rows": [1, 2, 3], "nested": {"k": "v"}}', "t", None),
    ("auth.logout", "user-\u00e9\u4e2d\U0001f600", '{"note": "multi-byte \u00e9"}', "tenant-\u00e9", None),
    ("auth.login", "user-5", '{"a": null}', None, "1970-01-01 00:00:00+00"),
]

# (arguments, SQLSTATE): inputs emit must refuse however the caller's names resolve.
REFUSED = [
    (("BAD", "user", "{}"), "AC001"),
    (("auth.login", "   ", "{}"), "AC002"),
    (("auth.login", "user", "[]"), "AC003"),
    (("auth.login", "user", "{}", "tenant\n"), "AC006"),
]


def schema_of(role: str) -> str:
    return f"{role}_lookalikes"


@pytest.fixture(params=["superuser", "service role"])
def hijacked(request, dsn, conn) -> Iterator[psycopg.Connection]:
    """A session with a schema of look-alikes first on its search_path, before pg_catalog.

    "service role": a login role that is a member of compliance_writer, compliance_drainer and
    compliance_auditor and creates the look-alikes itself in a schema it owns.
    """
    if request.param == "superuser":
        schema = "lookalikes"
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        session_dsn = dsn
        role = None
    else:
        role = f"ac_hijacker_{os.getpid()}"
        schema = schema_of(role)
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL(
                "CREATE ROLE {} LOGIN IN ROLE compliance_writer, compliance_drainer, compliance_auditor"
            ).format(sql.Identifier(role))
        )
        conn.execute(
            sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(sql.Identifier(schema), sql.Identifier(role))
        )
        session_dsn = make_conninfo(dsn, user=role)
    with psycopg.connect(session_dsn, autocommit=True) as session:
        session.execute(sql.SQL("SET search_path = {}, pg_catalog").format(sql.Identifier(schema)))
        session.execute(LOOK_ALIKES)
        assert session.execute("SELECT '\\x01'::bytea = '\\x02'::bytea").fetchone()[0], "look-alikes active"
        yield session
    if role:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def emit_all(session: psycopg.Connection) -> list:
    return [
        session.execute("SELECT compliance.emit(%s, %s, %s::jsonb, %s, %s::timestamptz)", event).fetchone()[0]
        for event in EVENTS
    ]


def chained(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT seq, event_id, occurred_at, tenant_id, event_type, actor, payload::text "
        "FROM compliance.audit_events ORDER BY seq"
    ).fetchall()


def tamper(conn: psycopg.Connection, seq: int) -> None:
    with conn.transaction():
        conn.execute("ALTER TABLE compliance.audit_events DISABLE TRIGGER forbid_row_change")
        conn.execute("UPDATE compliance.audit_events SET actor = 'someone-else' WHERE seq = %s", (seq,))
        conn.execute("ALTER TABLE compliance.audit_events ENABLE ALWAYS TRIGGER forbid_row_change")


def test_emit_and_drain_chain_what_a_clean_session_computes(hijacked, conn):
    event_ids = emit_all(hijacked)
    assert len(set(event_ids)) == len(EVENTS)
    assert hijacked.execute("SELECT compliance.drain(2)").fetchone()[0] == 2
    hijacked.execute("CALL compliance.run_drainer('0 seconds')")

    rows = chained(conn)
    assert [r[0] for r in rows] == list(range(1, len(EVENTS) + 1))
    assert [r[1] for r in rows] == event_ids
    for row, (event_type, actor, payload, tenant, _occurred) in zip(rows, EVENTS, strict=True):
        assert (row[4], row[5], row[3]) == (event_type, actor, tenant)
        assert row[6] == conn.execute("SELECT %s::jsonb::text", (payload,)).fetchone()[0]
    recorded = conn.execute("SELECT min(recorded_at) FROM compliance.audit_events").fetchone()[0]
    assert recorded > datetime(2020, 1, 1, tzinfo=UTC), "recorded_at comes from the real clock"
    # The clean session recomputes every hash from the stored columns.
    assert conn.execute(
        "SELECT ok, events_checked, first_bad_seq, problem FROM compliance.verify_chain()"
    ).fetchone() == (
        True,
        len(EVENTS),
        None,
        None,
    )
    assert hijacked.execute(
        "SELECT ok, events_checked, first_bad_seq, problem FROM compliance.verify_chain()"
    ).fetchone() == (
        True,
        len(EVENTS),
        None,
        None,
    )


@pytest.mark.parametrize(("arguments", "sqlstate"), REFUSED, ids=[s for _, s in REFUSED])
def test_emit_refuses_the_same_inputs(hijacked, conn, arguments, sqlstate):
    call = sql.SQL("SELECT compliance.emit({})").format(
        sql.SQL(", ").join([sql.Placeholder()] * len(arguments))
    )
    with pytest.raises(psycopg.Error) as refused:
        hijacked.execute(call, arguments)
    assert refused.value.sqlstate == sqlstate
    assert conn.execute("SELECT count(*) FROM compliance.audit_outbox").fetchone()[0] == 0


def test_verify_chain_reports_tampering_as_a_clean_session_does(hijacked, conn):
    emit_all(hijacked)
    hijacked.execute("SELECT compliance.drain()")
    tamper(conn, 3)
    clean = conn.execute(
        "SELECT ok, events_checked, first_bad_seq, problem FROM compliance.verify_chain()"
    ).fetchone()
    assert clean[:3] == (False, len(EVENTS), 3)
    assert (
        hijacked.execute(
            "SELECT ok, events_checked, first_bad_seq, problem FROM compliance.verify_chain()"
        ).fetchone()
        == clean
    )
    assert (
        hijacked.execute(
            "SELECT ok, events_checked, first_bad_seq, problem FROM compliance.verify_chain(2, 4)"
        ).fetchone()
        == conn.execute(
            "SELECT ok, events_checked, first_bad_seq, problem FROM compliance.verify_chain(2, 4)"
        ).fetchone()
    )


def test_drain_refuses_a_tampered_head(hijacked, conn):
    emit_all(hijacked)
    hijacked.execute("SELECT compliance.drain()")
    tamper(conn, len(EVENTS))
    hijacked.execute("SELECT compliance.emit('auth.login', 'late')")
    with pytest.raises(psycopg.Error) as refused:
        hijacked.execute("CALL compliance.run_drainer('0 seconds')")
    assert refused.value.sqlstate == "AC010"
    assert conn.execute("SELECT halted_seq FROM compliance.drainer_state").fetchone()[0] == len(EVENTS)
    assert conn.execute("SELECT count(*) FROM compliance.audit_outbox").fetchone()[0] == 1


def test_hash_building_blocks_ignore_the_callers_names(conn, dsn):
    """The hash functions themselves (internal, so compared as the owner)."""
    probe = (
        "SELECT compliance.payload_digest(%(p)s::jsonb), compliance._epoch_us(%(t)s::timestamptz),"
        " compliance.event_record(7, 'b0b0b0b0-0000-7000-8000-000000000000', %(t)s::timestamptz,"
        "   %(t)s::timestamptz, %(tenant)s, 'auth.login', 'user-\u00e9',"
        "   compliance.payload_digest(%(p)s::jsonb)),"
        " compliance.event_hash('\\x0102'::bytea, '\\x0304'::bytea)"
    )
    params = {
        "p": '{"k": "v\u00e9", "n": [1, 2.50]}',
        "t": "2024-02-29 23:59:59.999999+00",
        "tenant": "t\u00e9",
    }
    clean = conn.execute(probe, params).fetchone()
    conn.execute("CREATE SCHEMA lookalikes")
    with psycopg.connect(dsn, autocommit=True) as session:
        session.execute("SET search_path = lookalikes, pg_catalog")
        session.execute(LOOK_ALIKES)
        assert session.execute("SELECT sha256('x'::bytea)").fetchone()[0] == b"\x00", "look-alikes active"
        assert session.execute(probe, params).fetchone() == clean


def test_run_drainer_ignores_look_alike_type_names(hijacked, conn):
    """run_drainer is a PROCEDURE that COMMITs, so it cannot pin search_path: its variable
    types must not resolve to the caller's look-alike types either."""
    for n in range(3):
        conn.execute("SELECT compliance.emit('auth.login', %s)", (f"user-{n}",))
    conn.execute("SELECT compliance.drain()")
    tamper(conn, 3)
    hijacked.execute(LOOK_ALIKE_TYPES)
    with pytest.raises(psycopg.Error) as refused:
        hijacked.execute("CALL compliance.run_drainer('0 seconds')")
    assert refused.value.sqlstate == "AC010"
    assert conn.execute("SELECT halted_seq FROM compliance.drainer_state").fetchone()[0] == 3
