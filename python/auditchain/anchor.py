"""`auditchain anchor`: write pending anchors to the WORM bucket and record the result.

compliance.create_anchor() (pg_cron, every 15 minutes) records a pending anchor when the
chain head moves. This command leases one pending anchor at a time (a short transaction of
its own: compliance.claim_next_anchor) and, while no transaction is open (renewing the lease
before each S3 write), signs its checkpoint (format_version 2 documents) with --signing-key or
--kms-key-id and writes the signed note under
<prefix>checkpoints/<seq_to, 20 digits>-<cadence_id>.checkpoint, then the document under
<prefix>anchors/<seq_to, 20 digits>-<cadence_id>.json, each with Object Lock, a SHA-256
checksum and optionally SSE-KMS. It records the outcome in a second short transaction:

  uploaded          written now, or the identical bytes were already there (a re-run)
  pending + error   transient failure (endpoint, throttling, access or KMS denied): retried
  failed            different content already at the key: integrity alarm, never overwritten

An uploader that dies keeps its anchor only until the lease expires (--lease-seconds); the
next uploader then takes it over, and a result from the late one is refused.

--once exits 0 when every pending anchor was written, 1 on an integrity alarm, 69 when a
transient failure or a lost lease left anchors pending (so cron and systemd notice), 78 when
the database or the bucket is not set up, or a checkpoint must be signed and no signing key
was given (create one with `auditchain key generate`). --follow LISTENs on auditchain_anchor, also polls,
retries transient failures, and exits 1 on an integrity alarm.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import re
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

import psycopg
from psycopg import sql

from . import config, db, s3, signing
from .bucket import require_worm
from .cliutil import add_command, add_json_flag, print_json
from .config import add_bucket_option, add_endpoint_options, require_bucket
from .errors import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    AuditchainError,
    first_line,
)
from .formats import note

log = logging.getLogger("auditchain.anchor")

LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
KEY_PATTERN = re.compile(r"anchors/(?P<seq_to>\d{20})-(?P<cadence_id>[0-9a-f]{64})\.json")
NO_SIGNER_HINT = (
    "pass --signing-key FILE (create one with `auditchain key generate`) or --kms-key-id ID "
    "(AUDITCHAIN_SIGNING_KEY, AUDITCHAIN_SIGNING_KMS_KEY_ID)"
)
NOTIFY_CHANNEL = "auditchain_anchor"
LEASE_LOST = "AC043"  # compliance._leased_anchor: the lease expired or another uploader took over


def normalize_prefix(prefix: str | None) -> str:
    """'' or a prefix ending in '/', so that keys read <prefix>anchors/..."""
    prefix = (prefix or "").lstrip("/")
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def object_key(prefix: str, seq_to: int, cadence_id: str) -> str:
    return f"{prefix}anchors/{seq_to:020d}-{cadence_id}.json"


def checkpoint_key(prefix: str, seq_to: int, cadence_id: str) -> str:
    """Where the signed checkpoint of a format_version 2 anchor lies, beside its document."""
    return f"{prefix}checkpoints/{seq_to:020d}-{cadence_id}.checkpoint"


def add_prefix_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prefix",
        default=config.env("AUDITCHAIN_ANCHOR_PREFIX") or "",
        help="key prefix before anchors/ (default: AUDITCHAIN_ANCHOR_PREFIX, else none)",
    )


@dataclass(frozen=True)
class Settings:
    bucket: str
    prefix: str
    lock_mode: str
    retention_days: int
    sse_kms_key_id: str | None
    lease: timedelta
    worker: str
    signer: note.Signer | None = None


@dataclass(frozen=True)
class PendingAnchor:
    anchor_id: int
    cadence_id: str
    seq_from: int
    seq_to: int
    document: str
    document_digest: bytes
    attempts: int
    lease_id: UUID

    @property
    def checkpoint(self) -> bytes | None:
        """The checkpoint body to sign (format_version 2), None for a version 1 document."""
        body = json.loads(self.document).get("checkpoint")
        return body.encode("utf-8") if body is not None else None


class LeaseLost(Exception):
    """The uploader no longer holds the anchor: it stops before the next S3 write."""


@dataclass(frozen=True)
class Placement:
    """What the bucket holds for one anchor after this run touched it."""

    outcome: str  # uploaded | already_present | transient | conflict | lease_lost
    key: str
    version_id: str | None = None
    lock_mode: str | None = None
    retain_until: datetime | None = None
    error: str | None = None
    # format_version 2: the signed note and where it lies.
    signed_checkpoint: bytes | None = None
    checkpoint_key: str | None = None
    checkpoint_version_id: str | None = None


@dataclass
class Summary:
    anchors: list[dict] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for a in self.anchors if a["outcome"] == outcome)

    @property
    def exit_code(self) -> int:
        if self.count("conflict"):
            return EXIT_FAILED
        return EXIT_UNAVAILABLE if self.count("transient") or self.count("lease_lost") else EXIT_OK


def _claim(conn: psycopg.Connection, settings: Settings) -> PendingAnchor | None:
    row = conn.execute(
        "SELECT anchor_id, cadence_id, seq_from, seq_to, document, document_digest, attempts, lease_id"
        " FROM compliance.claim_next_anchor(%s, %s)",
        (settings.worker, settings.lease),
    ).fetchone()
    return PendingAnchor(*row) if row else None


def _record(
    conn: psycopg.Connection, anchor: PendingAnchor, placement: Placement, settings: Settings
) -> Placement:
    """Store the result under the anchor's lease; a lease lost meanwhile turns it into lease_lost."""
    if placement.outcome in ("uploaded", "already_present"):
        query = "SELECT compliance.record_anchor_upload(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        params = (
            anchor.anchor_id,
            settings.bucket,
            placement.key,
            placement.version_id,
            placement.lock_mode,
            placement.retain_until,
            anchor.lease_id,
            placement.signed_checkpoint.decode("utf-8") if placement.signed_checkpoint else None,
            placement.checkpoint_key,
            placement.checkpoint_version_id,
        )
    elif placement.outcome == "transient":
        query = "SELECT compliance.record_anchor_error(%s, %s, %s)"
        params = (anchor.anchor_id, placement.error, anchor.lease_id)
    elif placement.outcome == "conflict":
        query = "SELECT compliance.record_anchor_integrity_failure(%s, %s, %s, %s, %s, %s)"
        params = (
            anchor.anchor_id,
            settings.bucket,
            placement.key,
            placement.version_id,
            placement.error,
            anchor.lease_id,
        )
    else:
        return placement
    try:
        conn.execute(query, params)
    except psycopg.Error as exc:
        if exc.sqlstate != LEASE_LOST:
            raise
        return Placement("lease_lost", placement.key, error=first_line(exc))
    return placement


def _report(anchor: PendingAnchor, placement: Placement, settings: Settings) -> dict:
    where = f"s3://{settings.bucket}/{placement.key}"
    span = f"anchor {anchor.anchor_id} (seq {anchor.seq_from}..{anchor.seq_to})"
    if placement.outcome == "conflict":
        log.error("%s: %s", span, placement.error)
    elif placement.outcome == "transient":
        log.warning("%s: upload failed, left pending for the next run: %s", span, placement.error)
    elif placement.outcome == "lease_lost":
        log.warning("%s: left to another uploader: %s", span, placement.error)
    else:
        verb = "uploaded" if placement.outcome == "uploaded" else "already in the bucket, recorded"
        log.info(
            "%s %s to %s version %s, %s until %s",
            span,
            verb,
            where,
            placement.version_id,
            placement.lock_mode,
            placement.retain_until.isoformat() if placement.retain_until else None,
        )
    return {
        "anchor_id": anchor.anchor_id,
        "cadence_id": anchor.cadence_id,
        "seq_from": anchor.seq_from,
        "seq_to": anchor.seq_to,
        "outcome": placement.outcome,
        "key": placement.key,
        "version_id": placement.version_id,
        "lock_mode": placement.lock_mode,
        "retain_until": placement.retain_until.isoformat() if placement.retain_until else None,
        "checkpoint_key": placement.checkpoint_key,
        "checkpoint_version_id": placement.checkpoint_version_id,
        "error": placement.error,
    }


class Uploader:
    """Writes anchors to one bucket. The bucket's Object Lock is checked once per process,
    before the first write: at start when S3 answers, else before the first upload."""

    def __init__(self, client, settings: Settings):
        self.client = client
        self.settings = settings
        self.bucket_checked = False

    def check_bucket(self) -> None:
        """The bucket is WORM-capable and not stricter than what we would write (EXIT_USAGE if not)."""
        if self.bucket_checked:
            return
        settings = self.settings
        status = require_worm(self.client, settings.bucket)
        if status.default_mode == "COMPLIANCE" and settings.lock_mode != "COMPLIANCE":
            raise AuditchainError(
                f"bucket {settings.bucket} is in COMPLIANCE mode; run with --lock-mode COMPLIANCE "
                "(AUDITCHAIN_LOCK_MODE=COMPLIANCE)",
                EXIT_USAGE,
            )
        if status.default_mode == "COMPLIANCE" and settings.retention_days < (
            status.default_retention_days or 0
        ):
            raise AuditchainError(
                f"--retention-days {settings.retention_days} is lower than the COMPLIANCE default retention "
                f"of bucket {settings.bucket} ({status.default_retention_days} days)",
                EXIT_USAGE,
            )
        self.bucket_checked = True

    def check_bucket_if_reachable(self) -> None:
        try:
            self.check_bucket()
        except AuditchainError as exc:
            if exc.exit_code != EXIT_UNAVAILABLE:
                raise
            log.warning("%s; checking again before the first upload", exc)

    def _head(self, key: str) -> dict | None:
        try:
            return self.client.head_object(Bucket=self.settings.bucket, Key=key)
        except s3.S3_ERRORS as exc:
            if s3.is_not_found(exc):
                return None
            raise

    def _retain_until(self) -> datetime:
        return (datetime.now(UTC) + timedelta(days=self.settings.retention_days)).replace(microsecond=0)

    def _existing(self, key: str, body: bytes, head: dict, renew: Callable[[], bool]) -> Placement:
        """Compare the object already at the key with `body`: identical is a finished upload."""
        bucket, version_id = self.settings.bucket, head.get("VersionId")
        _renew(renew)
        stored = self.client.get_object(Bucket=bucket, Key=key, VersionId=version_id)["Body"].read()
        if stored != body:
            return Placement(
                "conflict",
                key,
                version_id=version_id,
                error=f"integrity alarm: s3://{bucket}/{key} (version {version_id}) holds different content "
                f"(sha256 {hashlib.sha256(stored).hexdigest()}, "
                f"expected {hashlib.sha256(body).hexdigest()}); "
                "it was not overwritten",
            )
        mode, retain_until = head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")
        if not mode or not retain_until:
            # Our bytes without a lock (written outside auditchain): lock this version now.
            mode, retain_until = self.settings.lock_mode, self._retain_until()
            self.client.put_object_retention(
                Bucket=bucket,
                Key=key,
                VersionId=version_id,
                Retention={"Mode": mode, "RetainUntilDate": retain_until},
            )
        return Placement("already_present", key, version_id, mode, retain_until)

    def _put(self, key: str, body: bytes, content_type: str, renew: Callable[[], bool]) -> Placement:
        settings = self.settings
        _renew(renew)
        retain_until = self._retain_until()
        params = {
            "Bucket": settings.bucket,
            "Key": key,
            "Body": body,
            "ContentType": content_type,
            "ChecksumAlgorithm": "SHA256",
            # S3 rejects the upload unless the bytes it stores hash to what we computed (for the
            # document: the database's digest).
            "ChecksumSHA256": base64.b64encode(hashlib.sha256(body).digest()).decode("ascii"),
            "ObjectLockMode": settings.lock_mode,
            "ObjectLockRetainUntilDate": retain_until,
            # Never a second version: a concurrent writer makes this fail instead.
            "IfNoneMatch": "*",
        }
        if settings.sse_kms_key_id:
            params.update(ServerSideEncryption="aws:kms", SSEKMSKeyId=settings.sse_kms_key_id)
        try:
            response = self.client.put_object(**params)
        except s3.S3_ERRORS as exc:
            head = (
                self._head(key)
                if s3.error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict")
                else None
            )
            if head is None:
                raise
            return self._existing(key, body, head, renew)
        return Placement("uploaded", key, response.get("VersionId"), settings.lock_mode, retain_until)

    def _place_object(self, key: str, body: bytes, content_type: str, renew: Callable[[], bool]) -> Placement:
        """Make the bucket hold exactly `body` at `key` (written once, locked), or say why not."""
        head = self._head(key)
        if head is None:
            return self._put(key, body, content_type, renew)
        return self._existing(key, body, head, renew)

    def _sign(self, anchor: PendingAnchor, body: bytes) -> bytes:
        if self.settings.signer is None:
            raise AuditchainError(
                f"anchor {anchor.anchor_id} (seq {anchor.seq_from}..{anchor.seq_to}) carries a checkpoint "
                f"that must be signed: {NO_SIGNER_HINT}",
                EXIT_CONFIG,
            )
        # Ed25519 is deterministic: a retry after a crash signs the same bytes again, so the
        # object already written is recognised as ours.
        return signing.sign_checkpoint(body, self.settings.signer)

    def place(self, anchor: PendingAnchor, renew: Callable[[], bool]) -> Placement:
        """Make the bucket hold exactly this anchor's signed checkpoint (format_version 2) and then
        its document, or say why not. S3 and the signer only, apart from `renew`, which must return
        True (the lease is still ours) before each write. The checkpoint goes first, so a document in
        the bucket always has its signed checkpoint beside it."""
        settings = self.settings
        key = object_key(settings.prefix, anchor.seq_to, anchor.cadence_id)
        try:
            self.check_bucket()
            body = anchor.checkpoint
            signed = cp_placement = None
            if body is not None:
                signed = self._sign(anchor, body)
                cp_key = checkpoint_key(settings.prefix, anchor.seq_to, anchor.cadence_id)
                cp_placement = self._place_object(cp_key, signed, "text/plain; charset=utf-8", renew)
                if cp_placement.outcome == "conflict":
                    # Recorded against the anchor; the alarm names the checkpoint object.
                    return Placement("conflict", key, error=cp_placement.error)
            placement = self._place_object(key, anchor.document.encode("utf-8"), "application/json", renew)
            if cp_placement is None or placement.outcome == "conflict":
                return placement
            return Placement(
                placement.outcome,
                key,
                placement.version_id,
                placement.lock_mode,
                placement.retain_until,
                signed_checkpoint=signed,
                checkpoint_key=cp_placement.key,
                checkpoint_version_id=cp_placement.version_id,
            )
        except LeaseLost:
            return Placement(
                "lease_lost", key, error="the lease expired or another uploader took the anchor over"
            )
        except s3.S3_ERRORS as exc:
            return Placement("transient", key, error=s3.describe_error(exc))
        except AuditchainError as exc:
            if exc.exit_code != EXIT_UNAVAILABLE:
                raise
            return Placement("transient", key, error=str(exc))

    def upload_pending(self, conn: psycopg.Connection) -> Summary:
        """Upload every pending anchor nobody else holds, one lease at a time; stop at the first
        transient failure or lost lease. `conn` is in autocommit mode: each claim, renewal and
        result is its own short transaction and none stays open while S3 is called."""
        settings = self.settings
        summary = Summary()

        while anchor := _claim(conn, settings):

            def renew(anchor: PendingAnchor = anchor) -> bool:
                return conn.execute(
                    "SELECT compliance.anchor_heartbeat(%s, %s, %s)",
                    (anchor.anchor_id, anchor.lease_id, settings.lease),
                ).fetchone()[0]

            try:
                placement = self.place(anchor, renew)
            except AuditchainError as exc:
                # A setup problem stops the run: release the anchor now rather than at lease expiry.
                _record(conn, anchor, Placement("transient", "", error=str(exc)), settings)
                raise
            placement = _record(conn, anchor, placement, settings)
            summary.anchors.append(_report(anchor, placement, settings))
            if placement.outcome in ("transient", "lease_lost"):
                break  # the store is unhealthy or slow; the rest waits for the next run untouched
        return summary


def _renew(renew: Callable[[], bool]) -> None:
    if not renew():
        raise LeaseLost()


class _Stop(Exception):
    pass


def _stop(signum, frame) -> None:
    raise _Stop()


def follow(dsn: str, uploader: Uploader, poll_interval: float) -> int:
    """Upload now, then whenever create_anchor notifies or poll_interval passes."""
    signal.signal(signal.SIGTERM, _stop)
    try:
        with (
            db.connect(dsn, autocommit=True, app="auditchain anchor listen") as listener,
            db.connect(dsn, autocommit=True, app="auditchain anchor") as conn,
        ):
            listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL)))
            log.info("following %s; polling every %s s", NOTIFY_CHANNEL, poll_interval)
            while True:
                summary = uploader.upload_pending(conn)
                if summary.count("conflict"):
                    raise AuditchainError("integrity alarm: see the errors above", EXIT_FAILED)
                for _ in listener.notifies(timeout=poll_interval, stop_after=1):
                    pass
    except _Stop:
        log.info("stopped")
        return EXIT_OK


def _settings(args: argparse.Namespace) -> Settings:
    if args.lock_mode not in LOCK_MODES:  # argparse does not check a default taken from the environment
        raise AuditchainError(
            f"lock mode must be GOVERNANCE or COMPLIANCE, not {args.lock_mode!r}", EXIT_USAGE
        )
    return Settings(
        bucket=require_bucket(args),
        prefix=normalize_prefix(args.prefix),
        lock_mode=args.lock_mode,
        retention_days=args.retention_days,
        sse_kms_key_id=args.sse_kms_key_id or None,
        lease=timedelta(seconds=args.lease_seconds),
        worker=f"{socket.gethostname()}:{os.getpid()}",
        signer=_signer(args),
    )


def _signer(args: argparse.Namespace) -> note.Signer | None:
    """The checkpoint signer, or None when no key is given (then only format_version 1 anchors
    can be uploaded). An option wins over both variables; two sources at one level are refused."""
    key_file, kms_key_id = args.signing_key, args.kms_key_id
    where = "--signing-key and --kms-key-id"
    if not key_file and not kms_key_id:
        key_file, kms_key_id = (
            config.env("AUDITCHAIN_SIGNING_KEY"),
            config.env("AUDITCHAIN_SIGNING_KMS_KEY_ID"),
        )
        where = "AUDITCHAIN_SIGNING_KEY and AUDITCHAIN_SIGNING_KMS_KEY_ID"
    if key_file and kms_key_id:
        raise AuditchainError(f"give one checkpoint signer, not both {where}", EXIT_USAGE)
    if not key_file and not kms_key_id:
        if args.key_name:
            raise AuditchainError("--key-name needs --kms-key-id", EXIT_USAGE)
        return None
    return signing.signer_from_options(key_file, kms_key_id, args.key_name, args.region)


def _nothing_claimed(dsn: str) -> str:
    """Why this run uploaded nothing: no pending anchor, or every one held by another uploader."""
    with db.connect(dsn, autocommit=True, app="auditchain anchor") as conn:
        pending, leased, first_expiry = conn.execute("SELECT * FROM compliance.anchor_queue()").fetchone()
    if not pending:
        return "no pending anchors"
    if leased == pending:
        return (
            f"no pending anchor is free: {pending} pending, all leased by other uploaders "
            f"(the first lease expires at {first_expiry.isoformat(timespec='seconds')})"
        )
    return f"no pending anchor was claimed: {pending} pending, {leased} leased by other uploaders"


def _run(args: argparse.Namespace) -> int:
    uploader = Uploader(s3.client_from_args(args), _settings(args))
    uploader.check_bucket_if_reachable()
    try:
        with db.setup_errors(args.dsn):
            if args.follow:
                return follow(args.dsn, uploader, args.poll_interval)
            with db.connect(args.dsn, autocommit=True, app="auditchain anchor") as conn:
                summary = uploader.upload_pending(conn)
    except psycopg.Error as exc:
        # Nothing half-written: a result is recorded whole or not at all, and a claimed anchor
        # returns to the queue when its lease expires.
        raise AuditchainError(f"the database refused: {first_line(exc)}", EXIT_FAILED) from None
    # Nothing was pending, but a bucket we could not reach is still worth a non-zero exit.
    exit_code = summary.exit_code if uploader.bucket_checked else max(summary.exit_code, EXIT_UNAVAILABLE)
    if args.json:
        print_json(
            {"anchors": summary.anchors, "bucket_checked": uploader.bucket_checked, "exit_code": exit_code}
        )
    elif not summary.anchors:
        print(_nothing_claimed(args.dsn))
    else:
        print(
            f"{summary.count('uploaded')} uploaded, {summary.count('already_present')} already present, "
            f"{summary.count('transient')} left pending after an error, "
            f"{summary.count('conflict')} integrity alarms"
            + (
                f", {summary.count('lease_lost')} left to another uploader"
                if summary.count("lease_lost")
                else ""
            )
        )
    return exit_code


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError("must be positive")
        return value

    return parse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "anchor", help="upload pending anchors to the WORM bucket", description=__doc__
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--once", action="store_true", help="upload what is pending and exit")
    mode.add_argument("--follow", action="store_true", help="keep running: LISTEN auditchain_anchor and poll")
    add_bucket_option(p)
    add_prefix_option(p)
    add_endpoint_options(p)
    p.add_argument(
        "--lock-mode",
        choices=LOCK_MODES,
        default=config.env("AUDITCHAIN_LOCK_MODE") or "GOVERNANCE",
        help="Object Lock mode of new anchor objects (default: AUDITCHAIN_LOCK_MODE, else GOVERNANCE)",
    )
    p.add_argument(
        "--retention-days",
        type=_positive(int),
        default=config.env("AUDITCHAIN_RETENTION_DAYS") or "365",
        help="retain-until = now + this many days (default: AUDITCHAIN_RETENTION_DAYS, else 365)",
    )
    p.add_argument(
        "--sse-kms-key-id",
        default=config.env("AUDITCHAIN_SSE_KMS_KEY_ID"),
        help="encrypt with SSE-KMS under this key id or ARN (default: AUDITCHAIN_SSE_KMS_KEY_ID; else the "
        "bucket's default encryption)",
    )
    signer = p.add_argument_group("checkpoint signing (format_version 2 anchors; one of)")
    signer.add_argument(
        "--signing-key",
        metavar="FILE",
        help="a signing key file written by `auditchain key generate` (default: AUDITCHAIN_SIGNING_KEY)",
    )
    signer.add_argument(
        "--kms-key-id",
        metavar="ID",
        help="an AWS KMS Ed25519 key (ECC_NIST_EDWARDS25519) ID, ARN or alias "
        "(default: AUDITCHAIN_SIGNING_KMS_KEY_ID)",
    )
    signer.add_argument(
        "--key-name",
        metavar="NAME",
        help="with --kms-key-id, the key name in signatures (default: the key ARN; use the name given "
        "to `auditchain key vkey --name`)",
    )
    p.add_argument(
        "--lease-seconds",
        type=_positive(float),
        default=config.env("AUDITCHAIN_ANCHOR_LEASE_SECONDS") or "300",
        help="how long a claimed anchor stays this uploader's without a renewal; it is renewed before "
        "each S3 write (default: AUDITCHAIN_ANCHOR_LEASE_SECONDS, else 300)",
    )
    p.add_argument(
        "--poll-interval",
        type=_positive(float),
        default=60.0,
        help="with --follow, seconds between polls when no notification arrives (default: 60)",
    )
    add_json_flag(p)
    p.set_defaults(func=_run)
