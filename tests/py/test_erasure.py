"""Erasure of a data subject's personal data (docs/erasure.md), end to end: from a
multi-tenant log, a data controller erases one subject's events in one tenant; the chain,
the Merkle tree, the anchors and a fresh export still verify and report the erased events;
the values are gone from every table and their commitments confirm no guess; a bundle
exported before still verifies; every removal by another path is caught; and a kill in the
middle of erase leaves nothing or everything erased."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator

import boto3
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

from auditchain.cli import main
from auditchain.errors import EXIT_OK
from auditchain.formats import hashing
from auditchain.offline.bundle import verify_bundle

SUBJECT = "alice@example.com"
REASON = "data subject request DSR-2026-0042"
LEGAL_BASIS = "GDPR Art. 17(1)(a)"


def drain_all(conn: psycopg.Connection) -> None:
    while conn.execute("SELECT compliance.drain(10000)").fetchone()[0]:
        pass


def emit(
    conn: psycopg.Connection, tenant: str, actor: str, payload: dict, event_type: str = "user.login"
) -> None:
    conn.execute("SELECT compliance.emit(%s, %s, %s, %s)", (event_type, actor, Jsonb(payload), tenant))


def multi_tenant_log(conn: psycopg.Connection) -> None:
    """acme holds the subject's events (as actor and in payloads) among others; globex holds
    her address too, but the request concerns acme only."""
    for n in range(30):
        emit(conn, "acme", f"user-{n % 4}@acme.test", {"n": n, "email": f"user-{n % 4}@acme.test"})
        if n % 5 == 0:
            emit(conn, "acme", SUBJECT, {"n": n, "email": SUBJECT, "ip": "203.0.113.7"})
        emit(conn, "globex", "ops@globex.test", {"n": n, "note": "routine"})
        if n % 10 == 0:
            emit(conn, None, "system", {"n": n})
    emit(conn, "globex", "ops@globex.test", {"email": SUBJECT, "note": "another controller's record"})
    drain_all(conn)


@pytest.fixture
def eraser_dsn(dsn: str) -> Iterator[str]:
    """A login role that is only a member of compliance_eraser, as a data controller holds it."""
    role = f"ac_eraser_{os.getpid()}"
    drop_role = sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role))
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(drop_role)
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE compliance_eraser").format(sql.Identifier(role)))
    yield make_conninfo(dsn, user=role)
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        admin.execute(drop_role)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().out


def export_bundle(capsys, dsn: str, endpoint_url: str, bucket: str, export_filter: dict) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        job_id = conn.execute(
            "SELECT compliance.request_export(%s::jsonb, 'auditor@example.com')", (json.dumps(export_filter),)
        ).fetchone()[0]
        drain_all(conn)
    code, _ = cli(
        capsys,
        "export",
        "run",
        "--dsn",
        dsn,
        "--job",
        str(job_id),
        "--bucket",
        bucket,
        "--endpoint-url",
        endpoint_url,
    )
    assert code == EXIT_OK
    return f"s3://{bucket}/exports/{job_id}/"


def rows_mentioning(conn: psycopg.Connection, text: str) -> dict[str, int]:
    """How many rows of each table of schema compliance hold the text anywhere."""
    found = {}
    tables = conn.execute(
        "SELECT c.relname FROM pg_class AS c"
        " WHERE c.relnamespace = 'compliance'::regnamespace AND c.relkind = 'r'"
    ).fetchall()
    for (table,) in tables:
        query = sql.SQL("SELECT count(*) FROM compliance.{} AS t WHERE t::text LIKE %s").format(
            sql.Identifier(table)
        )
        count = conn.execute(query, (f"%{text}%",)).fetchone()[0]
        if count:
            found[table] = count
    return found


def test_a_subjects_events_are_erased_and_the_chain_tree_anchors_and_exports_still_verify(
    conn, dsn, eraser_dsn, moto_server, capsys, tmp_path
):
    endpoint = moto_server.url
    bucket = f"ac-erasure-{uuid.uuid4().hex[:12]}"
    assert main(["bucket", "create", "--bucket", bucket, "--endpoint-url", endpoint]) == EXIT_OK
    multi_tenant_log(conn)
    assert conn.execute("SELECT compliance.create_anchor()").fetchone()[0]
    assert (
        cli(capsys, "anchor", "--once", "--dsn", dsn, "--bucket", bucket, "--endpoint-url", endpoint)[0] == 0
    )
    before = export_bundle(capsys, dsn, endpoint, bucket, {"tenant_id": "acme"})
    before_report = verify_bundle(before, endpoint_url=endpoint)
    assert before_report.ok, before_report.failures
    originals = {
        seq: (payload, actor, bytes(payload_salt), bytes(actor_salt))
        for seq, payload, actor, payload_salt, actor_salt in conn.execute(
            "SELECT seq, payload::text, actor, payload_salt, actor_salt FROM compliance.audit_events"
            " WHERE tenant_id = 'acme' AND payload ->> 'email' = %s",
            (SUBJECT,),
        )
    }
    assert len(originals) == 6

    # The data controller's request, with nothing but the compliance_eraser role.
    with psycopg.connect(eraser_dsn, autocommit=True) as eraser:
        seqs = [
            s
            for (s,) in eraser.execute(
                "SELECT compliance.find_subject_events('acme', %s)", (Jsonb({"email": SUBJECT}),)
            )
        ]
        assert sorted(seqs) == sorted(originals)
        erasure_seq = eraser.execute(
            "SELECT compliance.erase(%s, '{payload,actor}', %s, %s)", (seqs, REASON, LEGAL_BASIS)
        ).fetchone()[0]
    erasure = conn.execute(
        "SELECT event_type, tenant_id, payload FROM compliance.audit_events WHERE seq = %s", (erasure_seq,)
    ).fetchone()
    assert erasure == (
        "compliance.erasure",
        "acme",
        {
            "seqs": sorted(seqs),
            "fields": ["actor", "payload"],
            "reason": REASON,
            "legal_basis": LEGAL_BASIS,
            "already_erased": [],
        },
    )

    # The chain, the tree and the anchors verify; the count of erased events is reported.
    assert conn.execute(
        "SELECT ok, first_bad_seq, problem, erased_events FROM compliance.verify_chain()"
    ).fetchone() == (True, None, None, 6)
    assert conn.execute("SELECT ok FROM compliance.verify_tree()").fetchone()[0] is True
    assert conn.execute("SELECT compliance.verify_new_events()").fetchone()[0] > 0
    assert conn.execute("SELECT last_ok FROM compliance.verification_state").fetchone()[0] is True
    assert conn.execute(
        "SELECT value, verdict FROM compliance.metrics() WHERE metric = 'erased_events'"
    ).fetchone() == (6, "ok")
    code, out = cli(capsys, "verify", "--json", "--dsn", dsn, "--bucket", bucket, "--endpoint-url", endpoint)
    assert code == EXIT_OK, out
    report = json.loads(out)
    assert report["ok"] and report["chain"]["erased_events"] == 6

    # A fresh export verifies, by the commitments, and says what was erased by which event.
    after = export_bundle(capsys, dsn, endpoint, bucket, {"tenant_id": "acme"})
    after_report = verify_bundle(after, endpoint_url=endpoint)
    assert after_report.ok, after_report.failures
    assert after_report.summary()["erased"] == 6
    assert after_report.erasure_seqs == {erasure_seq}
    code, out = cli(capsys, "verify-bundle", after, "--endpoint-url", endpoint)
    assert code == EXIT_OK
    assert f"erased by the erasure events at seq {erasure_seq}" in out
    s3 = boto3.client("s3", endpoint_url=endpoint)
    after_data = s3.get_object(Bucket=bucket, Key=after.split("/", 3)[3] + "events.ndjson.gz")["Body"].read()
    assert SUBJECT.encode() not in gzip.decompress(after_data)

    # In that bundle, an erased event's altered commitment, or a commitment passed off as a
    # withheld payload, is caught.
    manifest = json.loads(
        s3.get_object(Bucket=bucket, Key=after.split("/", 3)[3] + "manifest.json")["Body"].read()
    )
    lines = gzip.decompress(after_data).decode().splitlines()
    erased_line = next(n for n, line in enumerate(lines) if '"payload_erased_by"' in line)
    seq = json.loads(lines[erased_line])["seq"]

    def tampered(change) -> list[tuple[str, int | None]]:
        event = json.loads(lines[erased_line])
        change(event)
        edited = lines[:erased_line] + [json.dumps(event, separators=(",", ":"))] + lines[erased_line + 1 :]
        data = gzip.compress(("\n".join(edited) + "\n").encode())
        folder = tmp_path / uuid.uuid4().hex
        folder.mkdir()
        (folder / "events.ndjson.gz").write_bytes(data)
        sealed = manifest | {"data_sha256": hashlib.sha256(data).hexdigest(), "data_bytes": len(data)}
        (folder / "manifest.json").write_text(json.dumps(sealed))
        return [(f.check, f.seq) for f in verify_bundle(str(folder), anchors="skip").failures]

    def alter_commitment(event: dict) -> None:
        event["payload_commitment"] = "0" * 64

    assert tampered(lambda event: None) == []
    assert tampered(alter_commitment) == [("content", seq)]
    assert tampered(lambda event: event.pop("payload_erased_by")) == [("line", seq)]

    # The bundle exported before still verifies, and still holds what it held.
    again = verify_bundle(before, endpoint_url=endpoint)
    assert again.ok and again.summary()["erased"] == 0
    before_data = s3.get_object(Bucket=bucket, Key=before.split("/", 3)[3] + "events.ndjson.gz")[
        "Body"
    ].read()
    assert SUBJECT.encode() in gzip.decompress(before_data)

    # Gone from every table: only globex's record (another controller's) still names her.
    assert rows_mentioning(conn, SUBJECT) == {"audit_events": 1}
    assert conn.execute(
        "SELECT tenant_id FROM compliance.audit_events WHERE payload::text LIKE %s", (f"%{SUBJECT}%",)
    ).fetchall() == [("globex",)]
    assert conn.execute("SELECT count(*) FROM compliance.audit_outbox").fetchone()[0] == 0

    # The commitments left confirm no guess: not the right value hashed alone, as v1 would
    # have it, nor under any salt but the erased one.
    for seq, (payload, actor, payload_salt, actor_salt) in originals.items():
        payload_commitment, actor_commitment = (
            bytes(c)
            for c in conn.execute(
                "SELECT payload_commitment, actor_commitment FROM compliance.audit_events WHERE seq = %s",
                (seq,),
            ).fetchone()
        )
        assert payload_commitment == hashing.commitment(payload_salt, payload), "kept as it was committed"
        guesses = {hashlib.sha256(value.encode()).digest() for value in (payload, actor, SUBJECT)}
        guesses |= {hashing.commitment(bytes(32), value) for value in (payload, actor, SUBJECT)}
        guesses |= {hashing.commitment(os.urandom(32), actor)}
        assert payload_commitment not in guesses and actor_commitment not in guesses
        assert actor_commitment == hashing.commitment(actor_salt, actor)


def test_every_removal_but_erase_is_refused_or_caught(conn):
    multi_tenant_log(conn)
    seq = conn.execute(
        "SELECT min(seq) FROM compliance.audit_events WHERE actor = %s", (SUBJECT,)
    ).fetchone()[0]
    erasure_seq = conn.execute(
        "SELECT compliance.erase(%s, '{payload}', %s, %s)", ([seq], REASON, LEGAL_BASIS)
    ).fetchone()[0]
    other = conn.execute(
        "SELECT max(seq) FROM compliance.audit_events WHERE tenant_id = 'globex'"
    ).fetchone()[0]
    # Constant statements; the seqs are bound parameters.
    params = {"seq": seq, "other": other, "erasure": erasure_seq}

    def refused(*statements: str) -> str:
        with pytest.raises(psycopg.Error) as caught, conn.transaction():
            for statement in statements:
                conn.execute(statement, params)
        return caught.value.sqlstate

    # With the triggers on, as a superuser: every shape of removal is refused.
    assert refused("UPDATE compliance.audit_events SET payload = NULL WHERE seq = %(other)s") == "AC020"
    assert refused("UPDATE compliance.audit_events SET payload = '{}' WHERE seq = %(other)s") == "AC020"
    assert refused("DELETE FROM compliance.audit_events WHERE seq = %(other)s") == "AC020"
    assert refused("TRUNCATE compliance.audit_events") == "AC020"
    # The guard's flag set by hand lets no other column, nor a forged commitment, through.
    flag = "SELECT set_config('auditchain.erasure_seq', %(erasure)s::text, true)"
    assert (
        refused(flag, "UPDATE compliance.audit_events SET tenant_id = 'x' WHERE seq = %(other)s") == "AC020"
    )
    forged = (
        "UPDATE compliance.audit_events SET payload = NULL, payload_salt = NULL,"
        " payload_erased_by = %(erasure)s, payload_commitment = sha256('x') WHERE seq = %(other)s"
    )
    assert refused(flag, forged) == "AC020"
    recommitted = "UPDATE compliance.audit_events SET payload_commitment = sha256('x') WHERE seq = %(seq)s"
    assert refused(flag, recommitted) == "AC020", "an erased event's commitment cannot be changed either"
    # Replica mode silences ordinary triggers, not these.
    replica = "SET LOCAL session_replication_role = replica"
    assert (
        refused(replica, "UPDATE compliance.audit_events SET payload = NULL WHERE seq = %(other)s") == "AC020"
    )
    assert conn.execute("SELECT ok FROM compliance.verify_chain()").fetchone()[0] is True

    def found_after(*statements: str) -> tuple:
        """verify_chain's finding after statements run with the guard switched off, then rolled back."""
        with conn.transaction(force_rollback=True):
            conn.execute("ALTER TABLE compliance.audit_events DISABLE TRIGGER forbid_row_change")
            for statement in statements:
                conn.execute(statement, params)
            return conn.execute("SELECT ok, first_bad_seq, problem FROM compliance.verify_chain()").fetchone()

    # A superuser who switches the guard (and the CHECKs) off is caught by verification.
    assert found_after(
        "ALTER TABLE compliance.audit_events DROP CONSTRAINT audit_events_v2_payload_state",
        "UPDATE compliance.audit_events SET payload = NULL, payload_salt = NULL WHERE seq = %(other)s",
    ) == (False, other, "value removed: a payload or actor is missing without a recorded erasure")
    assert found_after(recommitted) == (
        False,
        seq,
        "content changed: the event no longer matches its event_hash",
    )
    assert found_after(
        "UPDATE compliance.audit_events SET payload = NULL, payload_salt = NULL,"
        " payload_erased_by = %(erasure)s,"
        " payload_commitment = compliance.commitment(payload_salt, payload::text) WHERE seq = %(other)s",
    ) == (
        False,
        other,
        "erasure not recorded: the compliance.erasure event the row names does not list this seq and field",
    )
    assert conn.execute("SELECT ok, erased_events FROM compliance.verify_chain()").fetchone() == (True, 1)


def test_a_kill_in_the_middle_of_erase_leaves_nothing_or_everything(conn, dsn):
    conn.execute(
        "SELECT compliance.emit('user.login', 'subject-' || g,"
        " jsonb_build_object('email', 'subject@example.com'), 'acme') FROM generate_series(1, 10000) AS g"
    )
    drain_all(conn)
    seqs = [
        s
        for (s,) in conn.execute(
            "SELECT compliance.find_subject_events('acme', '{\"email\": \"subject@example.com\"}')"
        )
    ]
    app = f"ac-erase-{os.getpid()}"

    def erase_then(pause: float) -> None:
        with contextlib.suppress(psycopg.Error), psycopg.connect(dsn, application_name=app) as victim:
            victim.execute(
                "SELECT compliance.erase(%s, '{payload,actor}', %s, %s)", (seqs, REASON, LEGAL_BASIS)
            )
            victim.execute("SELECT pg_sleep(%s)", (pause,))
            victim.commit()

    def state() -> tuple[int, int, bool]:
        return conn.execute(
            "SELECT (SELECT count(*) FROM compliance.audit_events WHERE payload_erased_by IS NOT NULL),"
            "       (SELECT count(*) FROM compliance.audit_events WHERE event_type = 'compliance.erasure'),"
            "       (SELECT ok FROM compliance.verify_chain())"
        ).fetchone()

    # Killed inside erase itself (its transaction has written), then after erase, before the commit.
    for inside_erase in (True, False):
        worker = threading.Thread(target=erase_then, args=(30,))
        worker.start()
        deadline = time.monotonic() + 60
        pid = None
        while pid is None and time.monotonic() < deadline:
            pid = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND backend_xid IS NOT NULL"
                " AND query LIKE %s",
                (app, "%compliance.erase%" if inside_erase else "%pg_sleep%"),
            ).fetchone()
            time.sleep(0.001)
        assert pid, "erase never started writing"
        assert conn.execute("SELECT pg_terminate_backend(%s)", pid).fetchone()[0]
        worker.join(timeout=60)
        assert state() == (0, 0, True), "a killed erase leaves nothing erased and the chain verifying"

    erase_then(0)
    assert state() == (10000, 1, True), "a completed erase leaves everything erased and the chain verifying"
