"""`auditchain verify`: check the chain in the database against the anchors in the WORM bucket.

Read-only. Runs compliance.verify_chain() and then, trusting the bucket rather than the
database, checks every anchor object version under <prefix>anchors/:
  - its bytes parse as an anchor document consistent with its key and its cadence_id;
  - the database's event at seq_to still has the anchored head_hash (a chain rewritten
    with recomputed hashes fails here) and exists at all (a cut-off tail fails here);
  - consecutive anchors link through prev_anchor_digest;
  - it has exactly one anchor row with the same bytes, key and version id, and every
    uploaded row has its object; its Object Lock mode equals the row's and its
    retain-until is not earlier.
For a format_version 2 anchor, also its signed checkpoint object under
<prefix>checkpoints/: its note text is exactly the document's checkpoint, its root is the
database's tree_root(seq_to) (a history rewritten with a recomputed tree fails here), it
is locked, the row records its bytes and version, and with --vkey its signature verifies
with a trusted key; and the consistency proof in each version 2 document verifies from
the previous anchor's checkpoint. Without --vkey signatures are reported as not checked
(a warning; a failure with --require-signatures).
Exit 0 when everything matches, 1 on any mismatch, 69 when the database or S3 is
unreachable, 64 for an unreadable --vkey.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from . import db, s3
from .anchor import KEY_PATTERN, add_prefix_option, checkpoint_key, normalize_prefix
from .bucket import read_lock_status
from .cliutil import add_command, add_json_flag, is_terminal, print_json
from .config import add_bucket_option, add_endpoint_options, require_bucket
from .errors import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, AuditchainError, first_line
from .formats import anchor_document, checkpoint, note
from .offline.vkeys import read_verifiers

MAX_CHECKPOINT_BYTES = 64 * 1024

ANCHORS_QUERY = (
    "SELECT anchor_id, cadence_id, seq_from, seq_to, head_hash, prev_anchor_digest, document_digest,"
    " status::text, bucket, object_key, version_id, lock_mode, retain_until, last_error,"
    " signed_checkpoint, checkpoint_key, checkpoint_version_id"
    " FROM compliance.anchors ORDER BY seq_to"
)


@dataclass(frozen=True)
class AnchorRow:
    anchor_id: int
    cadence_id: str
    seq_from: int
    seq_to: int
    head_hash: bytes
    prev_anchor_digest: bytes | None
    document_digest: bytes
    status: str
    bucket: str | None
    object_key: str | None
    version_id: str | None
    lock_mode: str | None
    retain_until: datetime | None
    last_error: str | None
    signed_checkpoint: str | None
    checkpoint_key: str | None
    checkpoint_version_id: str | None


@dataclass
class AnchorObject:
    """One object version under anchors/ as the bucket holds it."""

    key: str
    version_id: str
    digest: bytes = b""
    document: dict | None = None
    unreadable: str | None = None  # why the bytes are not an anchor document
    lock_mode: str | None = None
    retain_until: datetime | None = None


@dataclass(frozen=True)
class Snapshot:
    """What the database says, read in one REPEATABLE READ, READ ONLY transaction."""

    chain: dict
    chain_head: int
    system_identifier: str
    database_name: str
    rows: list[AnchorRow]
    event_hashes: dict[int, bytes]
    tree_roots: dict[int, bytes | str]


@dataclass
class Report:
    bucket: str
    prefix: str
    problems: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    def problem(self, check: str, subject: str, message: str) -> None:
        self.problems.append({"check": check, "subject": subject, "message": message})


def list_versions(
    client, bucket: str, prefix: str, folder: str = "anchors/"
) -> tuple[list[AnchorObject], list[dict]]:
    versions, delete_markers = [], []
    pages = client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=f"{prefix}{folder}")
    for page in pages:
        versions += [AnchorObject(v["Key"], v["VersionId"]) for v in page.get("Versions", [])]
        delete_markers += page.get("DeleteMarkers", [])
    return versions, delete_markers


def read_snapshot(dsn: str, seqs_of_objects: set[int]) -> Snapshot:
    """What verify compares with the bucket. A database that is not set up is a configuration
    problem and one that cannot be read is unavailable: neither is evidence of tampering."""
    try:
        with db.setup_errors(dsn):
            return _read_snapshot(dsn, seqs_of_objects)
    except psycopg.Error as exc:
        raise AuditchainError(f"reading the database failed: {first_line(exc)}", EXIT_UNAVAILABLE) from None


def _read_snapshot(dsn: str, seqs_of_objects: set[int]) -> Snapshot:
    with db.connect(dsn, app="auditchain verify") as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            ok, checked, first_bad, problem, erased = conn.execute(
                "SELECT ok, events_checked, first_bad_seq, problem, erased_events"
                "  FROM compliance.verify_chain()"
            ).fetchone()
            (chain_head,) = conn.execute(
                "SELECT coalesce(max(seq), 0) FROM compliance.audit_events"
            ).fetchone()
            system_identifier, database_name = conn.execute(
                "SELECT system_identifier::text, current_database() FROM pg_control_system()"
            ).fetchone()
            rows = [AnchorRow(*r) for r in conn.execute(ANCHORS_QUERY)]
            seqs = sorted(seqs_of_objects | {r.seq_to for r in rows})
            event_hashes = dict(
                conn.execute(
                    "SELECT seq, event_hash FROM compliance.audit_events WHERE seq = ANY(%s)", (seqs,)
                ).fetchall()
            )
            tree_roots = _tree_roots(conn, seqs)
    chain = {
        "ok": ok,
        "events_checked": checked,
        "first_bad_seq": first_bad,
        "problem": problem,
        "erased_events": erased,
    }
    return Snapshot(chain, chain_head, system_identifier, database_name, rows, event_hashes, tree_roots)


def _tree_roots(conn: psycopg.Connection, seqs: list[int]) -> dict[int, bytes | str]:
    """The roots the database's tree gives today at these sizes, to hold against the signed
    checkpoints; for a size it cannot compute (a tampered tree or cut events), why not."""
    query = (
        "SELECT s, compliance.tree_root(s) FROM unnest(%s::bigint[]) AS s"
        " WHERE s <= (SELECT tree_size FROM compliance.drainer_state)"
    )
    try:
        with conn.transaction():
            return dict(conn.execute(query, (seqs,)).fetchall())
    except psycopg.errors.DatabaseError:
        pass
    roots: dict[int, bytes | str] = {}
    for seq in seqs:
        try:
            with conn.transaction():
                roots.update(conn.execute(query, ([seq],)).fetchall())
        except psycopg.errors.DatabaseError as exc:
            roots[seq] = first_line(exc)
    return roots


def fetch(client, bucket: str, obj: AnchorObject) -> None:
    response = client.get_object(Bucket=bucket, Key=obj.key, VersionId=obj.version_id)
    body = response["Body"].read()
    obj.digest = hashlib.sha256(body).digest()
    obj.lock_mode = response.get("ObjectLockMode")
    obj.retain_until = response.get("ObjectLockRetainUntilDate")
    try:
        obj.document = anchor_document.parse(body)
    except ValueError as exc:
        obj.document, obj.unreadable = None, str(exc)


def check_document(report: Report, snap: Snapshot, obj: AnchorObject, seq_to: int, cadence: str) -> bool:
    """The object's own content: well-formed, consistent with its key, anchored to this database."""
    doc = obj.document
    if doc is None:
        report.problem("document", obj.key, obj.unreadable or "not an anchor document")
        return False
    if doc["seq_to"] != seq_to or doc["cadence_id"] != cadence:
        report.problem("document", obj.key, "its seq_to or cadence_id disagrees with its key")
        return False
    database = doc["database"]
    if (database["system_identifier"], database["database_name"]) != (
        snap.system_identifier,
        snap.database_name,
    ):
        report.problem(
            "identity",
            obj.key,
            f"anchors database {database['database_name']} (system {database['system_identifier']}), "
            f"not this one: {snap.database_name} (system {snap.system_identifier})",
        )
        return False
    return True


def check_head(report: Report, snap: Snapshot, obj: AnchorObject, seq_to: int) -> None:
    anchored = obj.document["head_hash"]
    stored = snap.event_hashes.get(seq_to)
    if seq_to > snap.chain_head:
        report.problem(
            "head",
            obj.key,
            f"the anchor covers up to seq {seq_to} but the chain ends at seq {snap.chain_head}: "
            "the tail was cut",
        )
    elif stored is None:
        report.problem("head", obj.key, f"the anchored event seq {seq_to} is missing from the database")
    elif stored.hex() != anchored:
        report.problem(
            "head",
            obj.key,
            f"seq {seq_to} has event_hash {stored.hex()} in the database but {anchored} in the anchor: "
            "the chain was rewritten",
        )


def check_row(report: Report, bucket: str, obj: AnchorObject, row: AnchorRow | None) -> None:
    """The object and the row that claims it agree on bytes, place and lock."""
    where = f"{obj.key} version {obj.version_id}"
    if row is None:
        report.problem("row", where, "the object has no anchor row in the database")
        return
    if row.document_digest != obj.digest:
        report.problem(
            "row", where, f"the bytes differ from anchor {row.anchor_id}'s document in the database"
        )
        return
    if row.status == "pending":
        report.notes.append(
            f"{obj.key} is in the bucket; anchor {row.anchor_id} is not yet recorded as uploaded"
        )
        return
    if (row.status, row.bucket, row.object_key, row.version_id) != (
        "uploaded",
        bucket,
        obj.key,
        obj.version_id,
    ):
        report.problem(
            "row",
            where,
            f"anchor {row.anchor_id} records status {row.status}, s3://{row.bucket}/{row.object_key} "
            f"version {row.version_id}",
        )
        return
    if obj.lock_mode != row.lock_mode or obj.retain_until is None:
        report.problem(
            "lock", where, f"Object Lock {obj.lock_mode or 'none'}, the row records {row.lock_mode}"
        )
    elif obj.retain_until < row.retain_until:
        report.problem(
            "lock",
            where,
            f"retain-until {obj.retain_until.isoformat()} is earlier than the recorded "
            f"{row.retain_until.isoformat()}: retention was shortened",
        )


def check_links(report: Report, anchored: list[tuple[int, AnchorObject]]) -> None:
    """Consecutive objects chain through prev_anchor_digest and never overlap (bucket only)."""
    previous: AnchorObject | None = None
    for _, obj in sorted(anchored, key=lambda pair: pair[0]):
        doc = obj.document
        if previous is None:
            if doc["seq_from"] == 1 and doc.get("prev_anchor_digest") is not None:
                report.problem("link", obj.key, "the first anchor names a previous anchor")
        elif doc["seq_from"] <= previous.document["seq_to"]:
            report.problem("link", obj.key, f"its range overlaps {previous.key}")
        elif (
            doc["seq_from"] == previous.document["seq_to"] + 1
            and doc.get("prev_anchor_digest") != previous.digest.hex()
        ):
            report.problem("link", obj.key, f"prev_anchor_digest is not the digest of {previous.key}")
        previous = obj


@dataclass
class CheckpointCheck:
    """What verify knows about the signed checkpoints: the trusted keys (none without --vkey), the
    checkpoint object versions in the bucket by key, and which keys belong to an anchor object."""

    verifiers: list[note.Verifier]
    versions: dict[str, list[AnchorObject]]
    claimed: set[str] = field(default_factory=set)
    unsigned: int = 0  # signatures not checked for lack of --vkey
    verified: int = 0


def fetch_checkpoint(client, bucket: str, obj: AnchorObject) -> bytes:
    response = client.get_object(Bucket=bucket, Key=obj.key, VersionId=obj.version_id)
    with response["Body"] as body:
        data = body.read(MAX_CHECKPOINT_BYTES + 1)
    obj.digest = hashlib.sha256(data).digest()
    obj.lock_mode = response.get("ObjectLockMode")
    obj.retain_until = response.get("ObjectLockRetainUntilDate")
    return data


def check_checkpoint(
    report: Report,
    client,
    snap: Snapshot,
    checks: CheckpointCheck,
    obj: AnchorObject,
    row: AnchorRow | None,
) -> None:
    """The signed checkpoint beside a format_version 2 anchor object (docs/proofs.md)."""
    doc = obj.document
    seq_to = doc["seq_to"]
    key = checkpoint_key(report.prefix, seq_to, doc["cadence_id"])
    checks.claimed.add(key)
    versions = checks.versions.get(key, [])
    if not versions:
        if row is not None and row.status == "pending":
            report.notes.append(f"{key} is not in the bucket yet; anchor {row.anchor_id} is pending")
        else:
            report.problem("checkpoint", obj.key, f"its signed checkpoint {key} is not in the bucket")
        return
    body = doc["checkpoint"].encode("utf-8")
    stored: dict[str, bytes] = {}
    for version in versions:
        where = f"{key} version {version.version_id}"
        data = stored[version.version_id] = fetch_checkpoint(client, report.bucket, version)
        if len(data) > MAX_CHECKPOINT_BYTES or not data.startswith(body + b"\n"):
            report.problem("checkpoint", where, f"its note text is not the checkpoint of {obj.key}")
            continue
        tree_root = snap.tree_roots.get(seq_to)
        if isinstance(tree_root, str):
            report.problem(
                "checkpoint", where, f"the database cannot compute tree_root({seq_to}): {tree_root}"
            )
        elif tree_root is not None and checkpoint.parse(body).root != tree_root:
            report.problem(
                "checkpoint",
                where,
                f"the signed root at tree size {seq_to} differs from the database's tree_root({seq_to}): "
                "the log was rewritten after it was signed",
            )
        if checks.verifiers:
            try:
                note.open_note(data, checks.verifiers)
            except note.NoteError as exc:
                report.problem("signature", where, f"not signed by a trusted key: {exc}")
            else:
                checks.verified += 1
        else:
            checks.unsigned += 1
        if version.lock_mode is None or version.retain_until is None:
            report.problem("lock", where, "the signed checkpoint has no Object Lock retention")
    if row is not None and row.status == "uploaded":
        recorded = stored.get(row.checkpoint_version_id or "")
        if row.checkpoint_key != key or recorded is None:
            report.problem(
                "row",
                key,
                f"anchor {row.anchor_id} records its checkpoint as {row.checkpoint_key} version "
                f"{row.checkpoint_version_id}, which the bucket does not hold",
            )
        elif (row.signed_checkpoint or "").encode("utf-8") != recorded:
            report.problem("row", key, f"anchor {row.anchor_id}'s signed_checkpoint differs from the object")


def check_consistency(report: Report, anchored: list[tuple[int, AnchorObject]]) -> None:
    """Each version 2 document's consistency proof verifies from the checkpoint of the anchor right
    before it (a version 1 anchor before it has no checkpoint: nothing to check from)."""
    previous: AnchorObject | None = None
    for _, obj in sorted(anchored, key=lambda pair: pair[0]):
        doc = obj.document
        if (
            previous is not None
            and doc["format_version"] >= 2
            and previous.document["format_version"] >= 2
            and doc["seq_from"] == previous.document["seq_to"] + 1
        ):
            prev_cp = anchor_document.checkpoint_of(previous.document)
            if problem := anchor_document.consistency_problem(prev_cp, doc):
                report.problem("consistency", obj.key, problem)
        previous = obj


def check_rows(report: Report, client, snap: Snapshot, listed: set[tuple[str, str]]) -> None:
    """The database's anchor chain is continuous, and every uploaded row has its object."""
    checked = f"s3://{report.bucket}/{report.prefix}anchors/"
    previous: AnchorRow | None = None
    for row in snap.rows:
        subject = f"anchor {row.anchor_id} (seq {row.seq_from}..{row.seq_to})"
        expected_from = previous.seq_to + 1 if previous else 1
        expected_prev = previous.document_digest if previous else None
        if (row.seq_from, row.prev_anchor_digest) != (expected_from, expected_prev):
            report.problem("link", subject, "does not continue the previous anchor row")
        recorded = f"s3://{row.bucket}/{row.object_key}"
        if row.status == "failed":
            report.problem("alarm", subject, f"integrity alarm recorded by the uploader: {row.last_error}")
        elif row.status == "pending":
            error = f"; last error: {row.last_error}" if row.last_error else ""
            report.notes.append(f"{subject} is pending upload{error}")
        elif not recorded.startswith(checked):
            report.problem(
                "object", subject, f"recorded as {recorded}, outside {checked} (--bucket, --prefix?)"
            )
        elif (row.object_key, row.version_id) not in listed and not _exists(client, report.bucket, row):
            report.problem(
                "object",
                subject,
                f"recorded as {recorded} version {row.version_id}, which the bucket does not hold",
            )
        previous = row


def _exists(client, bucket: str, row: AnchorRow) -> bool:
    """An object uploaded after the listing (the row committed before our snapshot)."""
    try:
        client.head_object(Bucket=bucket, Key=row.object_key, VersionId=row.version_id)
        return True
    except s3.S3_ERRORS as exc:
        if s3.is_not_found(exc):
            return False
        raise


def verify(
    dsn: str,
    client,
    bucket: str,
    prefix: str,
    verifiers: list[note.Verifier] | None = None,
    require_signatures: bool = False,
) -> Report:
    report = Report(bucket, prefix)
    try:
        if not read_lock_status(client, bucket).worm_capable:
            report.problem("bucket", bucket, "Object Lock or versioning is not enabled")
        # List before reading the database: a row uploaded in our snapshot then has its object listed.
        objects, delete_markers = list_versions(client, bucket, prefix)
        checkpoint_objects, checkpoint_markers = list_versions(client, bucket, prefix, "checkpoints/")
    except s3.S3_ERRORS as exc:
        raise s3.unavailable(f"cannot list s3://{bucket}/{prefix}anchors/", exc) from None
    parsed = {(o.key, o.version_id): KEY_PATTERN.fullmatch(o.key[len(prefix) :]) for o in objects}
    snap = read_snapshot(dsn, {int(m["seq_to"]) for m in parsed.values() if m})
    if not snap.chain["ok"]:
        report.problem("chain", f"seq {snap.chain['first_bad_seq']}", snap.chain["problem"])
    for marker in delete_markers + checkpoint_markers:
        report.problem(
            "object", f"{marker['Key']} version {marker['VersionId']}", "a delete marker hides an anchor"
        )
    checks = CheckpointCheck(verifiers or [], {})
    for obj in checkpoint_objects:
        checks.versions.setdefault(obj.key, []).append(obj)

    rows_by_cadence = {r.cadence_id: r for r in snap.rows}
    anchored: list[tuple[int, AnchorObject]] = []
    progress = is_terminal() and len(objects) > 100
    try:
        for number, obj in enumerate(objects, 1):
            if progress and number % 100 == 0:
                print(f"\rchecked {number}/{len(objects)} anchor objects", end="", file=sys.stderr)
            match = parsed[(obj.key, obj.version_id)]
            if not match:
                report.problem("object", obj.key, "unexpected object under anchors/")
                continue
            fetch(client, bucket, obj)
            seq_to, cadence = int(match["seq_to"]), match["cadence_id"]
            if not check_document(report, snap, obj, seq_to, cadence):
                continue
            check_head(report, snap, obj, seq_to)
            check_row(report, bucket, obj, rows_by_cadence.get(cadence))
            if obj.document["format_version"] >= 2:
                check_checkpoint(report, client, snap, checks, obj, rows_by_cadence.get(cadence))
            anchored.append((seq_to, obj))
        check_links(report, anchored)
        check_consistency(report, anchored)
        check_rows(report, client, snap, {(o.key, o.version_id) for o in objects})
        # A checkpoint written before its document hit an integrity alarm belongs to that row.
        checks.claimed |= {checkpoint_key(prefix, r.seq_to, r.cadence_id) for r in snap.rows}
        for key in sorted(set(checks.versions) - checks.claimed):
            report.problem("object", key, "a checkpoint object without its anchor object under anchors/")
    except s3.S3_ERRORS as exc:
        raise s3.unavailable(f"cannot read anchors from s3://{bucket}", exc) from None
    finally:
        if progress:
            print(file=sys.stderr)

    if checks.unsigned:
        message = f"{checks.unsigned} signed checkpoints not checked against a verifier key (pass --vkey)"
        if require_signatures:
            report.problem("signature", bucket, message + " and --require-signatures is set")
        else:
            report.warnings.append(message)
    uploaded = [r for r in snap.rows if r.status == "uploaded"]
    report.summary = {
        "signatures": {"verified": checks.verified, "not_checked": checks.unsigned},
        "chain": snap.chain,
        "chain_head": snap.chain_head,
        "objects": len(objects),
        "anchors": {s: sum(1 for r in snap.rows if r.status == s) for s in ("uploaded", "pending", "failed")},
        "latest_anchored_seq": max((r.seq_to for r in uploaded), default=None),
    }
    return report


def _print_text(report: Report) -> None:
    s = report.summary
    chain = s["chain"]
    if chain["ok"]:
        erased = f", {chain['erased_events']} of them erased" if chain["erased_events"] else ""
        checked = chain["events_checked"]
        print(f"chain:   OK, {checked} events re-hashed and linked{erased} (compliance.verify_chain)")
    else:
        print(f"chain:   BROKEN at seq {chain['first_bad_seq']}: {chain['problem']}")
    print(
        f"bucket:  s3://{report.bucket}/{report.prefix}anchors/ holds {s['objects']} anchor object versions"
    )
    a = s["anchors"]
    print(
        f"anchors: {a['uploaded']} uploaded, {a['pending']} pending, {a['failed']} failed; "
        f"latest anchored seq {s['latest_anchored_seq'] or 'none'} of chain head {s['chain_head']}"
    )
    signatures = s["signatures"]
    if signatures["verified"] or signatures["not_checked"]:
        print(
            f"signed:  {signatures['verified']} checkpoint signatures verified, "
            f"{signatures['not_checked']} not checked"
        )
    for note_text in report.notes:
        print(f"note:    {note_text}")
    for warning in report.warnings:
        print(f"WARNING: {warning}")
    if report.problems:
        print(f"PROBLEMS ({len(report.problems)}):")
        for p in report.problems:
            print(f"  [{p['check']}] {p['subject']}: {p['message']}")
    print("verify: FAILED" if report.problems else "verify: OK")


def _run(args: argparse.Namespace) -> int:
    bucket = require_bucket(args)
    verifiers = read_verifiers(args.vkey) if args.vkey else []
    report = verify(
        args.dsn,
        s3.client_from_args(args),
        bucket,
        normalize_prefix(args.prefix),
        verifiers,
        args.require_signatures,
    )
    if args.json:
        print_json(
            {
                "ok": not report.problems,
                "bucket": bucket,
                "prefix": report.prefix,
                **report.summary,
                "problems": report.problems,
                "notes": report.notes,
                "warnings": report.warnings,
            }
        )
    else:
        _print_text(report)
    return EXIT_FAILED if report.problems else EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers,
        "verify",
        help="verify the chain and the anchors in the WORM bucket (read-only)",
        description=__doc__,
    )
    add_bucket_option(p)
    add_prefix_option(p)
    add_endpoint_options(p)
    p.add_argument(
        "--vkey",
        action="append",
        metavar="VKEY",
        help="a trusted checkpoint verifier key (name+id+key), or a file holding one per line; repeat "
        "to trust several (old and new key across a rotation)",
    )
    p.add_argument(
        "--require-signatures",
        action="store_true",
        help="fail when a signed checkpoint was not checked against a --vkey",
    )
    add_json_flag(p)
    p.set_defaults(func=_run)
