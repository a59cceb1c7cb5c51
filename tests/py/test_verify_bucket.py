"""`auditchain verify`: the database checked against the anchor objects in the WORM bucket.

The attacks are staged as a superuser would do them (triggers disabled, every hash
recomputed, the drainer's and verifier's memory adjusted) so that compliance.verify_chain
alone passes: only the anchors in the bucket can catch them."""

from __future__ import annotations

import json
from datetime import timedelta

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from auditchain.errors import EXIT_FAILED, EXIT_UNAVAILABLE
from awsfake import MotoServer, free_port
from test_anchor import (
    anchor_once,
    anchor_rows,
    create_anchor,
    emit_and_drain,
    login_role,
    make_worm_bucket,
    run_cli,
    s3_client,
)

# Recompute every event's prev_hash and event_hash in seq order, then make the drainer's and
# the incremental verifier's memory agree: a rewrite the database alone cannot tell apart.
REHASH_CHAIN = """
DO $$
DECLARE
    r compliance.audit_events%ROWTYPE;
    v_prev bytea := decode(repeat('00', 32), 'hex');
BEGIN
    FOR r IN SELECT * FROM compliance.audit_events ORDER BY seq LOOP
        UPDATE compliance.audit_events AS e
           SET prev_hash = v_prev,
               event_hash = compliance.event_hash(v_prev, compliance._row_record(e))
         WHERE e.seq = r.seq
        RETURNING event_hash INTO v_prev;
    END LOOP;
    UPDATE compliance.drainer_state
       SET last_seq = coalesce((SELECT max(seq) FROM compliance.audit_events), 0),
           last_hash = coalesce((SELECT event_hash FROM compliance.audit_events ORDER BY seq DESC LIMIT 1),
                                decode(repeat('00', 32), 'hex'));
    UPDATE compliance.verification_state AS v
       SET verified_seq = d.last_seq, verified_hash = d.last_hash
      FROM compliance.drainer_state AS d;
END
$$
"""


def as_superuser_attacker(conn: psycopg.Connection, *statements: str) -> None:
    with conn.transaction():
        conn.execute("ALTER TABLE compliance.audit_events DISABLE TRIGGER ALL")
        for statement in statements:
            conn.execute(statement)
        conn.execute(REHASH_CHAIN)
        conn.execute("ALTER TABLE compliance.audit_events ENABLE TRIGGER ALL")


def verify_chain_ok(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT ok FROM compliance.verify_chain()").fetchone()[0]


def verify(capsys, dsn: str, endpoint_url: str, bucket: str, *extra: str) -> tuple[int, str, str]:
    return run_cli(capsys, "verify", "--dsn", dsn, "--endpoint-url", endpoint_url, "--bucket", bucket, *extra)


def verify_json(capsys, dsn: str, endpoint_url: str, bucket: str, *extra: str) -> tuple[int, dict]:
    code, out, _ = verify(capsys, dsn, endpoint_url, bucket, "--json", *extra)
    return code, json.loads(out)


def problems(report: dict) -> list[tuple[str, str]]:
    return [(p["check"], p["message"]) for p in report["problems"]]


@pytest.fixture
def anchored(conn, dsn, endpoint_url, bucket_name, capsys) -> str:
    """Two uploaded anchors (seq 1..5 and 6..8) and two events chained after them."""
    make_worm_bucket(endpoint_url, bucket_name)
    emit_and_drain(conn, 5)
    create_anchor(conn)
    emit_and_drain(conn, 3)
    create_anchor(conn)
    assert anchor_once(capsys, dsn, endpoint_url, bucket_name)[0] == 0
    emit_and_drain(conn, 2)
    return bucket_name


def test_untouched_database_verifies(dsn, endpoint_url, anchored, capsys):
    code, out, err = verify(capsys, dsn, endpoint_url, anchored)

    assert code == 0, out + err
    assert out.splitlines() == [
        "chain:   OK, 10 events re-hashed and linked (compliance.verify_chain)",
        f"bucket:  s3://{anchored}/anchors/ holds 2 anchor object versions",
        "anchors: 2 uploaded, 0 pending, 0 failed; latest anchored seq 8 of chain head 10",
        "verify: OK",
    ]

    code, report = verify_json(capsys, dsn, endpoint_url, anchored)
    assert (code, report["ok"], report["problems"], report["latest_anchored_seq"]) == (0, True, [], 8)


def test_rewritten_chain_with_recomputed_hashes_fails(conn, dsn, endpoint_url, anchored, capsys):
    as_superuser_attacker(conn, "UPDATE compliance.audit_events SET payload = '{\"i\": 999}' WHERE seq = 3")
    assert verify_chain_ok(conn), "the staged rewrite must fool verify_chain, or this test proves nothing"

    code, report = verify_json(capsys, dsn, endpoint_url, anchored)

    assert code == 1
    assert report["chain"]["ok"] is True
    head_problems = [m for check, m in problems(report) if check == "head"]
    assert len(head_problems) == 2  # both anchors' heads (seq 5 and 8) lie after the change
    assert head_problems[0].startswith("seq 5 has event_hash ")
    assert head_problems[0].endswith("the chain was rewritten")


def test_rewrite_is_caught_even_when_the_anchor_rows_are_rewritten_too(
    conn, dsn, endpoint_url, anchored, capsys
):
    """The database's own anchor rows are no witness: the bucket is."""
    as_superuser_attacker(conn, "UPDATE compliance.audit_events SET actor = 'mallory' WHERE seq = 7")
    with conn.transaction():
        conn.execute("ALTER TABLE compliance.anchors DISABLE TRIGGER ALL")
        conn.execute("ALTER TABLE compliance.anchors DROP CONSTRAINT anchors_document_check")
        conn.execute(
            "UPDATE compliance.anchors AS a SET head_hash = e.event_hash,"
            " document = replace(a.document, encode(a.head_hash, 'hex'), encode(e.event_hash, 'hex')),"
            " document_digest = sha256(convert_to(replace(a.document, encode(a.head_hash, 'hex'),"
            " encode(e.event_hash, 'hex')), 'UTF8'))"
            " FROM compliance.audit_events AS e WHERE e.seq = a.seq_to AND a.seq_to = 8"
        )
    assert verify_chain_ok(conn)

    code, report = verify_json(capsys, dsn, endpoint_url, anchored)

    assert code == 1
    checks = {check for check, _ in problems(report)}
    assert {"head", "row"} <= checks


def test_cut_tail_fails(conn, dsn, endpoint_url, anchored, capsys):
    as_superuser_attacker(conn, "DELETE FROM compliance.audit_events WHERE seq > 6")
    assert verify_chain_ok(conn)

    code, out, _ = verify(capsys, dsn, endpoint_url, anchored)

    assert code == 1
    assert f"[head] anchors/{8:020d}-" in out
    assert "the anchor covers up to seq 8 but the chain ends at seq 6: the tail was cut" in out
    assert out.endswith("verify: FAILED\n")


def test_pending_anchor_is_reported_but_not_a_failure(conn, dsn, endpoint_url, anchored, capsys):
    create_anchor(conn)

    code, report = verify_json(capsys, dsn, endpoint_url, anchored)

    assert code == 0, report["problems"]
    assert report["anchors"] == {"uploaded": 2, "pending": 1, "failed": 0}
    assert report["notes"] == ["anchor 3 (seq 9..10) is pending upload"]


def test_deleted_object_version_and_delete_marker_fail(conn, dsn, endpoint_url, anchored, capsys):
    first, second = anchor_rows(conn)
    client = s3_client(endpoint_url)
    client.delete_object(
        Bucket=anchored,
        Key=first["object_key"],
        VersionId=first["version_id"],
        BypassGovernanceRetention=True,
    )
    client.delete_object(Bucket=anchored, Key=second["object_key"])

    code, report = verify_json(capsys, dsn, endpoint_url, anchored)

    assert code == 1
    messages = problems(report)
    assert ("object", "a delete marker hides an anchor") in messages
    assert (
        "object",
        f"recorded as s3://{anchored}/{first['object_key']} version {first['version_id']}, "
        "which the bucket does not hold",
    ) in messages


def test_extra_version_at_an_anchor_key_fails(conn, dsn, endpoint_url, anchored, capsys):
    first, _ = anchor_rows(conn)
    forged = (
        first["document"]
        .replace('"seq_from": 1', '"seq_from": 2')
        .replace('"event_count": 5', '"event_count": 4')
    )
    s3_client(endpoint_url).put_object(
        Bucket=anchored, Key=first["object_key"], Body=forged.encode(), ChecksumAlgorithm="SHA256"
    )

    code, report = verify_json(capsys, dsn, endpoint_url, anchored)

    assert code == EXIT_FAILED
    # A range that no longer starts at seq 1 yet names no previous anchor is not a document the
    # database could have written: the forged version fails before any row or link is compared.
    assert [check for check, _ in problems(report)] == ["document"]


def test_shortened_retention_and_changed_lock_mode_fail(conn, dsn, endpoint_url, anchored, capsys):
    first, second = anchor_rows(conn)
    client = s3_client(endpoint_url)
    client.put_object_retention(
        Bucket=anchored,
        Key=first["object_key"],
        VersionId=first["version_id"],
        Retention={"Mode": "GOVERNANCE", "RetainUntilDate": first["retain_until"] - timedelta(days=300)},
        BypassGovernanceRetention=True,
    )
    client.put_object_retention(
        Bucket=anchored,
        Key=second["object_key"],
        VersionId=second["version_id"],
        Retention={"Mode": "COMPLIANCE", "RetainUntilDate": second["retain_until"]},
    )

    code, report = verify_json(capsys, dsn, endpoint_url, anchored)

    assert code == 1
    lock = [m for check, m in problems(report) if check == "lock"]
    assert len(lock) == 2
    assert any(m.endswith("retention was shortened") for m in lock)
    assert "Object Lock COMPLIANCE, the row records GOVERNANCE" in lock


def test_integrity_alarm_stays_visible(conn, dsn, endpoint_url, anchored, capsys):
    emit_and_drain(conn, 1)
    cadence = create_anchor(conn)
    key = f"anchors/{11:020d}-{cadence}.json"
    s3_client(endpoint_url).put_object(
        Bucket=anchored, Key=key, Body=b"not an anchor", ChecksumAlgorithm="SHA256"
    )
    assert anchor_once(capsys, dsn, endpoint_url, anchored)[0] == 1

    code, report = verify_json(capsys, dsn, endpoint_url, anchored)

    assert code == 1
    assert [check for check, _ in problems(report)] == ["document", "alarm"]


def test_prefix_is_honoured(conn, dsn, endpoint_url, bucket_name, capsys):
    make_worm_bucket(endpoint_url, bucket_name)
    emit_and_drain(conn, 2)
    create_anchor(conn)
    assert anchor_once(capsys, dsn, endpoint_url, bucket_name, "--prefix", "eu/")[0] == 0

    assert verify_json(capsys, dsn, endpoint_url, bucket_name, "--prefix", "eu")[0] == 0
    code, report = verify_json(capsys, dsn, endpoint_url, bucket_name)
    assert code == 1
    assert report["objects"] == 0
    assert [check for check, _ in problems(report)] == ["object"]


def test_unreachable_store_exits_3(dsn, capsys):
    dead = MotoServer(free_port()).start()
    dead.stop()

    code, _, err = verify(capsys, dsn, dead.url, "ac-some-bucket")

    assert code == EXIT_UNAVAILABLE
    assert "Could not connect" in err


def test_an_auditor_can_verify(conn, dsn, endpoint_url, anchored, capsys):
    with login_role(conn, "compliance_auditor") as role:
        code, out, err = verify(capsys, make_conninfo(dsn, user=role), endpoint_url, anchored)

    assert code == 0, out + err
