"""`auditchain prove`: an event's receipt from a real drained and anchored database, against the
newest signed checkpoint covering it, checked by `verify-proof`; what it says when no signed
checkpoint covers the event yet, for an unknown event, and for a tree rewritten after signing."""

from __future__ import annotations

import json

from psycopg.conninfo import make_conninfo

from auditchain.errors import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from auditchain.formats import note, receipt
from test_anchor import anchor_once, create_anchor, emit_and_drain, login_role, make_worm_bucket, run_cli
from test_verify_bucket import as_superuser_attacker, rebuild_tree


def prove(capsys, dsn: str, *argv: str) -> tuple[int, str, str]:
    return run_cli(capsys, "prove", "--dsn", dsn, *argv)


def anchor_all(conn, capsys, dsn: str, endpoint_url: str, bucket: str) -> None:
    create_anchor(conn)
    code, _, err = anchor_once(capsys, dsn, endpoint_url, bucket)
    assert code == EXIT_OK, err


def test_no_signed_checkpoint_yet_is_unavailable_with_one_line(conn, dsn, endpoint_url, bucket_name, capsys):
    make_worm_bucket(endpoint_url, bucket_name)
    emit_and_drain(conn, 4)
    create_anchor(conn)  # recorded, not yet signed and uploaded

    code, out, err = prove(capsys, dsn, "--seq", "2")

    assert (code, out) == (EXIT_UNAVAILABLE, "")
    assert err.strip().splitlines() == [
        "auditchain prove: event seq 2 is not covered by a signed checkpoint yet: "
        "the next anchor will cover it"
    ]

    anchor_all(conn, capsys, dsn, endpoint_url, bucket_name)
    emit_and_drain(conn, 1)
    code, _, err = prove(capsys, dsn, "--seq", "5")
    assert code == EXIT_UNAVAILABLE, "an event after the last anchor waits for the next one"
    code, _, err = prove(capsys, dsn, "--seq", "6")
    assert code == EXIT_USAGE and "no chained event with seq 6" in err


def test_receipt_by_event_id_verifies_and_uses_the_newest_covering_checkpoint(
    conn, dsn, endpoint_url, bucket_name, capsys, signing_key
):
    make_worm_bucket(endpoint_url, bucket_name)
    emit_and_drain(conn, 3)
    anchor_all(conn, capsys, dsn, endpoint_url, bucket_name)
    emit_and_drain(conn, 4)
    anchor_all(conn, capsys, dsn, endpoint_url, bucket_name)
    (event_id,) = conn.execute("SELECT event_id FROM compliance.audit_events WHERE seq = 2").fetchone()

    code, out, err = prove(capsys, dsn, "--event-id", str(event_id))

    assert code == EXIT_OK, err
    verified = receipt.verify_receipt(out.encode(), [note.parse_vkey(signing_key.vkey)])
    assert (verified.event["seq"], verified.event["event_id"], verified.checkpoint.size) == (
        2,
        str(event_id),
        7,
    )
    assert verified.event["payload"] == '{"i": 2}'

    code, out, _ = prove(capsys, dsn, "--seq", "2", "--json")
    summary = json.loads(out)
    assert (summary["seq"], summary["tree_size"], summary["anchor_id"]) == (2, 7, 2)
    assert receipt.verify_receipt(summary["receipt"].encode(), [note.parse_vkey(signing_key.vkey)])


def test_the_auditor_role_is_enough(conn, dsn, endpoint_url, bucket_name, capsys, tmp_path, signing_key):
    make_worm_bucket(endpoint_url, bucket_name)
    emit_and_drain(conn, 3)
    anchor_all(conn, capsys, dsn, endpoint_url, bucket_name)
    out = tmp_path / "event-3.tlog-proof"

    with login_role(conn, "compliance_auditor") as role:
        code, stdout, err = prove(capsys, make_conninfo(dsn, user=role), "--seq", "3", "--out", str(out))

    assert code == EXIT_OK, err
    assert f"receipt for event seq 3 written to {out}" in stdout
    code, _, err = run_cli(capsys, "verify-proof", str(out), "--vkey", signing_key.vkey)
    assert code == EXIT_OK, err


def test_a_tree_rewritten_after_signing_gives_no_receipt(conn, dsn, endpoint_url, bucket_name, capsys):
    make_worm_bucket(endpoint_url, bucket_name)
    emit_and_drain(conn, 6)
    anchor_all(conn, capsys, dsn, endpoint_url, bucket_name)
    as_superuser_attacker(conn, "UPDATE compliance.audit_events SET actor = 'mallory' WHERE seq = 2")
    rebuild_tree(conn)

    code, out, err = prove(capsys, dsn, "--seq", "4")

    assert (code, out) == (EXIT_FAILED, "")
    assert "does not lead to the root of the signed checkpoint at tree size 6" in err
