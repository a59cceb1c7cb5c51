"""The tamper matrix: a superuser alters the ledger (or someone alters the bucket) in each way
an insider could, and each alteration is caught by the layer that should catch it, naming
the seq.

Layers: verify_chain (recomputes every hash and link, and compares with the drainer's and
the incremental verifier's memory), the drainer's head check (refuses to extend a chain
whose head is not what it wrote; run_drainer records the halt) and `auditchain verify`
against the WORM bucket (its own checks besides verify_chain: the anchored head hash, and the
root of the anchor's signed checkpoint against the database's Merkle tree). Each case states, per layer,
what that layer reports, or nothing where it cannot see the change (docs/security.md says why).

The chain every case starts from: 30 events; the incremental verifier has checked 1..20;
one anchor (seq 1..20) is uploaded to a GOVERNANCE bucket; events 21..30 came after it.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import boto3
import psycopg
import pytest

from auditchain.cli import main
from clihelpers import run_cli

EVENTS = 30
VERIFIED = 20  # what the incremental verifier has checked (and remembers the hash of)
ANCHORED = 20  # the seq_to of the one uploaded anchor
TARGET = 12  # the event most cases alter

# Stages the change with the guard triggers off, as a superuser can; they are put back
# (ENABLE ALWAYS) afterwards so the checks run against a normally configured table.
DISABLE_GUARDS = """
ALTER TABLE compliance.audit_events DISABLE TRIGGER forbid_row_change;
ALTER TABLE compliance.audit_events DISABLE TRIGGER forbid_truncate
"""
ENABLE_GUARDS = """
ALTER TABLE compliance.audit_events ENABLE ALWAYS TRIGGER forbid_row_change;
ALTER TABLE compliance.audit_events ENABLE ALWAYS TRIGGER forbid_truncate
"""

# The attacker's tools, as session-local functions: what someone who knows the hash
# format (docs/hash-format.md) can do with superuser rights.
ATTACKER_TOOLS = """
-- Recompute prev_hash and event_hash of every event from p_from_seq on.
CREATE FUNCTION pg_temp.rehash(p_from_seq bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_prev bytea;
    v_event record;
BEGIN
    SELECT coalesce((SELECT event_hash FROM compliance.audit_events WHERE seq = p_from_seq - 1),
                    decode(repeat('00', 32), 'hex'))
      INTO v_prev;
    FOR v_event IN SELECT seq FROM compliance.audit_events WHERE seq >= p_from_seq ORDER BY seq LOOP
        UPDATE compliance.audit_events AS e
           SET prev_hash = v_prev,
               event_hash = compliance.event_hash(v_prev, compliance._row_record(e))
         WHERE e.seq = v_event.seq
        RETURNING event_hash INTO v_prev;
    END LOOP;
END
$$;
-- Add p_delta to the seq of every event from p_from_seq on (seq is a primary key, so the
-- rows go through a distant range first).
CREATE FUNCTION pg_temp.renumber(p_from_seq bigint, p_delta bigint) RETURNS void LANGUAGE sql AS $$
    UPDATE compliance.audit_events SET seq = seq + 1000000 + p_delta WHERE seq >= p_from_seq;
    UPDATE compliance.audit_events SET seq = seq - 1000000 WHERE seq > 1000000;
$$;
-- Exchange the seqs of two events.
CREATE FUNCTION pg_temp.swap(p_a bigint, p_b bigint) RETURNS void LANGUAGE sql AS $$
    UPDATE compliance.audit_events SET seq = 1000000 + p_a + p_b - seq WHERE seq IN (p_a, p_b);
    UPDATE compliance.audit_events SET seq = seq - 1000000 WHERE seq > 1000000;
$$;
-- Insert a forged event at p_seq whose hashes are computed correctly from its predecessor.
CREATE FUNCTION pg_temp.forge(p_seq bigint) RETURNS void LANGUAGE sql AS $$
    INSERT INTO compliance.audit_events
        (seq, event_id, occurred_at, recorded_at, tenant_id, event_type, actor, payload,
         hash_version, prev_hash, event_hash)
    SELECT p_seq, 'b0b0b0b0-0000-7000-8000-000000000000', now(), now(), NULL, 'auth.login', 'forger',
           '{"forged": true}', 1, p.event_hash,
           compliance.event_hash(p.event_hash, compliance.event_record(
               p_seq, 'b0b0b0b0-0000-7000-8000-000000000000', now(), now(), NULL, 'auth.login', 'forger',
               compliance.payload_digest('{"forged": true}')))
      FROM compliance.audit_events AS p WHERE p.seq = p_seq - 1;
$$;
-- Rewrite the anchor row at p_seq_to to the head_hash the chain now has (the document's
-- CHECK that ties it to the columns has to go first).
CREATE FUNCTION pg_temp.reanchor(p_seq_to bigint) RETURNS void LANGUAGE sql AS $$
    ALTER TABLE compliance.anchors DISABLE TRIGGER guard_anchor_change;
    ALTER TABLE compliance.anchors DROP CONSTRAINT anchors_document_check;
    UPDATE compliance.anchors AS a
       SET head_hash = e.event_hash,
           document = replace(a.document, encode(a.head_hash, 'hex'), encode(e.event_hash, 'hex')),
           document_digest = sha256(convert_to(
               replace(a.document, encode(a.head_hash, 'hex'), encode(e.event_hash, 'hex')), 'UTF8'))
      FROM compliance.audit_events AS e
     WHERE e.seq = a.seq_to AND a.seq_to = p_seq_to;
    ALTER TABLE compliance.anchors ENABLE ALWAYS TRIGGER guard_anchor_change;
$$;
-- Remove every anchor row (after the bucket's object is gone, nothing refers to it).
CREATE FUNCTION pg_temp.unanchor() RETURNS void LANGUAGE sql AS $$
    ALTER TABLE compliance.anchors DISABLE TRIGGER forbid_row_change;
    DELETE FROM compliance.anchors;
    ALTER TABLE compliance.anchors ENABLE ALWAYS TRIGGER forbid_row_change;
$$;
-- Make the drainer's and the incremental verifier's memory, and the Merkle tree, agree with
-- the chain as it is.
CREATE FUNCTION pg_temp.rewrite_state() RETURNS void LANGUAGE sql AS $$
    UPDATE compliance.drainer_state
       SET (last_seq, last_hash) =
           (SELECT seq, event_hash FROM compliance.audit_events ORDER BY seq DESC LIMIT 1);
    UPDATE compliance.verification_state
       SET (verified_seq, verified_hash) =
           (SELECT seq, event_hash FROM compliance.audit_events ORDER BY seq DESC LIMIT 1);
    ALTER TABLE compliance.merkle_nodes DISABLE TRIGGER forbid_truncate;
    TRUNCATE compliance.merkle_nodes;
    ALTER TABLE compliance.merkle_nodes ENABLE ALWAYS TRIGGER forbid_truncate;
    UPDATE compliance.drainer_state SET tree_size = 0, tree_frontier = '{}';
    SELECT compliance._tree_catch_up();
    SELECT compliance._tenant_trees_catch_up();
$$;
"""

Step = tuple[str, tuple[int, ...]]


BucketStep = Callable[["boto3.client", str], None]


def delete_anchor_version(client, bucket: str) -> None:
    """Delete the anchor's object versions (its document and its signed checkpoint), bypassing
    GOVERNANCE retention (s3:BypassGovernanceRetention)."""
    versions = client.list_object_versions(Bucket=bucket)["Versions"]
    assert sorted(v["Key"].split("/")[0] for v in versions) == ["anchors", "checkpoints"]
    for version in versions:
        client.delete_object(
            Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"], BypassGovernanceRetention=True
        )


def hide_anchor_behind_a_delete_marker(client, bucket: str) -> None:
    """A plain DELETE (no version, no bypass): S3 adds a delete marker, the locked version stays."""
    (version,) = client.list_object_versions(Bucket=bucket, Prefix="anchors/")["Versions"]
    client.delete_object(Bucket=bucket, Key=version["Key"])


@dataclass(frozen=True)
class Case:
    name: str
    steps: tuple[Step, ...]
    verify_chain: tuple[int, str] | None  # (first_bad_seq, words of the problem) or None
    head_check: int | None  # seq the drainer halts on, or None
    bucket: frozenset[tuple[str, int]] = frozenset()  # (check, anchored seq) auditchain verify adds
    bucket_steps: tuple[BucketStep, ...] = field(default=())


# auditchain verify: the event at the anchored seq no longer has the anchored head_hash (or is gone).
ANCHOR_CONTRADICTED = frozenset({("head", ANCHORED)})
# auditchain verify: the database's Merkle tree at the anchored size no longer has the root of the
# anchor's signed checkpoint (or cannot be computed): any change at or below the anchored seq.
ROOT_CONTRADICTED = frozenset({("checkpoint", ANCHORED)})

CHANGE_ACTOR: Step = ("UPDATE compliance.audit_events SET actor = 'someone-else' WHERE seq = %s", (TARGET,))
DELETE_FROM: Step = ("DELETE FROM compliance.audit_events WHERE seq >= %s", (EVENTS - 2,))

CASES = [
    Case(
        "payload changed",
        (
            (
                "UPDATE compliance.audit_events SET payload = payload || '{\"amount\": 1000000}' "
                "WHERE seq = %s",
                (TARGET,),
            ),
        ),
        (TARGET, "content changed"),
        None,
        ROOT_CONTRADICTED,
    ),
    Case(
        "header field changed",
        (CHANGE_ACTOR,),
        (TARGET, "content changed"),
        None,
        ROOT_CONTRADICTED,
    ),
    Case(
        "occurred_at moved by one microsecond",
        (
            (
                "UPDATE compliance.audit_events SET occurred_at = occurred_at + interval '1 microsecond' "
                "WHERE seq = %s",
                (TARGET,),
            ),
        ),
        (TARGET, "content changed"),
        None,
        ROOT_CONTRADICTED,
    ),
    Case(
        "change with every later hash recomputed",
        (CHANGE_ACTOR, ("SELECT pg_temp.rehash(%s)", (TARGET,))),
        (VERIFIED, "chain rewritten"),
        EVENTS,
        ANCHOR_CONTRADICTED | ROOT_CONTRADICTED,
    ),
    Case(
        "middle row deleted",
        (("DELETE FROM compliance.audit_events WHERE seq = %s", (TARGET,)),),
        (TARGET + 1, f"expected seq {TARGET}"),
        None,
        ROOT_CONTRADICTED,
    ),
    Case(
        "middle row deleted, later seqs and hashes rewritten",
        (
            ("DELETE FROM compliance.audit_events WHERE seq = %s", (TARGET,)),
            ("SELECT pg_temp.renumber(%s, -1)", (TARGET + 1,)),
            ("SELECT pg_temp.rehash(%s)", (TARGET,)),
        ),
        (VERIFIED, "chain rewritten"),
        EVENTS,
        ANCHOR_CONTRADICTED | ROOT_CONTRADICTED,
    ),
    Case("tail deleted", (DELETE_FROM,), (EVENTS - 2, "tail missing"), EVENTS),
    Case(
        "rows swapped",
        (("SELECT pg_temp.swap(%s, %s)", (TARGET, TARGET + 1)),),
        (TARGET, "content changed"),
        None,
        ROOT_CONTRADICTED,
    ),
    Case(
        "forged row appended with correct hashes",
        (("SELECT pg_temp.forge(%s)", (EVENTS + 1,)),),
        (EVENTS + 1, "unexpected events"),
        EVENTS + 1,
    ),
    Case(
        "forged row inserted in the middle with correct hashes",
        (("SELECT pg_temp.renumber(%s, 1)", (TARGET,)), ("SELECT pg_temp.forge(%s)", (TARGET,))),
        (TARGET + 1, "content changed"),
        EVENTS + 1,
        ANCHOR_CONTRADICTED | ROOT_CONTRADICTED,
    ),
    Case(
        "forged row appended with a wrong hash",
        (
            ("SELECT pg_temp.forge(%s)", (EVENTS + 1,)),
            ("UPDATE compliance.audit_events SET event_hash = sha256('x') WHERE seq = %s", (EVENTS + 1,)),
        ),
        (EVENTS + 1, "content changed"),
        EVENTS + 1,
    ),
    Case(
        "head event altered",
        (("UPDATE compliance.audit_events SET actor = 'someone-else' WHERE seq = %s", (EVENTS,)),),
        (EVENTS, "content changed"),
        EVENTS,
    ),
    Case(
        "whole chain rewritten consistently",
        (CHANGE_ACTOR, ("SELECT pg_temp.rehash(%s)", (1,)), ("SELECT pg_temp.rewrite_state()", ())),
        None,
        None,
        ANCHOR_CONTRADICTED | ROOT_CONTRADICTED,
    ),
    Case(
        "chain rewritten consistently and the anchor row rewritten to match",
        (
            CHANGE_ACTOR,
            ("SELECT pg_temp.rehash(%s)", (1,)),
            ("SELECT pg_temp.rewrite_state()", ()),
            ("SELECT pg_temp.reanchor(%s)", (ANCHORED,)),
        ),
        None,
        None,
        ANCHOR_CONTRADICTED | ROOT_CONTRADICTED | {("row", ANCHORED)},
    ),
    Case(
        "tail after the last anchor deleted, memories rewound (undetectable: the anchor gap)",
        (DELETE_FROM, ("SELECT pg_temp.rewrite_state()", ())),
        None,
        None,
    ),
    Case(
        "tail reaching below the last anchor deleted, memories rewound",
        (
            ("DELETE FROM compliance.audit_events WHERE seq >= %s", (ANCHORED - 2,)),
            ("SELECT pg_temp.rewrite_state()", ()),
        ),
        None,
        None,
        ANCHOR_CONTRADICTED,
    ),
    Case(
        "anchor object version deleted with BypassGovernanceRetention",
        (),
        None,
        None,
        frozenset({("object", ANCHORED)}),
        (delete_anchor_version,),
    ),
    Case(
        "superuser who may also bypass GOVERNANCE: object version and anchor row deleted, chain "
        "rewritten consistently (undetectable: hence COMPLIANCE mode)",
        (
            CHANGE_ACTOR,
            ("SELECT pg_temp.rehash(%s)", (1,)),
            ("SELECT pg_temp.rewrite_state()", ()),
            ("SELECT pg_temp.unanchor()", ()),
        ),
        None,
        None,
        frozenset(),
        (delete_anchor_version,),
    ),
    Case(
        "anchor object hidden behind a delete marker",
        (),
        None,
        None,
        frozenset({("object", ANCHORED)}),
        (hide_anchor_behind_a_delete_marker,),
    ),
]


def emit_and_drain(conn: psycopg.Connection, first: int, last: int) -> None:
    for n in range(first, last + 1):
        conn.execute(
            "SELECT compliance.emit(%s, %s, %s::jsonb, %s)",
            ("payment.captured", f"user-{n}", f'{{"n": {n}}}', None if n % 3 else f"tenant-{n % 5}"),
        )
    assert conn.execute("SELECT compliance.drain(1000)").fetchone()[0] == last - first + 1


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """`auditchain ARGV` in-process; the exit code and stdout."""
    code, out, _ = run_cli(capsys, *argv)
    return code, out


@pytest.fixture
def bucket(moto_server) -> str:
    """A GOVERNANCE Object Lock bucket of this test's own (parametrised ids share a prefix)."""
    name = f"ac-tamper-{uuid.uuid4().hex[:12]}"
    assert main(["bucket", "create", "--bucket", name, "--endpoint-url", moto_server.url]) == 0
    return name


@pytest.fixture
def chain(conn, dsn, moto_server, bucket, capsys) -> str:
    """The starting point of every case (see the module docstring)."""
    emit_and_drain(conn, 1, ANCHORED)
    assert conn.execute("SELECT compliance.verify_new_events()").fetchone()[0] == VERIFIED
    assert conn.execute("SELECT compliance.create_anchor()").fetchone()[0]
    assert (
        cli(capsys, "anchor", "--once", "--dsn", dsn, "--bucket", bucket, "--endpoint-url", moto_server.url)[
            0
        ]
        == 0
    )
    emit_and_drain(conn, ANCHORED + 1, EVENTS)
    return dsn


def bucket_findings(capsys, dsn: str, endpoint_url: str, bucket: str) -> frozenset[tuple[str, int]]:
    """What `auditchain verify` reports beyond verify_chain, as (check, anchored seq)."""
    code, out = cli(
        capsys, "verify", "--json", "--dsn", dsn, "--bucket", bucket, "--endpoint-url", endpoint_url
    )
    report = json.loads(out)
    assert code == (0 if report["ok"] else 1)
    findings = set()
    for problem in report["problems"]:
        if problem["check"] != "chain":  # verify_chain's own finding, asserted as its own layer
            # Subjects name the object key (20-digit seq_to) of the document or its signed
            # checkpoint, or the anchor row "(seq FROM..TO)".
            seq = re.search(r"(?:anchors|checkpoints)/(\d{20})-|\(seq \d+\.\.(\d+)\)", problem["subject"])
            assert seq, problem
            findings.add((problem["check"], int(seq.group(1) or seq.group(2))))
    return frozenset(findings)


def tamper(conn: psycopg.Connection, steps: tuple[Step, ...]) -> None:
    with conn.transaction():
        conn.execute(ATTACKER_TOOLS)
        conn.execute(DISABLE_GUARDS)
        for statement, params in steps:
            conn.execute(statement, params)
        conn.execute(ENABLE_GUARDS)


def verify_chain(conn: psycopg.Connection) -> tuple[bool, int | None, str | None]:
    ok, _checked, first_bad_seq, problem = conn.execute(
        "SELECT ok, events_checked, first_bad_seq, problem FROM compliance.verify_chain()"
    ).fetchone()
    return ok, first_bad_seq, problem


def run_drainer_once(conn: psycopg.Connection) -> int | None:
    """One run_drainer pass; the seq it halted on (AC010), or None when it carried on."""
    conn.execute("SELECT compliance.emit('auth.login', 'after-tamper')")
    try:
        conn.execute("CALL compliance.run_drainer('0 seconds')")
    except psycopg.Error as exc:
        assert exc.sqlstate == "AC010", exc
        halted_seq, halted_reason = conn.execute(
            "SELECT halted_seq, halted_reason FROM compliance.drainer_state"
        ).fetchone()
        assert halted_reason and f"seq {halted_seq}" in halted_reason
        assert f"seq {halted_seq}" in str(exc)
        return halted_seq
    assert conn.execute("SELECT halted_at FROM compliance.drainer_state").fetchone()[0] is None
    return None


def test_the_untouched_chain_passes_every_layer(conn, chain, moto_server, bucket, capsys):
    assert verify_chain(conn) == (True, None, None)
    assert bucket_findings(capsys, chain, moto_server.url, bucket) == frozenset()
    assert run_drainer_once(conn) is None


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_tamper_detected_by_the_right_layer(conn, chain, moto_server, bucket, capsys, case):

    tamper(conn, case.steps)
    client = boto3.client("s3", endpoint_url=moto_server.url)
    for step in case.bucket_steps:
        step(client, bucket)

    ok, first_bad_seq, problem = verify_chain(conn)
    if case.verify_chain is None:
        assert (ok, first_bad_seq) == (True, None), problem
    else:
        expected_seq, words = case.verify_chain
        assert (ok, first_bad_seq) == (False, expected_seq), problem
        assert words in problem
    assert bucket_findings(capsys, chain, moto_server.url, bucket) == case.bucket
    assert run_drainer_once(conn) == case.head_check
