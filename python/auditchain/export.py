"""`auditchain export request` and `auditchain export run`: export bundles for auditors.

The database decides everything about a bundle (sql/70_exports.sql): which jobs exist and
their states, the compare-and-set claim, the range, every line of the data object and the
manifest. The runner only claims a job, streams the lines as PostgreSQL produces them through
gzip into an S3 multipart upload (hashing the gzip bytes on the way), writes manifest.json
next to the data, and records the outcome. See docs/exports.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
import uuid
import zlib
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from . import db, s3
from .cliutil import add_command, add_json_flag, print_json
from .config import add_bucket_option, add_endpoint_options, require_bucket
from .errors import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, AuditchainError, first_line
from .progress import meter

log = logging.getLogger(__name__)

DATA_OBJECT = "events.ndjson.gz"
MANIFEST_OBJECT = "manifest.json"
# S3 needs every part but the last to be at least 5 MiB; one part is the runner's only sizeable buffer.
PART_SIZE = 8 * 1024 * 1024
# Lines are handed to gzip in batches of about this many bytes (or BATCH_LINES lines).
BATCH_BYTES = 1024 * 1024
BATCH_LINES = 2000
HEARTBEAT_SECONDS = 30.0
# Measured on bundle lines (random hex hashes): level 6 costs 3x the CPU of level 1 for 1-2% less output.
GZIP_LEVEL = 1
# zlib wbits for a gzip header and trailer; zlib writes mtime 0, so the output is reproducible.
GZIP_CONTAINER = 31
# What `export request` exits with when the database refuses: a filter, requester or mode it
# refuses is a usage error; a tenant bundle that no signed checkpoint can prove (yet) is
# evidence that does not exist yet, as for `prove`.
REQUEST_ERRORS = {"AC030": EXIT_USAGE, "AC032": EXIT_USAGE, "AC034": EXIT_USAGE, "AC035": EXIT_UNAVAILABLE}

# export_lines is a SQL function called in the select list so that PostgreSQL hands out rows
# as it produces them; in FROM it would materialise the whole range before the first row.
# OFFSET 0 keeps the subquery, so the function runs once per row, not once per column.
# The runner reads it as a stream (libpq single-row mode) rather than through FETCH on a
# DECLAREd cursor: the server keeps producing while the runner compresses (measured 1.6x the
# throughput of FETCH 2000), and the client holds one row at a time whatever the payload sizes
# (FETCH 2000 held 400 MB when 400 payloads of 190 kB followed small events).
# A range bundle has a line for every seq of its range; a tenant bundle only the tenant's events.
LINES_SQL = {
    "range": """
SELECT (l).seq, (l).matched, (l).line
  FROM (SELECT compliance.export_lines(%s, %s, %s) AS l OFFSET 0) AS s
""",
    "tenant": """
SELECT (l).seq, (l).matched, (l).line
  FROM (SELECT compliance.tenant_export_lines(%s, %s, %s) AS l OFFSET 0) AS s
""",
}


class ExportFailure(Exception):
    """A business failure of one job: recorded as the job's job_error, the runner carries on."""


# ---------------------------------------------------------------------------- writing to S3


class MultipartUpload:
    """One S3 object written part by part; complete() makes it visible, abort() discards the parts."""

    def __init__(self, client: Any, bucket: str, key: str):
        self.client, self.bucket, self.key = client, bucket, key
        response = client.create_multipart_upload(Bucket=bucket, Key=key, ContentType="application/gzip")
        self.upload_id = response["UploadId"]
        self.parts: list[dict[str, Any]] = []

    def upload_part(self, body: bytes) -> None:
        number = len(self.parts) + 1
        response = self.client.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
        )
        self.parts.append({"PartNumber": number, "ETag": response["ETag"]})

    def complete(self) -> None:
        self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
        )

    def abort(self) -> None:
        """Best effort: when S3 cannot be reached, a lifecycle rule (AbortIncompleteMultipartUpload)
        removes the parts later."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
        except s3.S3_ERRORS as exc:
            log.warning(
                "could not abort multipart upload of s3://%s/%s: %s",
                self.bucket,
                self.key,
                s3.describe_error(exc),
            )


class GzipToParts:
    """Compresses what it is given into gzip, hashes and counts the gzip bytes, and uploads them
    in parts of at least PART_SIZE (the last one smaller)."""

    def __init__(self, upload: MultipartUpload):
        self.upload = upload
        self.sha256 = hashlib.sha256()
        self.bytes = 0
        self._compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, GZIP_CONTAINER)
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def write(self, data: bytes) -> None:
        self._take(self._compressor.compress(data))
        if self._pending_bytes >= PART_SIZE:
            self._flush_part()

    def close(self) -> None:
        self._take(self._compressor.flush())
        self._flush_part()
        self.upload.complete()

    def _take(self, compressed: bytes) -> None:
        self.sha256.update(compressed)
        self.bytes += len(compressed)
        self._pending.append(compressed)
        self._pending_bytes += len(compressed)

    def _flush_part(self) -> None:
        if self._pending_bytes or not self.upload.parts:
            # Bytes, not a bytearray: botocore copies a bytearray body again (measured: 3 part sizes of peak
            # memory instead of 2).
            part = b"".join(self._pending)
            self._pending, self._pending_bytes = [], 0
            self.upload.upload_part(part)


# ---------------------------------------------------------------------------- running one job


@dataclass
class Outcome:
    job_id: uuid.UUID
    status: str  # completed, failed, or skipped (not queued)
    error: str | None = None
    manifest: dict[str, Any] | None = None
    bucket: str | None = None
    prefix: str | None = None
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"job_id": str(self.job_id), "status": self.status}
        if self.error:
            document["job_error"] = self.error
        if self.manifest:
            document.update(
                bucket=self.bucket,
                prefix=self.prefix,
                line_count=self.manifest["line_count"],
                matched_count=self.manifest["matched_count"],
                data_sha256=self.manifest["data_sha256"],
                data_bytes=self.manifest["data_bytes"],
                seconds=round(self.seconds, 3),
            )
        return document


class Runner:
    """Claims and runs export jobs. `control` is an autocommit connection for claims, heartbeats and
    outcomes; each job reads through its own REPEATABLE READ connection so that the plan and the
    lines come from one snapshot."""

    def __init__(self, dsn: str, control: psycopg.Connection, client: Any, bucket: str, prefix: str):
        self.dsn, self.control, self.client, self.bucket = dsn, control, client, bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"

    def claim(self, job_id: uuid.UUID) -> bool:
        try:
            return self.control.execute("SELECT compliance.claim_export(%s)", (job_id,)).fetchone()[0]
        except psycopg.errors.NoDataFound:
            raise AuditchainError(f"export job {job_id} does not exist", EXIT_USAGE) from None

    def claim_next(self) -> uuid.UUID | None:
        return self.control.execute("SELECT compliance.claim_next_export()").fetchone()[0]

    def run(self, job_id: uuid.UUID) -> Outcome:
        """Run a job this runner has claimed; business failures are recorded on the job and returned."""
        started = time.monotonic()
        prefix = f"{self.prefix}{job_id}/"
        upload = None
        try:
            upload = MultipartUpload(self.client, self.bucket, prefix + DATA_OBJECT)
            manifest = self._write_data(job_id, upload)
            self.client.put_object(
                Bucket=self.bucket,
                Key=prefix + MANIFEST_OBJECT,
                Body=(json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode(),
                ContentType="application/json",
            )
            self._complete(job_id, prefix, manifest)
        except (ExportFailure, *s3.S3_ERRORS) as exc:
            error = s3.describe_error(exc) if isinstance(exc, s3.S3_ERRORS) else str(exc)
            return self._fail(job_id, upload, error)
        except KeyboardInterrupt:
            self._fail(job_id, upload, "interrupted: the runner was stopped by its operator")
            raise
        except (psycopg.Error, AuditchainError) as exc:
            return self._fail(job_id, upload, f"database error: {first_line(exc)}")
        return Outcome(
            job_id,
            "completed",
            manifest=manifest,
            bucket=self.bucket,
            prefix=prefix,
            seconds=time.monotonic() - started,
        )

    def _write_data(self, job_id: uuid.UUID, upload: MultipartUpload) -> dict[str, Any]:
        """Stream the data object; returns the manifest with the data object's digest and size."""
        with db.connect(self.dsn, app="auditchain export run") as reader:
            reader.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            reader.read_only = True
            with reader.transaction():
                manifest = reader.execute("SELECT compliance.export_plan(%s)", (job_id,)).fetchone()[0]
                sink = GzipToParts(upload)
                lines, matched = 0, 0
                if manifest["seq_from"] is not None:
                    lines, matched = self._stream(reader, job_id, manifest, sink)
        sink.close()
        if (lines, matched) != (manifest["line_count"], manifest["matched_count"]):
            raise ExportFailure(
                f"streamed {lines} lines ({matched} matched) but the plan has {manifest['line_count']} "
                f"({manifest['matched_count']} matched)"
            )
        manifest["data_sha256"] = sink.sha256.hexdigest()
        manifest["data_bytes"] = sink.bytes
        return manifest

    def _stream(
        self, reader: psycopg.Connection, job_id: uuid.UUID, manifest: dict[str, Any], sink: GzipToParts
    ) -> tuple[int, int]:
        seq_from, seq_to = manifest["seq_from"], manifest["seq_to"]
        every_seq = manifest["mode"] == "range"
        bar = meter(f"export {job_id}", unit="lines", total=manifest["line_count"])
        next_heartbeat = time.monotonic() + HEARTBEAT_SECONDS
        lines = matched = 0
        previous = seq_from - 1
        batch: list[str] = []
        batch_bytes = 0
        query = LINES_SQL[manifest["mode"]]
        for seq, is_match, line in reader.cursor().stream(query, (job_id, seq_from, seq_to)):
            if seq != previous + 1 if every_seq else seq <= previous:
                raise ExportFailure(f"the stream skipped or repeated a seq: {seq} after {previous}")
            previous = seq
            lines += 1
            matched += is_match
            batch.append(line)
            batch_bytes += len(line)
            if batch_bytes >= BATCH_BYTES or len(batch) >= BATCH_LINES:
                sink.write(("\n".join(batch) + "\n").encode())
                batch, batch_bytes = [], 0
                bar.update(lines - bar.n)
                if time.monotonic() >= next_heartbeat:
                    self._heartbeat(job_id)
                    next_heartbeat = time.monotonic() + HEARTBEAT_SECONDS
        if batch:
            sink.write(("\n".join(batch) + "\n").encode())
        bar.close()
        return lines, matched

    def _heartbeat(self, job_id: uuid.UUID) -> None:
        if not self.control.execute("SELECT compliance.export_heartbeat(%s)", (job_id,)).fetchone()[0]:
            raise ExportFailure("the job is no longer running (reconciled as stuck?); stopped streaming")

    def _complete(self, job_id: uuid.UUID, prefix: str, manifest: dict[str, Any]) -> None:
        self.control.execute(
            "SELECT compliance.complete_export(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                job_id,
                self.bucket,
                prefix,
                manifest["line_count"],
                manifest["matched_count"],
                bytes.fromhex(manifest["data_sha256"]),
                manifest["data_bytes"],
                manifest["seq_from"],
                manifest["seq_to"],
            ),
        )

    def _fail(self, job_id: uuid.UUID, upload: MultipartUpload | None, error: str) -> Outcome:
        log.error("export job %s failed: %s", job_id, error)
        if upload is not None:
            upload.abort()
        try:
            self.control.execute("SELECT compliance.fail_export(%s, %s)", (job_id, error))
        except psycopg.Error as exc:
            raise AuditchainError(
                f"export job {job_id} failed ({error}) and the failure could not be recorded: "
                f"{first_line(exc)}; the job stays running until reconcile_exports fails it",
                EXIT_UNAVAILABLE,
            ) from None
        return Outcome(job_id, "failed", error=error)


# ---------------------------------------------------------------------------- command line


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser(
        "export",
        help="request export bundles and run the export runner",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = group.add_subparsers(dest="export_command", metavar="COMMAND", required=True)

    request = add_command(
        commands,
        "request",
        help="queue an export job (compliance.request_export) and print its job id",
        description="Queue an export job. The filter is validated by the database; the request is "
        "itself audited (a data.export_initiated event). Filter keys: from, to (ISO-8601 with a time "
        "zone; from inclusive, to exclusive, over occurred_at), tenant_id or tenant_ids, event_types, "
        "actor, withhold_payloads. See docs/exports.md.",
    )
    request.add_argument(
        "--filter",
        required=True,
        metavar="JSON",
        help='the filter as a JSON object, e.g. \'{"tenant_id": "acme"}\'',
    )
    request.add_argument(
        "--mode",
        choices=("range", "tenant"),
        default="range",
        help="range (default): every event of a seq range, the unmatched ones as hashes; tenant: one "
        "tenant's events with the proofs of its tree against a signed checkpoint (filter "
        '{"tenant_id": ...}, optionally to_checkpoint and from_checkpoint)',
    )
    request.add_argument(
        "--requested-by",
        required=True,
        metavar="WHO",
        help="who asks for the export (recorded as the audit event's actor)",
    )
    add_json_flag(request)
    request.set_defaults(func=run_request)

    run = add_command(
        commands,
        "run",
        help="claim export jobs and write their bundles to S3",
        description="Claim an export job (compare-and-set), stream its events to "
        "s3://BUCKET/PREFIX<job_id>/events.ndjson.gz and write manifest.json beside it. A business "
        "failure (missing bucket, access denied, S3 unreachable) marks the job failed; exit code 1 "
        "with --once or --job. See docs/exports.md.",
    )
    mode = run.add_mutually_exclusive_group(required=True)
    mode.add_argument("--once", action="store_true", help="run the oldest queued job, if any, then exit")
    mode.add_argument("--follow", action="store_true", help="keep claiming queued jobs until interrupted")
    mode.add_argument("--job", type=_job_id, metavar="JOB_ID", help="run this job if it is still queued")
    add_bucket_option(run)
    run.add_argument("--prefix", default="exports/", help="key prefix of the bundles (default: exports/)")
    run.add_argument(
        "--poll-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="with --follow: wait this long when no job is queued (default: 5)",
    )
    add_endpoint_options(run)
    add_json_flag(run)
    run.set_defaults(func=run_runner)


def _job_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {text!r}") from None


def run_request(args: argparse.Namespace) -> int:
    try:
        export_filter = json.loads(args.filter)
    except ValueError as exc:
        raise AuditchainError(f"--filter is not valid JSON: {exc}", EXIT_USAGE) from None
    with db.connect(args.dsn, autocommit=True, app="auditchain export request") as conn:
        try:
            job_id = conn.execute(
                "SELECT compliance.request_export(%s, %s, %s)",
                (Jsonb(export_filter), args.requested_by, args.mode),
            ).fetchone()[0]
        except psycopg.Error as exc:
            if exc.sqlstate in REQUEST_ERRORS:
                raise AuditchainError(
                    exc.diag.message_primary or str(exc), REQUEST_ERRORS[exc.sqlstate]
                ) from None
            raise
    if args.json:
        print_json({"job_id": str(job_id)})
    else:
        print(job_id)
    return EXIT_OK


def run_runner(args: argparse.Namespace) -> int:
    client = s3.client_from_args(args)
    with db.connect(args.dsn, autocommit=True, app="auditchain export run") as control:
        runner = Runner(args.dsn, control, client, require_bucket(args), args.prefix)
        if args.follow:
            return _follow(runner, args)
        if args.job:
            job_id = args.job if runner.claim(args.job) else None
            idle = (
                f"export job {args.job} is not queued (claimed by another runner or finished); nothing to do"
            )
        else:
            job_id = runner.claim_next()
            idle = "no export job is queued"
        if job_id is None:
            _report(args, Outcome(args.job, "skipped") if args.job else None, idle)
            return EXIT_OK
        outcome = runner.run(job_id)
        _report(args, outcome)
        return EXIT_OK if outcome.status == "completed" else EXIT_FAILED


def _follow(runner: Runner, args: argparse.Namespace) -> int:
    log.info("waiting for export jobs (bucket %s, prefix %r)", args.bucket, runner.prefix)
    while True:
        job_id = runner.claim_next()
        if job_id is None:
            time.sleep(args.poll_interval)
            continue
        _report(args, runner.run(job_id))


def _report(args: argparse.Namespace, outcome: Outcome | None, idle: str = "") -> None:
    """The result on stdout; a failure is only logged (stderr) unless --json asks for it."""
    if args.json:
        print_json(outcome.as_json() if outcome else {"status": "idle"})
    elif outcome is None or outcome.status == "skipped":
        print(idle)
    elif outcome.status == "completed":
        m = outcome.manifest
        rate = m["line_count"] / outcome.seconds if outcome.seconds else 0
        print(
            f"export job {outcome.job_id} completed: {m['line_count']:,} lines "
            f"({m['matched_count']:,} matched) "
            f"in {outcome.seconds:.1f} s ({rate:,.0f} lines/s) -> s3://{outcome.bucket}/{outcome.prefix} "
            f"({m['data_bytes']:,} bytes, sha256 {m['data_sha256']})"
        )
