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

from auditchain import signing
from auditchain.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE
from auditchain.formats import checkpoint, merkle, note
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


def test_untouched_database_verifies(dsn, endpoint_url, anchored, capsys, signing_key):
    code, out, err = verify(capsys, dsn, endpoint_url, anchored, "--vkey", signing_key.vkey)

    assert code == 0, out + err
    assert out.splitlines() == [
        "chain:   OK, 10 events re-hashed and linked (compliance.verify_chain)",
        f"bucket:  s3://{anchored}/anchors/ holds 2 anchor object versions",
        "anchors: 2 uploaded, 0 pending, 0 failed; latest anchored seq 8 of chain head 10",
        "signed:  2 checkpoint signatures verified, 0 not checked",
        "verify: OK",
    ]

    code, report = verify_json(capsys, dsn, endpoint_url, anchored, "--vkey", signing_key.vkey)
    assert (code, report["ok"], report["problems"], report["latest_anchored_seq"]) == (0, True, [], 8)
    assert (report["signatures"], report["warnings"]) == ({"verified": 2, "not_checked": 0}, [])


def test_without_a_vkey_signatures_are_not_checked_a_warning_or_with_require_signatures_a_failure(
    dsn, endpoint_url, anchored, capsys
):
    code, out, _ = verify(capsys, dsn, endpoint_url, anchored)

    assert code == EXIT_OK
    assert (
        "WARNING: 2 signed checkpoints not checked against a verifier key (pass --vkey)" in out.splitlines()
    )

    code, report = verify_json(capsys, dsn, endpoint_url, anchored, "--require-signatures")
    assert code == EXIT_FAILED
    assert problems(report) == [
        (
            "signature",
            "2 signed checkpoints not checked against a verifier key (pass --vkey) and "
            "--require-signatures is set",
        )
    ]


# What a superuser rebuilds after rewriting the chain: the Merkle tree from the stored events,
# so that compliance.verify_tree finds every stored node consistent with them.
REBUILD_TREE = (
    "ALTER TABLE compliance.merkle_nodes DISABLE TRIGGER ALL",
    "DELETE FROM compliance.merkle_nodes",
    "UPDATE compliance.drainer_state SET tree_size = 0, tree_frontier = '{}'",
    "SELECT compliance._tree_catch_up()",
    "ALTER TABLE compliance.merkle_nodes ENABLE TRIGGER ALL",
    "DELETE FROM compliance.tenant_trees",
    "SELECT compliance._tenant_trees_catch_up()",
)


def rebuild_tree(conn: psycopg.Connection) -> None:
    with conn.transaction():
        for statement in REBUILD_TREE:
            conn.execute(statement)


def test_history_rewritten_with_chain_and_tree_recomputed_fails_against_the_signed_checkpoints(
    conn, dsn, endpoint_url, anchored, capsys, signing_key
):
    _, second = anchor_rows(conn)
    as_superuser_attacker(conn, "UPDATE compliance.audit_events SET payload = '{\"i\": 999}' WHERE seq = 3")
    rebuild_tree(conn)
    assert verify_chain_ok(conn), "the staged rewrite must fool verify_chain, or this test proves nothing"
    assert conn.execute("SELECT tree_size FROM compliance.drainer_state").fetchone() == (10,)

    code, report = verify_json(capsys, dsn, endpoint_url, anchored, "--vkey", signing_key.vkey)

    assert code == EXIT_FAILED
    assert report["signatures"] == {"verified": 2, "not_checked": 0}, "the checkpoints themselves are genuine"
    root_problems = [m for check, m in problems(report) if check == "checkpoint"]
    assert len(root_problems) == 2
    assert "the signed root at tree size 5 differs from the database's tree_root(5)" in root_problems[0]
    # In the database, verify_tree names the first anchor whose recorded checkpoint disagrees.
    ok, _, problem = conn.execute("SELECT * FROM compliance.verify_tree()").fetchone()
    assert not ok and "anchor 1 (seq_to 5" in problem
    # The next anchor is refused, and the consistency proof the rewritten tree gives from the last
    # signed checkpoint to today's head does not verify against that checkpoint.
    with pytest.raises(psycopg.Error) as refused:
        create_anchor(conn)
    assert refused.value.sqlstate == "AC042"
    signed, _ = checkpoint.open_signed(
        second["signed_checkpoint"].encode(), [note.parse_vkey(signing_key.vkey)]
    )
    proof, head_root = conn.execute(
        "SELECT compliance.consistency_proof(8, 10), compliance.tree_root(10)"
    ).fetchone()
    with pytest.raises(merkle.ProofError):
        checkpoint.verify_consistency(signed, checkpoint.Checkpoint(signed.origin, 10, head_root), proof)


def test_checkpoint_signed_by_another_key_fails(conn, dsn, endpoint_url, anchored, capsys, signing_key):
    first, _ = anchor_rows(conn)
    impostor = note.parse_skey(note.generate_skey("auditchain-test"))  # same name, another key
    forged = signing.sign_checkpoint(first["checkpoint"].encode(), impostor)
    put = s3_client(endpoint_url).put_object(
        Bucket=anchored, Key=first["checkpoint_key"], Body=forged, ChecksumAlgorithm="SHA256"
    )

    code, report = verify_json(capsys, dsn, endpoint_url, anchored, "--vkey", signing_key.vkey)

    assert code == EXIT_FAILED
    signature_problems = [p for p in report["problems"] if p["check"] == "signature"]
    assert [p["subject"] for p in signature_problems] == [
        f"{first['checkpoint_key']} version {put['VersionId']}"
    ]
    assert signature_problems[0]["message"].startswith("not signed by a trusted key")

    # Trusting only the impostor's key, the genuine checkpoints fail instead.
    vkey = note.encode_vkey(impostor.name, impostor.public_key)
    code, report = verify_json(capsys, dsn, endpoint_url, anchored, "--vkey", vkey)
    assert code == EXIT_FAILED
    assert len([p for p in report["problems"] if p["check"] == "signature"]) == 2


def test_key_rotation_verifies_with_both_vkeys(
    conn, dsn, endpoint_url, anchored, capsys, signing_key, tmp_path
):
    new_key = tmp_path / "new.key"
    new_key.write_text(note.generate_skey("auditchain-test-2026") + "\n")
    emit_and_drain(conn, 1)
    create_anchor(conn)
    code, _, err = anchor_once(capsys, dsn, endpoint_url, anchored, "--signing-key", str(new_key))
    assert code == EXIT_OK, err
    new_vkey = run_cli(capsys, "key", "vkey", "--key-file", str(new_key))[1].strip()

    code, report = verify_json(capsys, dsn, endpoint_url, anchored, "--vkey", signing_key.vkey)
    assert code == EXIT_FAILED
    assert [p["check"] for p in report["problems"]] == ["signature"], "the anchor signed with the new key"

    both = tmp_path / "vkeys"
    both.write_text(f"{signing_key.vkey}\n{new_vkey}\n")
    code, report = verify_json(capsys, dsn, endpoint_url, anchored, "--vkey", str(both))
    assert (code, report["problems"], report["signatures"]) == (
        EXIT_OK,
        [],
        {"verified": 3, "not_checked": 0},
    )
    # The consistency proof across the rotation ties the new key's first checkpoint to the old key's last.
    assert all(p["check"] != "consistency" for p in report["problems"])


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


def test_setup_problems_are_never_reported_as_tampering(empty_dsn, dsn, endpoint_url, bucket_name, capsys):
    """A database without the schema and a bucket that does not exist are configuration
    problems (78), each one line; 1 stays reserved for evidence of tampering."""
    make_worm_bucket(endpoint_url, bucket_name)
    code, out, err = verify(capsys, empty_dsn, endpoint_url, bucket_name)
    assert (code, out) == (EXIT_CONFIG, "")
    (line,) = err.splitlines()
    assert "is not set up for this command" in line and "compliance" in line

    code, out, err = verify(capsys, dsn, endpoint_url, "ac-no-such-bucket-here")
    assert (code, out) == (EXIT_CONFIG, "")
    (line,) = err.splitlines()
    assert "NoSuchBucket" in line
