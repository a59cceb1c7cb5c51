"""Hash formats v1 and v2 outside the database: python/auditchain/formats/hashing.py reproduces
the documented known-answer vectors and the database's own event_hash for every drained event,
whatever characters the fields hold and whatever the session's settings were."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from auditchain.formats import hashing

DOC = Path(__file__).resolve().parents[2] / "docs" / "hash-format.md"

# The exported form of an event (its fields, with the salts of a v2 event), computed by the
# database in a way that does not depend on the session's TimeZone or DateStyle, with the
# digest of its record as every in-database check computes it.
EXPORT_SQL = """
SELECT seq,
       hash_version,
       event_id::text AS event_id,
       to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS occurred_at,
       to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS recorded_at,
       tenant_id, event_type, actor,
       payload::text AS payload,
       encode(actor_salt, 'hex') AS actor_salt,
       encode(payload_salt, 'hex') AS payload_salt,
       encode(compliance._row_payload_commitment(e), 'hex') AS payload_commitment,
       encode(sha256(compliance._row_record(e)), 'hex') AS record_sha256,
       encode(prev_hash, 'hex') AS prev_hash,
       encode(event_hash, 'hex') AS event_hash
  FROM compliance.audit_events AS e
 WHERE seq BETWEEN %(seq_from)s AND %(seq_to)s
 ORDER BY seq
"""

# Characters that break naive encoders: separators, escapes, multibyte and invisible text.
ODD_TEXTS = [
    "tab\there",
    "new\nline",
    "carriage\r\nreturn",
    'double "quotes" and \\backslash\\',
    "single 'quotes'",
    "emoji 🧑‍💻 and flags 🇨🇭",
    "combining Jose\u0301 vs José",
    "CJK 支店 and Greek Ω",
    "zero\u200bwidth and bom \ufeff",
    "line\u2028separator",
    "7:looks like a length prefix\n3:abc",
    "-",
    " leading and trailing ",
    "\u0001\u001f control",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 astral",
]


def exported_events(conn: psycopg.Connection, seq_from: int = 1, seq_to: int | None = None) -> Iterator[dict]:
    """The chained events in exported form, streamed with a server-side cursor."""
    bounds = {"seq_from": seq_from, "seq_to": seq_to if seq_to is not None else 2**62}
    with conn.transaction(), conn.cursor(name="exported_events", row_factory=dict_row) as cur:
        cur.execute(EXPORT_SQL, bounds)
        yield from cur


def emit_odd_events(conn: psycopg.Connection) -> int:
    """Emit events whose actor, tenant and payload strings hold ODD_TEXTS; returns how many."""
    count = 0
    for index, text in enumerate(ODD_TEXTS):
        tenant = text if not re.search(r"[\x00-\x1f\x7f]", text) else None  # tenants refuse control chars
        payload = {
            text: text,
            "nested": {"list": [text, 1.50, 1e3, -0.0, None, True], "deep": {"k": text}},
            "n": index,
        }
        conn.execute(
            "SELECT compliance.emit('test.odd_text', %s, %s, %s)",
            (f"actor {text}", Jsonb(payload), tenant),
        )
        count += 1
    return count


def drain_all(conn: psycopg.Connection) -> None:
    while conn.execute("SELECT compliance.drain(10000)").fetchone()[0]:
        pass


V2_HEADING = "## Known-answer vectors, version 2"


def documented_vectors() -> list[dict]:
    """The JSON blocks of the "Known-answer vectors" section (version 1) of docs/hash-format.md."""
    section = DOC.read_text(encoding="utf-8").split("## Known-answer vectors", 1)[1].split(V2_HEADING)[0]
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", section, re.DOTALL)]


def documented_v2_vectors() -> list[dict]:
    """The JSON blocks of the "Known-answer vectors, version 2" section."""
    section = DOC.read_text(encoding="utf-8").split(V2_HEADING, 1)[1]
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", section, re.DOTALL)]


def test_the_documentation_holds_chained_vectors_covering_the_required_cases():
    vectors = documented_vectors()
    events = [v["event"] for v in vectors]
    assert len(vectors) >= 3
    assert events[0]["prev_hash"] == hashing.GENESIS_HASH.hex()
    assert [e["prev_hash"] for e in events[1:]] == [e["event_hash"] for e in events[:-1]]
    assert any(e["tenant_id"] is None for e in events)
    assert any(len(e["actor"].encode()) > len(e["actor"]) for e in events)
    payloads = " ".join(v["payload_as_emitted"] for v in vectors)
    assert "1.50" in payloads and "1e3" in payloads


def test_python_reproduces_every_documented_vector():
    for vector in documented_vectors():
        event = vector["event"]
        record = hashing.canonical_record(event)
        assert record.decode("utf-8") == vector["canonical_record"]
        assert len(record) == vector["canonical_record_octets"]
        assert hashing.payload_digest(event["payload"]).hex() == vector["payload_sha256"]
        assert hashing.parse_export_timestamp(event["occurred_at"]) == vector["occurred_at_us"]
        assert hashing.parse_export_timestamp(event["recorded_at"]) == vector["recorded_at_us"]
        assert hashing.record_digest(record).hex() == vector["record_sha256"]
        prev_hash = bytes.fromhex(event["prev_hash"])
        assert hashing.event_hash(prev_hash, record).hex() == event["event_hash"]


def test_the_v2_vectors_continue_the_v1_chain_and_cover_erasure():
    v1, v2 = documented_vectors(), documented_v2_vectors()
    assert len(v2) >= 2
    events = [v["event"] for v in v1 + v2]
    assert [e["prev_hash"] for e in events[1:]] == [e["event_hash"] for e in events[:-1]]
    assert all(v["event"]["hash_version"] == 2 for v in v2)
    assert any("erased_event" in v for v in v2)
    assert any(v["event"]["tenant_id"] is None for v in v2)
    # Vector 5 is vector 3's content: the same actor and payload, committed instead of shown.
    assert v2[0]["event"]["actor"] == v1[2]["event"]["actor"]
    assert v2[0]["event"]["payload"] == v1[2]["event"]["payload"]
    assert v1[2]["event"]["actor"] in v1[2]["canonical_record"]
    assert v2[0]["event"]["actor"] not in v2[0]["canonical_record"]


def test_python_reproduces_every_documented_v2_vector_present_erased_and_withheld():
    for vector in documented_v2_vectors():
        event = vector["event"]
        record = hashing.canonical_record(event)
        assert record.decode("utf-8") == vector["canonical_record"]
        assert len(record) == vector["canonical_record_octets"]
        assert record.startswith(b"auditchain:v2\n")
        salt = bytes.fromhex(event["actor_salt"])
        assert hashing.commitment(salt, event["actor"]).hex() == vector["actor_commitment"]
        salt = bytes.fromhex(event["payload_salt"])
        assert hashing.commitment(salt, event["payload"]).hex() == vector["payload_commitment"]
        assert hashing.record_digest(record).hex() == vector["record_sha256"]
        assert hashing.event_hash(bytes.fromhex(event["prev_hash"]), record).hex() == event["event_hash"]
        withheld = {k: v for k, v in event.items() if k not in ("payload", "payload_salt")}
        withheld["payload_commitment"] = vector["payload_commitment"]
        assert hashing.canonical_record(withheld) == record
        if "erased_event" in vector:
            assert hashing.canonical_record(vector["erased_event"]) == record


def test_a_v2_record_changes_with_any_salt_or_value_bit():
    event = documented_v2_vectors()[0]["event"]
    record = hashing.canonical_record(event)
    for name in ("actor_salt", "payload_salt"):
        flipped = f"{int(event[name][0], 16) ^ 1:x}" + event[name][1:]
        assert hashing.canonical_record({**event, name: flipped}) != record
    assert hashing.canonical_record({**event, "actor": event["actor"] + " "}) != record
    assert hashing.canonical_record({**event, "hash_version": 1}) != record


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hash_version": 3}, "hash_version: 3 is not one of 1, 2"),
        ({"hash_version": True}, "hash_version: True is not one of 1, 2"),
        ({"actor_salt": "00"}, "actor_salt: is not 32 lower-case hex digits"),
        ({"actor_salt": "00" * 32}, "actor_salt: is not 32 lower-case hex digits"),
        ({"payload_salt": None}, "payload_salt: is not 32 lower-case hex digits"),
    ],
)
def test_a_v2_field_of_the_wrong_form_is_named(change, message):
    event = {**documented_v2_vectors()[0]["event"], **change}
    with pytest.raises(hashing.FieldError, match=re.escape(message)):
        hashing.canonical_record(event)


def test_the_database_reproduces_every_documented_v2_vector(conn):
    conn.execute("SET TimeZone = 'Pacific/Chatham'")
    conn.execute("SET search_path = public")
    for vector in documented_v2_vectors():
        event = vector["event"]
        row = conn.execute(
            """
            WITH v AS (
                SELECT %(payload_as_emitted)s::jsonb AS payload,
                       %(occurred_at)s::timestamptz AS occurred_at,
                       %(recorded_at)s::timestamptz AS recorded_at,
                       compliance.commitment(decode(%(actor_salt)s, 'hex'), %(actor)s) AS actor_c,
                       compliance.commitment(decode(%(payload_salt)s, 'hex'),
                                             (%(payload_as_emitted)s::jsonb)::text) AS payload_c
            )
            SELECT v.payload::text, encode(v.actor_c, 'hex'), encode(v.payload_c, 'hex'),
                   compliance.event_record_v2(%(seq)s, %(event_id)s::uuid, v.occurred_at, v.recorded_at,
                                              %(tenant_id)s, %(event_type)s, v.actor_c, v.payload_c),
                   encode(compliance.event_hash(decode(%(prev_hash)s, 'hex'), compliance.event_record_v2(
                       %(seq)s, %(event_id)s::uuid, v.occurred_at, v.recorded_at,
                       %(tenant_id)s, %(event_type)s, v.actor_c, v.payload_c)), 'hex')
              FROM v
            """,
            {**event, "payload_as_emitted": vector["payload_as_emitted"]},
        ).fetchone()
        assert row[0] == event["payload"]
        assert (row[1], row[2]) == (vector["actor_commitment"], vector["payload_commitment"])
        assert bytes(row[3]).decode("utf-8") == vector["canonical_record"]
        assert row[4] == event["event_hash"]


def test_new_events_are_v2_with_distinct_16_byte_salts(conn):
    conn.execute("SELECT compliance.emit('test.salted', 'same actor', '{}') FROM generate_series(1, 200)")
    drain_all(conn)
    row = conn.execute(
        """SELECT count(*) FILTER (WHERE hash_version = 2), count(*),
                  count(DISTINCT payload_salt) + count(DISTINCT actor_salt),
                  bool_and(octet_length(payload_salt) = 16 AND octet_length(actor_salt) = 16),
                  count(DISTINCT event_hash)
             FROM compliance.audit_events"""
    ).fetchone()
    assert row == (200, 200, 400, True, 200)


def test_an_event_hash_follows_from_the_record_digest_alone():
    """What a bundle's excluded line relies on: prev_hash and record_sha256 give the event_hash."""
    for vector in documented_vectors():
        event = vector["event"]
        prev_hash, record_sha256 = bytes.fromhex(event["prev_hash"]), bytes.fromhex(vector["record_sha256"])
        assert hashing.event_hash_from_digest(prev_hash, record_sha256).hex() == event["event_hash"]
        other_digest = hashing.record_digest(vector["canonical_record"].encode("utf-8") + b" ")
        assert hashing.event_hash_from_digest(prev_hash, other_digest).hex() != event["event_hash"]


def test_a_withheld_payload_hashes_the_same_through_its_digest():
    for vector in documented_vectors():
        withheld = {k: v for k, v in vector["event"].items() if k != "payload"}
        withheld["payload_sha256"] = vector["payload_sha256"]
        assert hashing.canonical_record(withheld).decode("utf-8") == vector["canonical_record"]


def test_the_database_reproduces_every_documented_vector_under_odd_settings(conn):
    for setting in (
        "SET TimeZone = 'Pacific/Chatham'",
        "SET DateStyle = 'SQL, DMY'",
        "SET IntervalStyle = 'sql_standard'",
        "SET extra_float_digits = 3",
        "CREATE SCHEMA decoy",
        "CREATE FUNCTION decoy.sha256(bytea) RETURNS bytea LANGUAGE sql AS $$ SELECT '\\x00'::bytea $$",
        "SET search_path = decoy, public",
    ):
        conn.execute(setting)
    for vector in documented_vectors():
        event = vector["event"]
        row = conn.execute(
            """
            WITH v AS (
                SELECT %(payload_as_emitted)s::jsonb AS payload,
                       %(occurred_at)s::timestamptz AS occurred_at,
                       %(recorded_at)s::timestamptz AS recorded_at
            )
            SELECT v.payload::text,
                   encode(compliance.payload_digest(v.payload), 'hex'),
                   compliance._epoch_us(v.occurred_at),
                   compliance._epoch_us(v.recorded_at),
                   compliance.event_record(%(seq)s, %(event_id)s::uuid, v.occurred_at, v.recorded_at,
                                           %(tenant_id)s, %(event_type)s, %(actor)s,
                                           compliance.payload_digest(v.payload)),
                   encode(compliance.event_hash(decode(%(prev_hash)s, 'hex'),
                          compliance.event_record(%(seq)s, %(event_id)s::uuid, v.occurred_at, v.recorded_at,
                                                  %(tenant_id)s, %(event_type)s, %(actor)s,
                                                  compliance.payload_digest(v.payload))), 'hex')
              FROM v
            """,
            {**event, "payload_as_emitted": vector["payload_as_emitted"]},
        ).fetchone()
        assert row[0] == event["payload"]
        assert row[1] == vector["payload_sha256"]
        assert (row[2], row[3]) == (vector["occurred_at_us"], vector["recorded_at_us"])
        assert bytes(row[4]).decode("utf-8") == vector["canonical_record"]
        assert row[5] == event["event_hash"]


def assert_python_matches_database(conn: psycopg.Connection) -> int:
    """Re-hash every chained event in Python from its exported form; returns how many."""
    prev_hash = hashing.GENESIS_HASH
    checked = 0
    for event in exported_events(conn):
        assert event["prev_hash"] == prev_hash.hex(), event["seq"]
        record = hashing.canonical_record(event)
        assert hashing.record_digest(record).hex() == event["record_sha256"], event["seq"]
        computed = hashing.event_hash(prev_hash, record)
        assert computed.hex() == event["event_hash"], event
        prev_hash = computed
        checked += 1
    return checked


def test_python_hash_of_every_drained_event_equals_the_database_hash(conn):
    # The drain runs under settings that must not matter, and so does the export query.
    conn.execute("SET TimeZone = 'Pacific/Chatham'")
    conn.execute("SET DateStyle = 'SQL, DMY'")
    conn.execute("SET extra_float_digits = 3")
    emitted = emit_odd_events(conn)
    conn.execute(
        """SELECT compliance.emit('data.bulk_' || (ARRAY['read', 'write'])[1 + i % 2], 'user-' || i,
                                  jsonb_build_object('i', i, 'amount', i / 7.0, 'e', (i || 'e2')::numeric),
                                  (ARRAY['acme', NULL, 'Zürich-支店'])[1 + i % 3],
                                  now() - make_interval(secs => i * 0.000001))
             FROM generate_series(1, 500) AS i"""
    )
    drain_all(conn)
    assert assert_python_matches_database(conn) == emitted + 500


# Any text PostgreSQL's text and jsonb can hold: every code point but NUL and lone surrogates.
pg_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | pg_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(pg_text, inner, max_size=3),
    max_leaves=8,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    actor=pg_text.filter(lambda s: s.strip() and len(s) <= 256),
    tenant=st.none() | st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=128),
    payload=st.dictionaries(pg_text, json_values, max_size=5),
)
def test_python_matches_the_database_for_generated_text_and_payloads(conn, actor, tenant, payload):
    conn.execute("SELECT compliance.emit('test.generated', %s, %s, %s)", (actor, Jsonb(payload), tenant))
    drain_all(conn)
    last = conn.execute("SELECT max(seq) FROM compliance.audit_events").fetchone()[0]
    (event,) = exported_events(conn, last, last)
    assert (
        hashing.event_hash(bytes.fromhex(event["prev_hash"]), hashing.canonical_record(event)).hex()
        == (event["event_hash"])
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seq": "1"}, "seq: is not a positive integer"),
        ({"seq": True}, "seq: is not a positive integer"),
        ({"seq": 0}, "seq: is not a positive integer"),
        (
            {"event_id": "018F3C1E-7A00-7000-8000-000000000001"},
            "event_id: is not a lower-case hyphenated UUID",
        ),
        ({"occurred_at": "2024-05-01T12:00:00Z"}, "occurred_at: is not a timestamp of the form"),
        ({"occurred_at": "2024-05-01T12:00:00.000000+00:00"}, "occurred_at: is not a timestamp of the form"),
        ({"recorded_at": "2024-02-30T12:00:00.000000Z"}, "recorded_at: is not a valid date and time"),
        ({"tenant_id": 7}, "tenant_id: is not a string"),
        ({"event_type": None}, "event_type: is not a string"),
        ({"actor": "lone \ud800 surrogate"}, "actor: contains characters with no UTF-8 encoding"),
        ({"payload": {"a": 1}}, "payload: is not a string"),
    ],
)
def test_a_field_of_the_wrong_form_is_named(change, message):
    event = {**documented_vectors()[0]["event"], **change}
    with pytest.raises(hashing.FieldError, match=re.escape(message)):
        hashing.canonical_record(event)


def test_a_missing_field_is_named():
    event = dict(documented_vectors()[0]["event"])
    del event["actor"]
    with pytest.raises(hashing.FieldError, match="^actor: missing$"):
        hashing.canonical_record(event)
    del event["payload"]
    with pytest.raises(hashing.FieldError, match="^payload_sha256: missing$"):
        hashing.canonical_record(event)


def test_an_upper_case_payload_digest_is_refused():
    vector = documented_vectors()[0]
    event = {k: v for k, v in vector["event"].items() if k != "payload"}
    event["payload_sha256"] = vector["payload_sha256"].upper()
    with pytest.raises(hashing.FieldError, match="payload_sha256: is not 64 lower-case hex digits"):
        hashing.canonical_record(event)
