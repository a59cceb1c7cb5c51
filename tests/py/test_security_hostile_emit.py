"""Hostile input to compliance.emit, generated with hypothesis: random and adversarial text,
Unicode edge cases (NUL escapes and lone surrogates in JSON), huge and deeply nested payloads,
extreme and malformed timestamps.

Each call is predicted by a small model of the documented rules (docs/api.md) and must end
one of two ways: it succeeds and the event comes back exactly as sent after the drainer has
chained it and verify_chain has re-hashed it, or it fails with the predicted SQLSTATE and
writes nothing.
"""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

# Reproducible in CI: the same examples every run, no example database on disk.
settings.register_profile(
    "auditchain-hostile-input",
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
HOSTILE = settings.get_profile("auditchain-hostile-input")

EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
PAYLOAD_LIMIT = 262144  # bytes of canonical JSON text (AC004)
# The [:space:] class of the cluster's C.UTF-8 locale: what makes an actor blank (AC002).
# No-break spaces (U+00A0, U+2007, U+202F) are not in it, unlike Python's str.isspace().
BLANK = frozenset(
    "\t\n\v\f\r \u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2008\u2009\u200a\u2028\u2029\u205f\u3000"
)

# Outcomes of the jsonb and timestamptz input functions, before emit runs at all.
BAD_JSON = "22P02"  # invalid_text_representation: malformed JSON, lone surrogate escapes
NUL_ESCAPE = "22P05"  # untranslatable_character: \u0000 cannot be held in jsonb text
TOO_DEEP = "54001"  # statement_too_complex: nesting beyond max_stack_depth
NUMBER_OVERFLOW = "22003"  # numeric_value_out_of_range
BAD_TIMESTAMP = "22007"  # invalid_datetime_format
TIMESTAMP_RANGE = "22008"  # datetime_field_overflow

# Text a producer might send: every code point PostgreSQL text can hold, weighted toward
# separators, escapes, controls, combining marks, bidi controls and astral characters.
TRICKY = (
    "\n\r\t\x01\x1b\x1f\x7f\x85"  # controls
    "\u00a0\u1680\u2007\u3000\u2028\u2029"  # spaces PostgreSQL and Python classify differently
    "\u200b\u200e\u202e\ufeff\ufffd\u0301\U0001f600"  # invisible, bidi, combining, astral
    ":-\\\"'%_{}[]"  # separators and escapes
)
pg_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40) | st.text(
    st.sampled_from(TRICKY), max_size=20
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | pg_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(pg_text, inner, max_size=4),
    max_leaves=12,
)


class Payload:
    """JSON text as a producer sends it, with the SQLSTATE its jsonb cast must fail with (if
    any) or may fail with (depth limits). A plain class so that hypothesis prints our short repr."""

    def __init__(self, text: str, parse_error: str | None = None, may_fail_with: str | None = None):
        self.text = text
        self.parse_error = parse_error
        self.may_fail_with = may_fail_with

    def __repr__(self) -> str:  # failure reports stay readable for megabyte payloads
        shown = self.text if len(self.text) <= 80 else f"{self.text[:60]}...({len(self.text)} chars)"
        return f"Payload({shown!r}, parse_error={self.parse_error!r}, may_fail_with={self.may_fail_with!r})"


def dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def deep(depth: int, opener: str, closer: str) -> str:
    return opener * depth + "1" + closer * depth


# Named edge cases, each run once with otherwise valid arguments and also drawn by hypothesis.
EDGE_PAYLOADS = {
    "NUL escape in a value": Payload('{"a": "\\u0000"}', NUL_ESCAPE),
    "NUL escape in a key": Payload('{"\\u0000": 1}', NUL_ESCAPE),
    "lone high surrogate": Payload('{"a": "\\ud800"}', BAD_JSON),
    "lone low surrogate": Payload('{"a": "x\\udfffy"}', BAD_JSON),
    "escaped surrogate pair": Payload('{"a": "\\ud83d\\ude00"}'),
    "short unicode escape": Payload('{"a": "\\u00"}', BAD_JSON),
    "trailing comma": Payload('{"a": 1,}', BAD_JSON),
    "NaN": Payload('{"a": NaN}', BAD_JSON),
    "single quotes": Payload("{'a': 1}", BAD_JSON),
    "empty text": Payload("", BAD_JSON),
    "two documents": Payload('{"a": 1} {"b": 2}', BAD_JSON),
    "number overflow": Payload('{"a": 1e1000000}', NUMBER_OVERFLOW),
    "number underflow": Payload('{"a": 1e-1000000}', NUMBER_OVERFLOW),
    "duplicate keys": Payload('{"a": 1, "a": 2}'),
    "empty key": Payload('{"": ""}'),
    "array": Payload("[]"),
    "null": Payload("null"),
    "string": Payload('"just a string"'),
    "200,000 nested arrays": Payload(deep(200_000, "[", "]"), TOO_DEEP),
    "5,000 nested objects": Payload('{"a":' + deep(5000, '{"a":', "}") + "}", may_fail_with=TOO_DEEP),
    "largest accepted size": Payload(dumps({"blob": "x" * 250_000})),
    "just over the size limit": Payload(dumps({"blob": "x" * 263_000})),
    "10 MB": Payload(dumps({"blob": "x" * 10_000_000})),
    "multi-byte text near the limit": Payload(dumps({"blob": "\U0001f600" * 62_000})),
}
object_payloads = st.dictionaries(pg_text, json_values, max_size=6).map(lambda v: Payload(dumps(v)))
hostile_payloads = st.one_of(
    json_values.map(lambda v: Payload(dumps(v))),
    st.sampled_from(list(EDGE_PAYLOADS.values())),
    st.integers(1, 6).map(
        lambda d: Payload('{"n": ' + deep(10**d // 2, "[", "]") + "}", may_fail_with=TOO_DEEP)
    ),
    # Sizes either side of the limit with a clear margin for jsonb's own overhead.
    st.one_of(st.integers(0, 250_000), st.integers(263_000, 1_000_000)).map(
        lambda n: Payload(dumps({"blob": "x" * n}))
    ),
)

# Absolute timestamps as text, or offsets from the database's now() (the future limit).
EDGE_TIMESTAMPS = {
    "the epoch": ("absolute", "1970-01-01 00:00:00+00"),
    "a microsecond before the epoch": ("absolute", "1969-12-31 23:59:59.999999+00"),
    "the epoch written in a -00:00:01 zone": ("absolute", "1970-01-01 00:00:00-00:00:01"),
    "'epoch'": ("absolute", "epoch"),
    "infinity": ("absolute", "infinity"),
    "-infinity": ("absolute", "-infinity"),
    "first timestamptz": ("absolute", "4714-11-24 00:00:00+00 BC"),
    "last timestamptz": ("absolute", "294276-12-31 23:59:59.999999+00"),
    "past the last timestamptz": ("absolute", "294277-01-01 00:00:00+00"),
    "February 30": ("absolute", "2024-02-30 00:00:00+00"),
    "leap day": ("absolute", "2024-02-29 23:59:59.999999+00"),
    "nanoseconds (rounded)": ("absolute", "2024-05-01 12:00:00.0000005+00"),
    "offset +15:59": ("absolute", "2024-05-01 12:00:00+15:59"),
    "not a timestamp": ("absolute", "not a timestamp"),
    "empty": ("absolute", ""),
    "just inside the future limit": ("offset", "4 minutes 55 seconds"),
    "just past the future limit": ("offset", "5 minutes 5 seconds"),
    "a century ago": ("offset", "-100 years"),
}
timestamps = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)).map(
        lambda d: ("absolute", d.isoformat())
    ),
    st.sampled_from(list(EDGE_TIMESTAMPS.values())),
)


def expected_sqlstates(event_type, actor, payload: Payload, tenant, occurred_at, conn) -> set[str | None]:
    """The outcomes the documented rules allow: {None} for success, else SQLSTATEs."""
    if payload.parse_error:
        return {payload.parse_error}
    if occurred_at and occurred_at[0] == "absolute":
        try:
            conn.execute("SELECT %s::timestamptz", (occurred_at[1],))
        except psycopg.Error as exc:
            assert exc.sqlstate in (BAD_TIMESTAMP, TIMESTAMP_RANGE), exc
            return {exc.sqlstate}
    allowed = {payload.may_fail_with} if payload.may_fail_with else set()
    try:
        json_type, text_size = conn.execute(
            "SELECT jsonb_typeof(j), octet_length(j::text) FROM (SELECT %s::jsonb AS j) AS s", (payload.text,)
        ).fetchone()
    except psycopg.Error as exc:
        assert exc.sqlstate in allowed, exc
        return allowed
    if not EVENT_TYPE.fullmatch(event_type) or not 3 <= len(event_type) <= 128:
        return allowed | {"AC001"}
    if set(actor) <= BLANK or len(actor) > 256:
        return allowed | {"AC002"}
    if json_type != "object":
        return allowed | {"AC003"}
    if text_size > PAYLOAD_LIMIT:
        return allowed | {"AC004"}
    if occurred_at and out_of_range(conn, occurred_at):
        return allowed | {"AC005"}
    if tenant is not None and (
        not 1 <= len(tenant) <= 128 or any(unicodedata.category(c) == "Cc" for c in tenant)
    ):
        return allowed | {"AC006"}
    return allowed | {None}


# occurred_at as the producer's SQL computes it: an absolute timestamp or now() + an offset.
OCCURRED_AT = "coalesce(now() + %(offset)s::interval, %(absolute)s::timestamptz)"


def occurred_at_params(occurred_at: tuple[str, str] | None) -> dict[str, str | None]:
    kind, value = occurred_at or (None, None)
    return {"offset": value if kind == "offset" else None, "absolute": value if kind == "absolute" else None}


def out_of_range(conn: psycopg.Connection, occurred_at: tuple[str, str]) -> bool:
    return conn.execute(
        f"SELECT NOT ({OCCURRED_AT} BETWEEN '1970-01-01 00:00:00+00' AND now() + interval '5 minutes')",
        occurred_at_params(occurred_at),
    ).fetchone()[0]


def clock(conn: psycopg.Connection) -> datetime:
    return conn.execute("SELECT clock_timestamp()").fetchone()[0]


def counts(conn: psycopg.Connection) -> tuple[int, int]:
    return conn.execute(
        "SELECT (SELECT count(*) FROM compliance.audit_outbox),"
        " (SELECT count(*) FROM compliance.audit_events)"
    ).fetchone()


def emit(conn: psycopg.Connection, event_type, actor, payload: Payload, tenant, occurred_at):
    return conn.execute(
        f"SELECT compliance.emit(%(event_type)s, %(actor)s, %(payload)s::jsonb, %(tenant)s, {OCCURRED_AT})",
        {
            "event_type": event_type,
            "actor": actor,
            "payload": payload.text,
            "tenant": tenant,
            **occurred_at_params(occurred_at),
        },
    ).fetchone()[0]


def assert_round_trip(
    conn, event_id, event_type, actor, payload: Payload, tenant, occurred_at, emitted
) -> None:
    """The chained event holds exactly what was sent, and verify_chain re-hashes it."""
    assert conn.execute("SELECT compliance.drain(10)").fetchone()[0] == 1
    seq, stored_type, stored_actor, stored_tenant, stored_payload, stored_at = conn.execute(
        "SELECT seq, event_type, actor, tenant_id, payload::text, occurred_at"
        " FROM compliance.audit_events WHERE event_id = %s",
        (event_id,),
    ).fetchone()
    assert (stored_type, stored_actor, stored_tenant) == (event_type, actor, tenant)
    assert stored_payload == conn.execute("SELECT %s::jsonb::text", (payload.text,)).fetchone()[0]
    try:
        same = json.loads(stored_payload, parse_float=Decimal) == json.loads(
            payload.text, parse_float=Decimal
        )
    except RecursionError:  # nesting deeper than Python's parser goes; compared as text above
        same = True
    assert same, "the stored payload means something else than the one sent"
    kind, value = occurred_at or ("offset", "0 seconds")
    if kind == "absolute":
        assert stored_at == conn.execute("SELECT %s::timestamptz", (value,)).fetchone()[0]
    else:  # the emitting transaction's now(), plus the offset
        low, high = conn.execute(
            "SELECT %s + %s::interval, %s + %s::interval", (emitted[0], value, emitted[1], value)
        ).fetchone()
        assert low <= stored_at <= high
    assert conn.execute(
        "SELECT ok, events_checked, first_bad_seq, problem FROM compliance.verify_chain()"
    ).fetchone() == (True, seq, None, None)


def mostly(valid: st.SearchStrategy, hostile: st.SearchStrategy) -> st.SearchStrategy:
    """Valid three times in four, so that most examples get past the earlier rules and
    exercise the later ones and the round trip through the chain."""
    return st.integers(0, 3).flatmap(lambda i: hostile if i == 0 else valid)


@pytest.mark.slow
@HOSTILE
@given(
    event_type=mostly(st.from_regex(EVENT_TYPE, fullmatch=True), pg_text | st.just("a." + "b" * 127)),
    actor=mostly(
        pg_text.filter(lambda t: not set(t) <= BLANK),
        pg_text | st.sampled_from([" ", "\u3000", "\xa0", "x" * 257, "\u00e9" * 256]),
    ),
    payload=mostly(object_payloads, hostile_payloads),
    tenant=mostly(
        st.none() | st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=128),
        pg_text | st.sampled_from(["", "t" * 128, "t" * 129, "a\x85b", "a\u2028b"]),
    ),
    occurred_at=mostly(
        st.none()
        | st.datetimes(
            min_value=datetime(1970, 1, 1), max_value=datetime(2025, 1, 1), timezones=st.just(UTC)
        ).map(lambda d: ("absolute", d.isoformat())),
        timestamps,
    ),
)
def test_generated_input_round_trips_or_fails_with_the_documented_sqlstate(
    conn, event_type, actor, payload, tenant, occurred_at
):
    event(check_emit(conn, event_type, actor, payload, tenant, occurred_at))


def test_edge_payloads(conn, subtests):
    for name, payload in EDGE_PAYLOADS.items():
        with subtests.test(name):
            check_emit(conn, "test.edge_payload", "someone", payload, "tenant-1", None)


def test_edge_timestamps(conn, subtests):
    for name, occurred_at in EDGE_TIMESTAMPS.items():
        with subtests.test(name):
            check_emit(conn, "test.edge_timestamp", "someone", Payload('{"k": 1}'), None, occurred_at)


def check_emit(conn, event_type, actor, payload: Payload, tenant, occurred_at) -> str:
    """Emit, and hold the outcome to the rules: the predicted SQLSTATE with nothing written,
    or an event that comes back exactly after draining and verification. Returns the outcome."""
    allowed = expected_sqlstates(event_type, actor, payload, tenant, occurred_at, conn)
    before = counts(conn)
    started = clock(conn)
    try:
        event_id = emit(conn, event_type, actor, payload, tenant, occurred_at)
    except psycopg.Error as exc:
        assert exc.sqlstate in allowed, f"{exc.sqlstate}: {exc}"
        assert counts(conn) == before, "a refused emit wrote something"
        return f"refused {exc.sqlstate}"
    assert None in allowed, f"emit accepted what should fail with {allowed}"
    emitted = (started, clock(conn))
    assert_round_trip(conn, event_id, event_type, actor, payload, tenant, occurred_at, emitted)
    return "chained and verified"


def test_text_postgresql_cannot_hold_is_refused_before_it_leaves_the_client(conn, subtests):
    """PostgreSQL text cannot hold NUL or a lone surrogate; psycopg refuses to send them."""
    for argument in ("event_type", "actor", "tenant"):
        for bad in ("nul \x00 inside", "lone surrogate \ud800"):
            with subtests.test(f"{bad[:4]} in {argument}"):
                arguments = {"event_type": "auth.login", "actor": "someone", "tenant": None, argument: bad}
                with pytest.raises((psycopg.DataError, UnicodeEncodeError)):
                    conn.execute(
                        "SELECT compliance.emit(%(event_type)s, %(actor)s, '{}', %(tenant)s)", arguments
                    )
                assert counts(conn) == (0, 0)


def test_size_limit_does_not_depend_on_where_the_payload_comes_from(conn):
    conn.execute("CREATE TABLE staged (payload jsonb)")
    conn.execute("""INSERT INTO staged SELECT jsonb_build_object('blob', repeat('x', 3000000))""")
    with pytest.raises(psycopg.Error) as refused:
        conn.execute("SELECT compliance.emit('test.staged', 'someone', payload) FROM staged")
    assert refused.value.sqlstate == "AC004"
