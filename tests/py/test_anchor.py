"""`auditchain anchor` against a real S3 API on loopback (moto server): what lands in the bucket,
what the database records, and what happens when the store fails or already holds other bytes."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import psycopg
import pytest
from botocore.exceptions import ClientError
from psycopg import sql
from psycopg.conninfo import make_conninfo

from auditchain import signing
from auditchain.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from auditchain.formats import anchor_document, checkpoint, note
from awsfake import MotoServer, free_port
from clihelpers import run_cli

REPO = Path(__file__).resolve().parents[2]


def emit_and_drain(conn: psycopg.Connection, count: int) -> None:
    conn.execute(
        "SELECT compliance.emit('test.anchored', 'tester', jsonb_build_object('i', i))"
        " FROM generate_series(1, %s) AS i",
        (count,),
    )
    conn.execute("SELECT compliance.drain(1000)")


def create_anchor(conn: psycopg.Connection) -> str | None:
    return conn.execute("SELECT compliance.create_anchor()").fetchone()[0]


def s3_client(endpoint_url: str):
    return boto3.client("s3", endpoint_url=endpoint_url)


def make_worm_bucket(endpoint_url: str, bucket: str, mode: str = "GOVERNANCE", days: int = 365) -> None:
    client = s3_client(endpoint_url)
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    client.put_object_lock_configuration(
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": mode, "Days": days}},
        },
    )


def anchor_once(capsys, dsn: str, endpoint_url: str, bucket: str, *extra: str) -> tuple[int, str, str]:
    return run_cli(
        capsys, "anchor", "--once", "--dsn", dsn, "--endpoint-url", endpoint_url, "--bucket", bucket, *extra
    )


def anchor_rows(conn: psycopg.Connection) -> list[dict]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute("SELECT * FROM compliance.anchors ORDER BY seq_to").fetchall()


def all_versions(endpoint_url: str, bucket: str, folder: str = "anchors/") -> list[dict]:
    """The object versions under anchors/ (documents) or checkpoints/ (signed checkpoints)."""
    return s3_client(endpoint_url).list_object_versions(Bucket=bucket, Prefix=folder).get("Versions", [])


@pytest.fixture
def worm_bucket(endpoint_url: str, bucket_name: str) -> str:
    make_worm_bucket(endpoint_url, bucket_name)
    return bucket_name


def test_anchor_object_has_the_document_lock_retention_and_checksum(
    conn, dsn, endpoint_url, worm_bucket, capsys
):
    emit_and_drain(conn, 5)
    cadence = create_anchor(conn)

    code, out, err = anchor_once(capsys, dsn, endpoint_url, worm_bucket)

    assert code == 0, err
    assert out == "1 uploaded, 0 already present, 0 left pending after an error, 0 integrity alarms\n"
    (row,) = anchor_rows(conn)
    key = f"anchors/{5:020d}-{cadence}.json"
    assert (row["status"], row["bucket"], row["object_key"], row["attempts"]) == (
        "uploaded",
        worm_bucket,
        key,
        1,
    )
    client = s3_client(endpoint_url)
    head = client.head_object(Bucket=worm_bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ObjectLockMode"] == "GOVERNANCE" == row["lock_mode"]
    assert head["ObjectLockRetainUntilDate"] == row["retain_until"]
    expected_until = datetime.now(UTC) + timedelta(days=365)
    assert abs(head["ObjectLockRetainUntilDate"] - expected_until) < timedelta(minutes=2)
    assert head["VersionId"] == row["version_id"]
    assert head["ContentType"] == "application/json"
    assert head["ChecksumSHA256"] == base64.b64encode(row["document_digest"]).decode()
    body = client.get_object(Bucket=worm_bucket, Key=key)["Body"].read()
    assert body == row["document"].encode("utf-8")
    assert hashlib.sha256(body).digest() == row["document_digest"]
    assert json.loads(body)["seq_to"] == 5


def test_compliance_mode_object_version_cannot_be_deleted(conn, dsn, endpoint_url, worm_bucket, capsys):
    emit_and_drain(conn, 3)
    create_anchor(conn)

    code, _, err = anchor_once(
        capsys, dsn, endpoint_url, worm_bucket, "--lock-mode", "COMPLIANCE", "--retention-days", "1"
    )

    assert code == 0, err
    (row,) = anchor_rows(conn)
    client = s3_client(endpoint_url)
    head = client.head_object(Bucket=worm_bucket, Key=row["object_key"], VersionId=row["version_id"])
    assert head["ObjectLockMode"] == "COMPLIANCE" == row["lock_mode"]
    with pytest.raises(ClientError) as denied:
        client.delete_object(
            Bucket=worm_bucket,
            Key=row["object_key"],
            VersionId=row["version_id"],
            BypassGovernanceRetention=True,
        )
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    assert client.get_object(Bucket=worm_bucket, Key=row["object_key"], VersionId=row["version_id"])[
        "Body"
    ].read()


def test_create_anchor_and_anchor_twice_leave_one_anchor_and_one_object(
    conn, dsn, endpoint_url, worm_bucket, capsys
):
    emit_and_drain(conn, 4)
    first = create_anchor(conn)
    assert create_anchor(conn) is None

    assert anchor_once(capsys, dsn, endpoint_url, worm_bucket)[0] == 0
    code, out, _ = anchor_once(capsys, dsn, endpoint_url, worm_bucket)

    assert (code, out) == (0, "no pending anchors\n")
    assert [r["cadence_id"] for r in anchor_rows(conn)] == [first]
    (version,) = all_versions(endpoint_url, worm_bucket)
    assert version["Key"] == f"anchors/{4:020d}-{first}.json"


def test_upload_done_but_not_recorded_is_recorded_on_the_next_run_without_a_second_version(
    conn, dsn, endpoint_url, worm_bucket, capsys
):
    """A crash between the PUT and the commit: the next run finds its own bytes at the key."""
    emit_and_drain(conn, 2)
    cadence = create_anchor(conn)
    document, digest = conn.execute("SELECT document, document_digest FROM compliance.anchors").fetchone()
    key = f"anchors/{2:020d}-{cadence}.json"
    until = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    put = s3_client(endpoint_url).put_object(
        Bucket=worm_bucket,
        Key=key,
        Body=document.encode(),
        ChecksumAlgorithm="SHA256",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=until,
    )

    code, out, err = anchor_once(capsys, dsn, endpoint_url, worm_bucket)

    assert code == 0, err
    assert out.startswith("0 uploaded, 1 already present")
    (row,) = anchor_rows(conn)
    assert (row["status"], row["version_id"], row["retain_until"]) == ("uploaded", put["VersionId"], until)
    assert len(all_versions(endpoint_url, worm_bucket)) == 1


def test_unreachable_store_leaves_anchors_pending_with_the_error_and_the_next_run_uploads_them(
    conn, dsn, endpoint_url, worm_bucket, capsys, caplog
):
    emit_and_drain(conn, 3)
    create_anchor(conn)
    emit_and_drain(conn, 2)
    create_anchor(conn)
    dead = MotoServer(free_port()).start()
    dead.stop()

    code, _, err = anchor_once(capsys, dsn, dead.url, worm_bucket)

    assert code == EXIT_UNAVAILABLE
    first, second = anchor_rows(conn)
    assert (first["status"], first["attempts"]) == ("pending", 1)
    assert "Could not connect" in first["last_error"]
    assert first["lease_expires_at"] is None, "a recorded error releases the lease for the next run"
    assert (second["status"], second["attempts"], second["last_error"]) == ("pending", 0, None)
    assert "anchor 1 (seq 1..3): upload failed, left pending for the next run" in caplog.text

    code, out, err = anchor_once(capsys, dsn, endpoint_url, worm_bucket)

    assert code == 0, err
    assert out.startswith("2 uploaded")
    first, second = anchor_rows(conn)
    assert (first["status"], first["attempts"], second["status"], second["attempts"]) == (
        "uploaded",
        2,
        "uploaded",
        1,
    )
    assert "Could not connect" in first["last_error"]
    assert len(all_versions(endpoint_url, worm_bucket)) == 2


def test_store_unreachable_with_nothing_pending_still_exits_unavailable(dsn, capsys, caplog):
    dead = MotoServer(free_port()).start()
    dead.stop()

    code, out, _ = anchor_once(capsys, dsn, dead.url, "ac-some-bucket")

    assert (code, out) == (EXIT_UNAVAILABLE, "no pending anchors\n")
    assert "checking again before the first upload" in caplog.text


def test_different_content_at_the_key_is_an_integrity_alarm_and_is_not_overwritten(
    conn, dsn, endpoint_url, worm_bucket, capsys, caplog
):
    emit_and_drain(conn, 3)
    cadence = create_anchor(conn)
    key = f"anchors/{3:020d}-{cadence}.json"
    client = s3_client(endpoint_url)
    forged = b'{"format": "auditchain-anchor", "forged": true}'
    client.put_object(Bucket=worm_bucket, Key=key, Body=forged, ChecksumAlgorithm="SHA256")

    code, _, _ = anchor_once(capsys, dsn, endpoint_url, worm_bucket)

    assert code == EXIT_FAILED
    (row,) = anchor_rows(conn)
    assert (row["status"], row["attempts"], row["object_key"]) == ("failed", 1, key)
    assert row["last_error"].startswith(f"integrity alarm: s3://{worm_bucket}/{key}")
    assert any(r.levelname == "ERROR" and "integrity alarm" in r.getMessage() for r in caplog.records)
    (version,) = all_versions(endpoint_url, worm_bucket)
    assert client.get_object(Bucket=worm_bucket, Key=key)["Body"].read() == forged
    assert version["VersionId"] == row["version_id"]

    # The alarm is final; later anchors chain on and are uploaded as usual.
    emit_and_drain(conn, 1)
    create_anchor(conn)
    assert anchor_once(capsys, dsn, endpoint_url, worm_bucket)[0] == 0
    assert [r["status"] for r in anchor_rows(conn)] == ["failed", "uploaded"]


def test_refuses_a_bucket_without_object_lock(conn, dsn, endpoint_url, bucket_name, capsys):
    s3_client(endpoint_url).create_bucket(Bucket=bucket_name)
    emit_and_drain(conn, 1)
    create_anchor(conn)

    code, _, err = anchor_once(capsys, dsn, endpoint_url, bucket_name)

    assert code == EXIT_CONFIG
    assert f"bucket {bucket_name} is not WORM-capable (Object Lock not enabled" in err
    (row,) = anchor_rows(conn)
    assert (row["status"], row["attempts"]) == ("pending", 0)
    assert all_versions(endpoint_url, bucket_name) == []


def test_refuses_governance_objects_in_a_compliance_bucket(conn, dsn, endpoint_url, bucket_name, capsys):
    make_worm_bucket(endpoint_url, bucket_name, mode="COMPLIANCE", days=1)
    emit_and_drain(conn, 1)
    create_anchor(conn)

    code, _, err = anchor_once(capsys, dsn, endpoint_url, bucket_name)

    assert code == EXIT_USAGE
    assert "is in COMPLIANCE mode; run with --lock-mode COMPLIANCE" in err
    assert anchor_rows(conn)[0]["status"] == "pending"


def test_sse_kms_key_gives_sse_kms_objects(conn, dsn, endpoint_url, worm_bucket, capsys):
    key_id = boto3.client("kms", endpoint_url=endpoint_url).create_key()["KeyMetadata"]["KeyId"]
    emit_and_drain(conn, 1)
    create_anchor(conn)

    code, _, err = anchor_once(capsys, dsn, endpoint_url, worm_bucket, "--sse-kms-key-id", key_id)

    assert code == 0, err
    (row,) = anchor_rows(conn)
    for key in (row["object_key"], row["checkpoint_key"]):
        head = s3_client(endpoint_url).head_object(Bucket=worm_bucket, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms"
        assert key_id in head["SSEKMSKeyId"]


def sign_with(key_file: Path, body: bytes) -> bytes:
    return signing.sign_checkpoint(body, signing.load_key_file(key_file))


def test_v2_anchor_uploads_its_signed_checkpoint_beside_the_document(
    conn, dsn, endpoint_url, worm_bucket, capsys, signing_key
):
    emit_and_drain(conn, 5)
    cadence = create_anchor(conn)
    emit_and_drain(conn, 3)
    create_anchor(conn)

    code, _, err = anchor_once(capsys, dsn, endpoint_url, worm_bucket)

    assert code == EXIT_OK, err
    first, second = anchor_rows(conn)
    assert first["checkpoint_key"] == f"checkpoints/{5:020d}-{cadence}.checkpoint"
    client = s3_client(endpoint_url)
    verifier = note.parse_vkey(signing_key.vkey)
    for row in (first, second):
        obj = client.get_object(
            Bucket=worm_bucket, Key=row["checkpoint_key"], VersionId=row["checkpoint_version_id"]
        )
        signed = obj["Body"].read()
        assert signed == row["signed_checkpoint"].encode()
        assert obj["ObjectLockMode"] == "GOVERNANCE"
        cp, _ = checkpoint.open_signed(signed, [verifier])
        document = json.loads(row["document"])
        assert document["format_version"] == 2
        assert cp.body() == document["checkpoint"].encode() == row["checkpoint"].encode()
        assert (cp.size, cp.root) == (row["seq_to"], row["tree_root"])
        assert cp.root == conn.execute("SELECT compliance.tree_root(%s)", (row["seq_to"],)).fetchone()[0]
    # The second document's consistency proof leads from the first signed checkpoint to the second.
    second_document = anchor_document.parse(second["document"].encode())
    previous = checkpoint.parse(first["checkpoint"].encode())
    assert anchor_document.consistency_problem(previous, second_document) is None
    assert conn.execute("SELECT ok FROM compliance.verify_tree()").fetchone() == (True,)


def test_v2_anchor_without_a_signing_key_exits_config_with_a_hint(
    conn, dsn, endpoint_url, worm_bucket, capsys, monkeypatch
):
    monkeypatch.delenv("AUDITCHAIN_SIGNING_KEY")
    emit_and_drain(conn, 2)
    create_anchor(conn)

    code, _, err = anchor_once(capsys, dsn, endpoint_url, worm_bucket)

    assert code == EXIT_CONFIG
    assert len(err.strip().splitlines()) == 1 and "auditchain key generate" in err, err
    (row,) = anchor_rows(conn)
    assert row["status"] == "pending" and row["lease_expires_at"] is None
    assert (
        all_versions(endpoint_url, worm_bucket)
        == all_versions(endpoint_url, worm_bucket, "checkpoints/")
        == []
    )


def test_one_checkpoint_signer_and_an_option_wins_over_the_variables(
    conn, dsn, endpoint_url, worm_bucket, capsys, monkeypatch, signing_key
):
    emit_and_drain(conn, 1)
    create_anchor(conn)

    code, _, err = anchor_once(
        capsys,
        dsn,
        endpoint_url,
        worm_bucket,
        "--signing-key",
        str(signing_key.path),
        "--kms-key-id",
        "alias/x",
    )
    assert code == EXIT_USAGE and "give one checkpoint signer" in err
    monkeypatch.setenv("AUDITCHAIN_SIGNING_KMS_KEY_ID", "alias/never-used")
    code, _, err = anchor_once(capsys, dsn, endpoint_url, worm_bucket)
    assert code == EXIT_USAGE and "AUDITCHAIN_SIGNING_KEY and AUDITCHAIN_SIGNING_KMS_KEY_ID" in err
    assert anchor_rows(conn)[0]["status"] == "pending"

    code, _, err = anchor_once(capsys, dsn, endpoint_url, worm_bucket, "--signing-key", str(signing_key.path))
    assert code == EXIT_OK, err
    assert anchor_rows(conn)[0]["status"] == "uploaded"


def test_kms_signs_the_checkpoint_through_the_kms_request_shape(
    conn, dsn, endpoint_url, worm_bucket, capsys, monkeypatch
):
    """moto has no Ed25519 KMS keys: botocore's Stubber checks each request against the KMS model
    and answers with a local key's signatures (tests/py/test_signing.py)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from test_signing import ALIAS, kms_stub, stub_public_key, stub_sign

    emit_and_drain(conn, 2)
    create_anchor(conn)
    (body,) = conn.execute("SELECT checkpoint FROM compliance.anchors").fetchone()
    key = Ed25519PrivateKey.generate()
    name = body.split("\n")[0]
    with kms_stub() as (client, stubber):
        stub_public_key(stubber, key)
        stub_sign(stubber, body.encode(), key.sign(body.encode()))
        monkeypatch.setattr(signing, "kms_client", lambda region=None: client)
        monkeypatch.delenv("AUDITCHAIN_SIGNING_KEY")
        code, _, err = anchor_once(
            capsys, dsn, endpoint_url, worm_bucket, "--kms-key-id", ALIAS, "--key-name", name
        )

    assert code == EXIT_OK, err
    (row,) = anchor_rows(conn)
    verifier = note.parse_vkey(note.encode_vkey(name, key.public_key().public_bytes_raw()))
    cp, _ = checkpoint.open_signed(row["signed_checkpoint"].encode(), [verifier])
    assert cp.size == 2


def test_checkpoint_written_but_document_not_is_finished_by_the_next_run(
    conn, dsn, endpoint_url, worm_bucket, capsys, signing_key
):
    """A crash between the two PUTs: the retry signs the same bytes (Ed25519 is deterministic),
    finds them at the checkpoint key and writes only the document."""
    emit_and_drain(conn, 3)
    cadence = create_anchor(conn)
    (body,) = conn.execute("SELECT checkpoint FROM compliance.anchors").fetchone()
    key = f"checkpoints/{3:020d}-{cadence}.checkpoint"
    until = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    put = s3_client(endpoint_url).put_object(
        Bucket=worm_bucket,
        Key=key,
        Body=sign_with(signing_key.path, body.encode()),
        ChecksumAlgorithm="SHA256",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=until,
    )

    code, out, err = anchor_once(capsys, dsn, endpoint_url, worm_bucket)

    assert code == EXIT_OK, err
    assert out.startswith("1 uploaded")
    (row,) = anchor_rows(conn)
    assert (row["status"], row["checkpoint_key"], row["checkpoint_version_id"]) == (
        "uploaded",
        key,
        put["VersionId"],
    )
    assert len(all_versions(endpoint_url, worm_bucket, "checkpoints/")) == 1
    assert len(all_versions(endpoint_url, worm_bucket)) == 1


def test_other_bytes_at_the_checkpoint_key_are_an_integrity_alarm_and_are_not_overwritten(
    conn, dsn, endpoint_url, worm_bucket, capsys, tmp_path
):
    """A checkpoint signed by another key already at the key (or a key rotated while an upload was
    in flight): never overwritten, never recorded as this anchor's."""
    emit_and_drain(conn, 3)
    cadence = create_anchor(conn)
    (body,) = conn.execute("SELECT checkpoint FROM compliance.anchors").fetchone()
    other = tmp_path / "other.key"
    other.write_text(note.generate_skey("someone-else") + "\n")
    key = f"checkpoints/{3:020d}-{cadence}.checkpoint"
    forged = sign_with(other, body.encode())
    s3_client(endpoint_url).put_object(Bucket=worm_bucket, Key=key, Body=forged)

    code, _, err = anchor_once(capsys, dsn, endpoint_url, worm_bucket)

    assert code == EXIT_FAILED
    (row,) = anchor_rows(conn)
    assert row["status"] == "failed" and key in row["last_error"] and "integrity alarm" in row["last_error"]
    assert row["signed_checkpoint"] is None
    (version,) = all_versions(endpoint_url, worm_bucket, "checkpoints/")
    assert s3_client(endpoint_url).get_object(Bucket=worm_bucket, Key=key)["Body"].read() == forged
    assert all_versions(endpoint_url, worm_bucket) == [], (
        "the document is not written beside a foreign checkpoint"
    )


def test_prefix_and_json_summary(conn, dsn, endpoint_url, worm_bucket, capsys):
    emit_and_drain(conn, 2)
    cadence = create_anchor(conn)

    code, out, err = anchor_once(capsys, dsn, endpoint_url, worm_bucket, "--prefix", "prod/eu", "--json")

    assert code == 0, err
    summary = json.loads(out)
    (anchor,) = summary["anchors"]
    assert (summary["exit_code"], anchor["outcome"], anchor["seq_from"], anchor["seq_to"]) == (
        0,
        "uploaded",
        1,
        2,
    )
    assert anchor["key"] == f"prod/eu/anchors/{2:020d}-{cadence}.json" == anchor_rows(conn)[0]["object_key"]


def test_lock_mode_from_the_environment_is_validated(dsn, endpoint_url, worm_bucket, capsys, monkeypatch):
    monkeypatch.setenv("AUDITCHAIN_LOCK_MODE", "compliance")

    code, _, err = anchor_once(capsys, dsn, endpoint_url, worm_bucket)

    assert code == EXIT_USAGE
    assert "lock mode must be GOVERNANCE or COMPLIANCE, not 'compliance'" in err


def test_follow_uploads_when_create_anchor_notifies(conn, dsn, endpoint_url, worm_bucket):
    env = {**os.environ, "PYTHONPATH": str(REPO / "python")}
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "auditchain.cli",
            "anchor",
            "--follow",
            "--dsn",
            dsn,
            "--endpoint-url",
            endpoint_url,
            "--bucket",
            worm_bucket,
            "--poll-interval",
            "600",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait until its first pass over the empty queue is done: only a notification can wake
        # it before the 600 s poll.
        deadline = time.monotonic() + 30
        while not conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'auditchain anchor' AND state = 'idle'"
            " AND query LIKE '%%claim_next_anchor%%'"
        ).fetchone():
            assert time.monotonic() < deadline, "the follower never finished its first pass"
            time.sleep(0.1)
        emit_and_drain(conn, 3)
        create_anchor(conn)
        deadline = time.monotonic() + 30
        while anchor_rows(conn)[0]["status"] != "uploaded":
            assert time.monotonic() < deadline, "the notification did not lead to an upload"
            time.sleep(0.1)
    finally:
        follower.terminate()
        _, err = follower.communicate(timeout=30)
    assert follower.returncode == 0, err
    assert len(all_versions(endpoint_url, worm_bucket)) == 1


@contextmanager
def login_role(conn: psycopg.Connection, group: str) -> Iterator[str]:
    """A login role in the given group role, dropped afterwards (roles are cluster-wide)."""
    name = f"ac_login_{group}_{os.getpid()}"
    role = sql.Identifier(name)
    conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(role, sql.Identifier(group)))
    try:
        yield name
    finally:
        conn.execute(sql.SQL("DROP ROLE {}").format(role))


def test_uploader_needs_only_the_compliance_anchor_role(conn, dsn, endpoint_url, worm_bucket, capsys):
    emit_and_drain(conn, 2)
    create_anchor(conn)

    with login_role(conn, "compliance_anchor") as role:
        code, _, err = anchor_once(capsys, make_conninfo(dsn, user=role), endpoint_url, worm_bucket)

    assert code == 0, err
    assert anchor_rows(conn)[0]["status"] == "uploaded"


def test_a_role_without_the_anchor_grants_is_refused_cleanly(conn, dsn, endpoint_url, worm_bucket, capsys):
    emit_and_drain(conn, 1)
    create_anchor(conn)

    with login_role(conn, "compliance_auditor") as role:
        code, _, err = anchor_once(capsys, make_conninfo(dsn, user=role), endpoint_url, worm_bucket)

    assert code == EXIT_CONFIG
    assert "permission denied for function claim_next_anchor" in err
    assert len(err.splitlines()) == 1
    assert anchor_rows(conn)[0]["status"] == "pending"


def test_a_database_without_the_schema_is_a_configuration_error(empty_dsn, endpoint_url, worm_bucket, capsys):
    code, out, err = anchor_once(capsys, empty_dsn, endpoint_url, worm_bucket)

    assert (code, out) == (EXIT_CONFIG, "")
    (line,) = err.splitlines()
    assert "is not set up for this command" in line
    assert "compliance" in line


def test_an_unreachable_database_is_unavailable(endpoint_url, worm_bucket, capsys):
    code, _, err = anchor_once(
        capsys, f"host=127.0.0.1 port={free_port()} user=nobody", endpoint_url, worm_bucket
    )

    assert code == EXIT_UNAVAILABLE
    assert len(err.splitlines()) == 1


def test_a_missing_bucket_is_a_configuration_error(conn, dsn, endpoint_url, bucket_name, capsys):
    emit_and_drain(conn, 1)
    create_anchor(conn)

    code, _, err = anchor_once(capsys, dsn, endpoint_url, bucket_name)

    assert code == EXIT_CONFIG
    (line,) = err.splitlines()
    assert "NoSuchBucket" in line
    assert anchor_rows(conn)[0]["status"] == "pending"


def test_missing_credentials_are_a_configuration_error(
    conn, dsn, endpoint_url, worm_bucket, capsys, monkeypatch, tmp_path
):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    emit_and_drain(conn, 1)
    create_anchor(conn)

    code, _, err = anchor_once(capsys, dsn, endpoint_url, worm_bucket)

    assert code == EXIT_CONFIG
    (line,) = err.splitlines()
    assert "credentials" in line.lower()
    assert anchor_rows(conn)[0]["status"] == "pending"


class StallingEndpoint:
    """A loopback TCP proxy in front of a moto server that holds every request whose first
    line matches until released: an S3 endpoint that is slow in the middle of that request."""

    def __init__(self, upstream_url: str, request_line: str):
        self.upstream = ("127.0.0.1", int(upstream_url.rsplit(":", 1)[1]))
        self.pattern = re.compile(request_line.encode())
        self.stalled = threading.Event()
        self.released = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        """Cut every connection; a held request never reaches S3."""
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.upstream)
                self.sockets += [client, server]
                threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
                threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, requests: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                # botocore writes each request's head in one send, so a request starts a chunk.
                if requests and self.pattern.match(data):
                    self.stalled.set()
                    self.released.wait()
                target.sendall(data)


@pytest.fixture
def slow_put(endpoint_url: str) -> Iterator[StallingEndpoint]:
    endpoint = StallingEndpoint(endpoint_url, r"PUT /[^ ]*anchors/")
    yield endpoint
    endpoint.close()


def start_uploader(dsn: str, endpoint_url: str, bucket: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "python")}
    command = ["anchor", "--once", "--dsn", dsn, "--endpoint-url", endpoint_url, "--bucket", bucket, *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "auditchain.cli", *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_no_transaction_is_open_while_s3_is_slow_in_the_middle_of_a_put(
    conn, dsn, endpoint_url, worm_bucket, slow_put
):
    emit_and_drain(conn, 3)
    create_anchor(conn)
    uploader = start_uploader(dsn, slow_put.url, worm_bucket)
    try:
        assert slow_put.stalled.wait(30), "the uploader never started its PUT"
        sessions = conn.execute(
            "SELECT state, xact_start IS NULL, backend_xid IS NULL, backend_xmin IS NULL"
            " FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'auditchain anchor'"
        ).fetchall()
        (row,) = anchor_rows(conn)
        # A second uploader meanwhile finds nothing to take.
        assert conn.execute(
            "SELECT count(*) FROM compliance.claim_next_anchor('second uploader')"
        ).fetchone() == (0,)
    finally:
        slow_put.released.set()
        out, err = uploader.communicate(timeout=60)

    assert sessions == [("idle", True, True, True)], "no transaction or snapshot held across the PUT"
    assert row["status"] == "pending"
    assert row["claimed_by"].endswith(f":{uploader.pid}")
    assert row["lease_expires_at"] > datetime.now(UTC)
    assert uploader.returncode == EXIT_OK, err
    (row,) = anchor_rows(conn)
    assert (row["status"], row["attempts"], row["lease_expires_at"]) == ("uploaded", 1, None)
    assert len(all_versions(endpoint_url, worm_bucket)) == 1


def test_a_killed_uploaders_anchor_is_uploaded_by_the_next_one_after_the_lease(
    conn, dsn, endpoint_url, worm_bucket, slow_put, capsys
):
    emit_and_drain(conn, 2)
    create_anchor(conn)
    uploader = start_uploader(dsn, slow_put.url, worm_bucket, "--lease-seconds", "2")
    assert slow_put.stalled.wait(30), "the uploader never started its PUT"
    uploader.kill()
    uploader.communicate(timeout=30)
    slow_put.close()

    # Within the lease the anchor is still the dead uploader's, and the run says so.
    code, out, err = anchor_once(capsys, dsn, endpoint_url, worm_bucket)
    assert code == EXIT_OK, err
    assert out.startswith(
        "no pending anchor is free: 1 pending, all leased by other uploaders (the first lease "
    ), out
    (held,) = anchor_rows(conn)
    assert held["status"] == "pending"
    assert held["claimed_by"].endswith(f":{uploader.pid}")
    assert all_versions(endpoint_url, worm_bucket) == []

    deadline = time.monotonic() + 30
    while conn.execute("SELECT lease_expires_at > clock_timestamp() FROM compliance.anchors").fetchone()[0]:
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.2)
    code, out, err = anchor_once(capsys, dsn, endpoint_url, worm_bucket)

    assert code == EXIT_OK, err
    assert out.startswith("1 uploaded")
    (row,) = anchor_rows(conn)
    assert (row["status"], row["attempts"]) == ("uploaded", 1)
    assert row["lease_id"] != held["lease_id"]
    assert row["claimed_by"].endswith(f":{os.getpid()}")
    assert len(all_versions(endpoint_url, worm_bucket)) == 1


def test_an_uploader_that_lost_its_lease_writes_nothing(conn, dsn, endpoint_url, worm_bucket):
    emit_and_drain(conn, 2)
    create_anchor(conn)
    slow_head = StallingEndpoint(endpoint_url, r"HEAD /[^ ]*anchors/")
    try:
        uploader = start_uploader(dsn, slow_head.url, worm_bucket, "--lease-seconds", "1", "--json")
        assert slow_head.stalled.wait(30), "the uploader never looked at the key"
        time.sleep(1.2)
        # The lease ran out while S3 was slow: another uploader takes the anchor over.
        (taken,) = conn.execute(
            "SELECT anchor_id FROM compliance.claim_next_anchor('second uploader')"
        ).fetchall()
        slow_head.released.set()
        out, err = uploader.communicate(timeout=60)
    finally:
        slow_head.close()

    assert uploader.returncode == EXIT_UNAVAILABLE, err
    (report,) = json.loads(out)["anchors"]
    assert report["outcome"] == "lease_lost"
    assert all_versions(endpoint_url, worm_bucket) == [], "it stopped before writing"
    (row,) = anchor_rows(conn)
    assert (row["anchor_id"], row["status"], row["claimed_by"], row["attempts"]) == (
        taken[0],
        "pending",
        "second uploader",
        0,
    )
