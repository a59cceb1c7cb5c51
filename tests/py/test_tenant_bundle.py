"""A tenant bundle end to end: one tenant of a multi-tenant log exported by the real runner into
a loopback S3, verified offline with nothing but the log's verifier key, holding nothing of the
other tenants' events; any of its events also has a receipt that `verify-proof` accepts; a
bundle with one event removed fails."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import psycopg

from auditchain import s3
from auditchain.errors import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from clihelpers import run_cli
from test_anchor import anchor_once, create_anchor, make_worm_bucket
from test_export_runner import read_bundle

# (tenant, event type, actor): each event of another tenant has a type and actor found nowhere else.
EVENTS = [
    ("acme", "user.login", "alice@acme.example"),
    ("beta", "beta.payroll_viewed", "bob@beta.example"),
    (None, "system.backup_started", "cron-backup"),
    ("acme", "user.logout", "alice@acme.example"),
    ("beta", "beta.salary_changed", "carol@beta.example"),
    ("acme", "data.export_initiated_by_hand", "alice@acme.example"),
    ("beta", "beta.contract_signed", "dave@beta.example"),
]


def chain_one_at_a_time(conn: psycopg.Connection) -> None:
    """Each event in a batch of its own, so no two events share a recorded_at."""
    for n, (tenant, event_type, actor) in enumerate(EVENTS):
        conn.execute(
            "SELECT compliance.emit(%s, %s, jsonb_build_object('n', %s::int), %s,"
            " timestamptz '2026-03-01 00:00:00+00' + make_interval(mins => %s))",
            (event_type, actor, n, tenant, 7 * n + 3),
        )
        conn.execute("SELECT compliance.drain()")


def anchor_with_committed_heads(conn, capsys, dsn: str, endpoint_url: str, bucket: str) -> None:
    """What the pg_cron jobs do in production: anchor, commit the heads, chain the commitment,
    anchor again (that checkpoint covers it), and upload and sign every pending anchor."""
    create_anchor(conn)
    conn.execute("SELECT compliance.commit_tenant_heads()")
    conn.execute("SELECT compliance.drain()")
    create_anchor(conn)
    code, _, err = anchor_once(capsys, dsn, endpoint_url, bucket)
    assert code == EXIT_OK, err


def export_tenant(
    capsys, dsn: str, endpoint_url: str, bucket: str, tmp_path: Path, export_filter: dict
) -> Path:
    code, out, err = run_cli(
        capsys,
        "export",
        "request",
        "--dsn",
        dsn,
        "--mode",
        "tenant",
        "--filter",
        json.dumps(export_filter),
        "--requested-by",
        "auditor@acme.example",
    )
    assert code == EXIT_OK, err
    job_id = out.strip()
    code, _, err = run_cli(
        capsys,
        "export",
        "run",
        "--dsn",
        dsn,
        "--job",
        job_id,
        "--bucket",
        bucket,
        "--endpoint-url",
        endpoint_url,
    )
    assert code == EXIT_OK, err
    manifest, data = read_bundle(s3.make_client(endpoint_url), bucket, f"exports/{job_id}/")
    folder = tmp_path / job_id
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (folder / "events.ndjson.gz").write_bytes(data)
    return folder


def other_tenants_evidence(conn: psycopg.Connection) -> list[str]:
    """Every form in which another tenant's event could show: record digest (hex and base64),
    occurred_at and recorded_at as bundles write them, event type, actor. The heads
    commitment events are the proofs' own material and are left out."""
    rows = conn.execute(
        """SELECT encode(sha256(compliance._row_record(e)), 'hex'),
                  encode(sha256(compliance._row_record(e)), 'base64'),
                  compliance._iso_utc(e.occurred_at), compliance._iso_utc(e.recorded_at),
                  e.event_type, e.actor
             FROM compliance.audit_events AS e
            WHERE e.tenant_id IS DISTINCT FROM 'acme'
              AND e.event_type <> 'compliance.tenant_heads'"""
    ).fetchall()
    return [value for row in rows for value in row]


def verify_bundle(capsys, folder: Path, vkey: str, *extra: str) -> tuple[int, dict[str, Any], str]:
    code, out, err = run_cli(capsys, "verify-bundle", str(folder), "--vkey", vkey, "--json", *extra)
    return code, json.loads(out) if out.strip() else {}, err


def test_one_tenant_is_exported_and_verified_with_only_the_verifier_key(
    conn, dsn, endpoint_url, bucket_name, capsys, tmp_path, signing_key
):
    make_worm_bucket(endpoint_url, bucket_name)
    chain_one_at_a_time(conn)
    anchor_with_committed_heads(conn, capsys, dsn, endpoint_url, bucket_name)

    folder = export_tenant(capsys, dsn, endpoint_url, bucket_name, tmp_path, {"tenant_id": "acme"})
    code, report, err = verify_bundle(capsys, folder, signing_key.vkey)

    assert code == EXIT_OK, (report, err)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    lines = gzip.decompress((folder / "events.ndjson.gz").read_bytes()).decode().splitlines()
    assert manifest["mode"] == "tenant"
    assert [json.loads(line)["seq"] for line in lines] == [1, 4, 6]
    assert {json.loads(line)["tenant_id"] for line in lines} == {"acme"}
    everything = (folder / "manifest.json").read_text(encoding="utf-8") + "\n".join(lines)
    leaked = [value for value in other_tenants_evidence(conn) if value in everything]
    assert leaked == [], "the bundle shows another tenant's event"

    # Any event of the bundle also has a receipt of its own against the same signed checkpoint.
    code, receipt_text, err = run_cli(capsys, "prove", "--dsn", dsn, "--seq", "4")
    assert code == EXIT_OK, err
    receipt_path = tmp_path / "seq4.tlog-proof"
    receipt_path.write_text(receipt_text, encoding="utf-8")
    code, _, err = run_cli(capsys, "verify-proof", str(receipt_path), "--vkey", signing_key.vkey)
    assert code == EXIT_OK, err
    assert manifest["tenant"]["to"]["checkpoint"].split("\n\n")[0] in receipt_text


def test_a_tenant_bundle_missing_one_event_fails(
    conn, dsn, endpoint_url, bucket_name, capsys, tmp_path, signing_key
):
    make_worm_bucket(endpoint_url, bucket_name)
    chain_one_at_a_time(conn)
    anchor_with_committed_heads(conn, capsys, dsn, endpoint_url, bucket_name)
    folder = export_tenant(capsys, dsn, endpoint_url, bucket_name, tmp_path, {"tenant_id": "acme"})

    # Drop acme's second event and make the data object's digest and the counts agree again,
    # so that only the tree can tell.
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    lines = gzip.decompress((folder / "events.ndjson.gz").read_bytes()).decode().splitlines()
    del lines[1]
    data = gzip.compress(("\n".join(lines) + "\n").encode())
    (folder / "events.ndjson.gz").write_bytes(data)
    manifest.update(
        data_sha256=hashlib.sha256(data).hexdigest(), data_bytes=len(data), line_count=2, matched_count=2
    )
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")

    code, report, _ = verify_bundle(capsys, folder, signing_key.vkey)

    assert code == EXIT_FAILED
    assert report["ok"] is False


def test_another_key_is_not_trusted(conn, dsn, endpoint_url, bucket_name, capsys, tmp_path):
    from auditchain.formats import note

    make_worm_bucket(endpoint_url, bucket_name)
    chain_one_at_a_time(conn)
    anchor_with_committed_heads(conn, capsys, dsn, endpoint_url, bucket_name)
    folder = export_tenant(capsys, dsn, endpoint_url, bucket_name, tmp_path, {"tenant_id": "acme"})
    stranger = note.parse_skey(note.generate_skey("auditchain-test"))

    code, report, _ = verify_bundle(capsys, folder, note.encode_vkey(stranger.name, stranger.public_key))

    assert code == EXIT_FAILED
    assert report["ok"] is False
    assert any("checkpoint" in failure["text"] for failure in report["failures"]), report


def test_a_request_no_signed_checkpoint_can_prove_yet_is_unavailable_and_a_bad_mode_is_usage(
    conn, dsn, capsys
):
    chain_one_at_a_time(conn)
    request = ("export", "request", "--dsn", dsn, "--requested-by", "auditor@acme.example", "--filter")

    code, out, err = run_cli(capsys, *request, '{"tenant_id": "acme"}', "--mode", "tenant")

    assert (code, out) == (EXIT_UNAVAILABLE, "")
    assert err.strip().splitlines() == [
        "auditchain export: no signed checkpoint covers a tenant heads commitment yet"
    ]
    code, _, err = run_cli(capsys, *request, '{"tenant_id": "acme", "actor": "x"}', "--mode", "tenant")
    assert code == EXIT_USAGE and 'unknown key "actor"' in err
    assert conn.execute("SELECT count(*) FROM compliance.export_jobs").fetchone()[0] == 0, (
        "nothing was queued"
    )
