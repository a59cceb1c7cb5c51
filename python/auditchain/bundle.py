"""`auditchain verify-bundle`: check an export bundle offline, without the database.

A bundle (format v1, docs/bundle-verification.md) is a folder or S3 prefix holding
manifest.json and events.ndjson.gz. The data object is streamed once: its bytes are
hashed as they are read and decompressed, and each line is checked as it arrives, so
memory stays flat whatever the bundle's size. Every event the filter matched is
re-hashed from its own fields (python/auditchain/hashing.py) and must satisfy the
manifest's filter (python/auditchain/export_filter.py), every excluded event is re-hashed
from the digest of its record; every line is linked to the one before. Events are checked
even when the data object's digest already differs from the manifest, so that a changed
event is still named by its seq.

Exit codes: 0 everything checked passed, 1 a check failed, 2 the bundle is unusable
(no manifest, unreadable, not format v1), 3 S3 unreachable for the bundle itself.
Anchors that cannot be fetched are a warning, or a failure with --require-anchors.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import json
import re
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from botocore.exceptions import BotoCoreError, ClientError

from . import hashing, s3
from .cliutil import add_command, add_json_flag, is_terminal, print_json
from .errors import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, AuditchainError
from .export_filter import ExportFilter, FilterError, parse_filter
from .progress import Progress
from .verify import cadence_id

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "auditchain-export"
ANCHOR_FORMAT = "auditchain-anchor"
FORMAT_VERSION = 1
# Longest NDJSON line read. A payload is at most 256 KiB as jsonb; even escaped twice
# (jsonb text, then a JSON string in the line) it stays far below this.
MAX_LINE_BYTES = 16 * 1024 * 1024
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
MAX_ANCHOR_BYTES = 1024 * 1024
MAX_REPORTED_FAILURES = 20
READ_CHUNK = 1024 * 1024

FULL_EVENT_FIELDS = frozenset(
    {
        "seq",
        "event_id",
        "occurred_at",
        "recorded_at",
        "tenant_id",
        "event_type",
        "actor",
        "prev_hash",
        "event_hash",
    }
)
EXCLUDED_FIELDS = frozenset({"seq", "prev_hash", "record_sha256", "event_hash", "excluded"})
# Job ids are compliance.uuidv7(): lower-case, hyphenated, version 7, RFC 9562 variant.
_JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


class UnusableBundle(AuditchainError):
    def __init__(self, message: str):
        super().__init__(message, EXIT_USAGE)


class BundleUnavailable(AuditchainError):
    def __init__(self, message: str):
        super().__init__(message, EXIT_UNAVAILABLE)


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two values for one key would let two JSON readers see two different events.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"duplicate key {duplicate!r}")
    return obj


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _bounded_int(text: str) -> int:
    # No number in a bundle needs more; Python would refuse beyond 4300 digits with a confusing message.
    if len(text) > 20:
        raise ValueError("a number of more than 20 digits")
    return int(text)


_DECODER = json.JSONDecoder(
    object_pairs_hook=_object_pairs, parse_constant=_refuse_constant, parse_int=_bounded_int
)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """One strict JSON object from UTF-8 bytes; ValueError with a short reason otherwise."""
    try:
        value = _DECODER.decode(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("not valid UTF-8") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON ({exc.msg} at column {exc.colno})") from None
    except ValueError as exc:
        raise ValueError(f"malformed JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"a JSON {type(value).__name__} where an object was expected")
    return value


# ---------------------------------------------------------------------------- the manifest


def _int(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise hashing.FieldError("is not a non-negative integer")
    return value


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else check(value)


_JSON_TYPE_NAMES = {str: "string", dict: "object", list: "array", bool: "boolean"}


def _of_type(kind: type) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not isinstance(value, kind):
            raise hashing.FieldError(f"is not a JSON {_JSON_TYPE_NAMES[kind]}")
        return value

    return check


def _checked_object(spec: dict[str, Callable[[Any], Any]], value: Any, what: str) -> dict[str, Any]:
    """The fields of spec, each checked; extra fields are left for the caller to report."""
    if not isinstance(value, dict):
        raise UnusableBundle(f"{what} is not a JSON object")
    checked = {}
    for name, check in spec.items():
        if name not in value:
            raise UnusableBundle(f"{what} has no field {name!r}")
        try:
            checked[name] = check(value[name])
        except hashing.FieldError as exc:
            raise UnusableBundle(f"{what} field {name!r} {exc}") from None
    return checked


def _job_id(value: Any) -> str:
    if not isinstance(value, str) or not _JOB_ID.fullmatch(value):
        raise hashing.FieldError("is not a lower-case hyphenated version-7 UUID")
    return value


def _export_timestamp(value: Any) -> str:
    hashing.parse_export_timestamp(value)
    return value


DATABASE_FIELDS = {"system_identifier": _of_type(str), "database_name": _of_type(str)}
MANIFEST_ANCHOR_FIELDS = {
    "cadence_id": hashing.parse_hex_digest,
    "seq_to": _int,
    "head_hash": hashing.parse_hex_digest,
    "document_digest": hashing.parse_hex_digest,
    "bucket": _of_type(str),
    "key": _of_type(str),
    "version_id": _optional(_of_type(str)),
}
MANIFEST_FIELDS = {
    "format": _of_type(str),
    "format_version": _int,
    "hash_version": _int,
    "job_id": _job_id,
    "filter": _of_type(dict),
    "requested_by": _of_type(str),
    "created_at": _export_timestamp,
    "seq_from": _optional(_int),
    "seq_to": _optional(_int),
    "range_prev_hash": _optional(hashing.parse_hex_digest),
    "line_count": _int,
    "matched_count": _int,
    "withheld_payloads": _of_type(bool),
    "data_object": _of_type(str),
    "data_sha256": hashing.parse_hex_digest,
    "data_bytes": _int,
    "database": _of_type(dict),
    "anchors": _of_type(list),
}


@dataclass
class Manifest:
    fields: dict[str, Any]
    export_filter: ExportFilter
    database: dict[str, str]
    anchors: list[dict[str, Any]]

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    @property
    def expected_lines(self) -> int:
        if self["seq_from"] is None:
            return 0
        return self["seq_to"] - self["seq_from"] + 1


def load_manifest(raw: bytes, report: Report) -> Manifest:
    """The manifest, checked field by field. What makes verification impossible raises
    UnusableBundle; what is merely inconsistent is a failure in the report."""
    try:
        document = parse_json_object(raw)
    except ValueError as exc:
        raise UnusableBundle(f"{MANIFEST_NAME} is not usable: {exc}") from None
    if document.get("format") != MANIFEST_FORMAT:
        raise UnusableBundle(
            f"{MANIFEST_NAME} is not an {MANIFEST_FORMAT} manifest (format {document.get('format')!r})"
        )
    for name in ("format_version", "hash_version"):
        if document.get(name) != FORMAT_VERSION or type(document.get(name)) is not int:
            raise UnusableBundle(
                f"{MANIFEST_NAME} has {name} {document.get(name)!r}; "
                f"this verifier reads version {FORMAT_VERSION}"
            )
    fields = _checked_object(MANIFEST_FIELDS, document, MANIFEST_NAME)
    try:
        export_filter = parse_filter(fields["filter"])
    except FilterError as exc:
        raise UnusableBundle(
            f"{MANIFEST_NAME} has a filter no export can have (the database would refuse it): {exc}"
        ) from None
    for extra in sorted(set(document) - set(MANIFEST_FIELDS)):
        report.fail("manifest", f"unexpected field {extra!r}: not part of manifest format v1")
    database = _checked_object(DATABASE_FIELDS, fields["database"], "manifest field 'database'")
    anchors = []
    for index, entry in enumerate(fields["anchors"]):
        what = f"manifest anchors[{index}]"
        anchors.append(_checked_object(MANIFEST_ANCHOR_FIELDS, entry, what))
        for extra in sorted(set(entry) - set(MANIFEST_ANCHOR_FIELDS)):
            report.fail("manifest", f"{what}: unexpected field {extra!r}")

    name = fields["data_object"]
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        raise UnusableBundle(f"{MANIFEST_NAME} names data_object {name!r}, which is not a plain file name")
    seq_from, seq_to = fields["seq_from"], fields["seq_to"]
    if (seq_from is None) != (seq_to is None):
        raise UnusableBundle(f"{MANIFEST_NAME} has only one of seq_from and seq_to")
    if seq_from is not None and not 1 <= seq_from <= seq_to:
        raise UnusableBundle(f"{MANIFEST_NAME} range seq {seq_from}..{seq_to} is not a range of seqs")
    if seq_from is not None and fields["range_prev_hash"] is None:
        raise UnusableBundle(f"{MANIFEST_NAME} has no range_prev_hash for a non-empty range")
    manifest = Manifest(fields, export_filter, database, anchors)
    _check_manifest_consistency(manifest, report)
    return manifest


def _check_manifest_consistency(manifest: Manifest, report: Report) -> None:
    expected = manifest.expected_lines
    if manifest["line_count"] != expected:
        report.fail(
            "manifest", f"line_count {manifest['line_count']} but the range seq_from..seq_to has {expected}"
        )
    if manifest["matched_count"] > manifest["line_count"]:
        report.fail("manifest", f"matched_count {manifest['matched_count']} exceeds line_count")
    if manifest["withheld_payloads"] != manifest.export_filter.withhold_payloads:
        report.fail(
            "manifest",
            f"withheld_payloads is {str(manifest['withheld_payloads']).lower()} but the filter's "
            f"withhold_payloads is {str(manifest.export_filter.withhold_payloads).lower()}",
        )
    if manifest["seq_from"] == 1 and manifest["range_prev_hash"] != hashing.GENESIS_HASH:
        report.fail(
            "manifest", "range_prev_hash of a range starting at seq 1 must be 32 zero bytes (the genesis)"
        )
    seen: set[int] = set()
    for anchor in manifest.anchors:
        seq = anchor["seq_to"]
        if seq in seen:
            report.fail("anchors", f"two anchors in the manifest at seq_to {seq}", seq=seq)
        seen.add(seq)
        if manifest["seq_from"] is None or not manifest["seq_from"] <= seq <= manifest["seq_to"]:
            report.fail("anchors", f"anchor at seq_to {seq} lies outside the bundle's range", seq=seq)


# ---------------------------------------------------------------------------- the report


@dataclass
class Failure:
    check: str
    message: str
    seq: int | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = []
        if self.seq is not None:
            where.append(f"seq {self.seq}")
        if self.line is not None:
            where.append(f"line {self.line}")
        place = f" at {', '.join(where)}" if where else ""
        return f"{self.check}{place}: {self.message}"


@dataclass
class AnchorResult:
    seq_to: int
    location: str
    status: str  # verified, failed, unreachable, skipped
    detail: str = ""
    lock_mode: str | None = None
    retain_until: str | None = None


@dataclass
class Report:
    location: str
    failures: list[Failure] = field(default_factory=list)
    failure_count: int = 0
    warnings: list[str] = field(default_factory=list)
    lines: int = 0
    matched: int = 0
    excluded: int = 0
    withheld: int = 0
    anchored: int = 0
    data_bytes: int = 0
    data_sha256: str | None = None
    anchors: list[AnchorResult] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def fail(self, check: str, message: str, *, seq: int | None = None, line: int | None = None) -> None:
        self.failure_count += 1
        if len(self.failures) < MAX_REPORTED_FAILURES:
            self.failures.append(Failure(check, message, seq, line))

    @property
    def ok(self) -> bool:
        return self.failure_count == 0

    def summary(self) -> dict[str, int]:
        by_status = [a.status for a in self.anchors]
        return {
            "events_checked": self.lines,
            "matched": self.matched,
            "excluded": self.excluded,
            "withheld": self.withheld,
            "anchored": self.anchored,
            "anchors_in_manifest": len(self.anchors),
            "anchors_checked": by_status.count("verified") + by_status.count("failed"),
            "anchors_verified": by_status.count("verified"),
            "anchors_unreachable": by_status.count("unreachable"),
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "bundle": self.location,
            "ok": self.ok,
            "exit_code": EXIT_OK if self.ok else EXIT_FAILED,
            "failure_count": self.failure_count,
            "failures": [asdict(f) | {"text": str(f)} for f in self.failures],
            "warnings": self.warnings,
            "summary": self.summary(),
            "anchors": [asdict(a) for a in self.anchors],
            "data_bytes": self.data_bytes,
            "data_sha256": self.data_sha256,
            "manifest": self.manifest,
            "seconds": round(self.seconds, 3),
        }


# ---------------------------------------------------------------------------- where bundles live


_MISSING_CODES = {"NoSuchKey", "NoSuchBucket", "NoSuchVersion", "404"}


class FolderSource:
    def __init__(self, folder: Path):
        self.folder = folder
        self.location = str(folder)

    def _file(self, name: str) -> Path:
        path = self.folder / name
        if not path.exists():
            raise UnusableBundle(f"{path} does not exist")
        if not path.is_file():
            raise UnusableBundle(f"{path} is not a regular file")
        return path

    def read_small(self, name: str, limit: int) -> bytes:
        try:
            with self._file(name).open("rb") as f:
                data = f.read(limit + 1)
        except OSError as exc:
            raise UnusableBundle(f"cannot read {self.folder / name}: {exc.strerror or exc}") from None
        if len(data) > limit:
            raise UnusableBundle(f"{self.folder / name} is larger than {limit} bytes")
        return data

    def open_stream(self, name: str) -> IO[bytes]:
        try:
            return self._file(name).open("rb")
        except OSError as exc:
            raise UnusableBundle(f"cannot read {self.folder / name}: {exc.strerror or exc}") from None

    def read_error(self, exc: Exception) -> AuditchainError:
        return UnusableBundle(f"reading {self.location} failed: {exc}")


class S3Source:
    def __init__(self, url: str, client: Any):
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            raise UnusableBundle(f"{url!r} names no bucket (expected s3://bucket/prefix)")
        if prefix.endswith(MANIFEST_NAME):
            prefix = prefix[: -len(MANIFEST_NAME)]
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.bucket, self.prefix, self.client = bucket, prefix, client
        self.location = f"s3://{bucket}/{prefix}"

    def _get(self, name: str) -> Any:
        key = self.prefix + name
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as exc:
            code = s3.error_code(exc)
            if code in _MISSING_CODES:
                raise UnusableBundle(f"s3://{self.bucket}/{key} does not exist ({code})") from None
            raise BundleUnavailable(f"cannot read s3://{self.bucket}/{key}: {code or exc}") from None
        except BotoCoreError as exc:
            raise BundleUnavailable(f"cannot reach S3 for s3://{self.bucket}/{key}: {exc}") from None

    def read_small(self, name: str, limit: int) -> bytes:
        body = self._get(name)
        try:
            data = body.read(limit + 1)
        except Exception as exc:  # botocore and urllib3 raise several unrelated types mid-stream
            raise self.read_error(exc) from None
        finally:
            body.close()
        if len(data) > limit:
            raise UnusableBundle(f"s3://{self.bucket}/{self.prefix}{name} is larger than {limit} bytes")
        return data

    def open_stream(self, name: str) -> IO[bytes]:
        return self._get(name)

    def read_error(self, exc: Exception) -> AuditchainError:
        return BundleUnavailable(f"reading from {self.location} failed: {type(exc).__name__}: {exc}")


class _HashingReader:
    """Reads the raw data object for gzip while hashing and counting every byte; a failure
    of the source itself (not of its content) surfaces as the source's own error."""

    def __init__(self, raw: IO[bytes], source: FolderSource | S3Source):
        self.raw, self.source = raw, source
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def read(self, size: int = -1) -> bytes:
        try:
            chunk = self.raw.read(size)
        except Exception as exc:
            raise self.source.read_error(exc) from None
        self.sha256.update(chunk)
        self.bytes += len(chunk)
        return chunk

    def drain(self) -> None:
        while self.read(READ_CHUNK):
            pass


# ---------------------------------------------------------------------------- checking the events


def _read_lines(stream: IO[bytes], report: Report) -> Iterator[tuple[int, bytes]]:
    """(line number, line) pairs; a line too long or a corrupt gzip stream is reported and ends the read."""
    number = 0
    while True:
        try:
            raw = stream.readline(MAX_LINE_BYTES + 1)
        except (EOFError, OSError, zlib.error) as exc:
            reason = "truncated" if isinstance(exc, EOFError) else f"corrupt ({exc})"
            report.fail("data", f"the gzip stream is {reason} after {number} complete lines; reading stopped")
            return
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES:
            report.fail(
                "data", f"line {number} is longer than {MAX_LINE_BYTES} bytes; reading stopped", line=number
            )
            return
        yield number, raw


@dataclass
class _ChainState:
    """What the stream carries from line to line.

    Every line, matched or excluded, re-derives its event_hash from its prev_hash, so a
    matched event is bound to every later anchor of the range unless a line that does not
    verify (a broken link, a hash that does not follow, an unreadable line) lies between
    them. Segments count the matched events between such breaks, and each anchored seq
    remembers its segment and how many matched events of that segment precede it.
    """

    prev_hash: bytes | None
    hashes_at: dict[int, bytes | None]
    segment: int = 0
    matched_in_segment: int = 0
    bindings: dict[int, tuple[int, int]] = field(default_factory=dict)


def _check_line(number: int, raw: bytes, manifest: Manifest, report: Report, state: _ChainState) -> None:
    seq = manifest["seq_from"] + number - 1
    fail = functools.partial(report.fail, seq=seq, line=number)
    expected_prev, state.prev_hash = state.prev_hash, None
    try:
        event = parse_json_object(raw)
    except ValueError as exc:
        fail("line", str(exc))
        return
    in_place = event.get("seq") == seq and type(event.get("seq")) is int
    if not in_place:
        fail(
            "order",
            f"the line carries seq {event.get('seq')!r} where seq {seq} belongs (a line is "
            "missing, duplicated or out of order)",
        )
    try:
        prev_hash = hashing.parse_hex_digest(event.get("prev_hash"))
        stored_hash = hashing.parse_hex_digest(event.get("event_hash"))
    except hashing.FieldError as exc:
        fail("line", f"prev_hash or event_hash {exc}")
        return

    linked = prev_hash == expected_prev
    if expected_prev is not None and not linked:
        if number == 1:
            fail("link", "prev_hash differs from the manifest's range_prev_hash")
        else:
            fail("link", f"prev_hash is not the event_hash of seq {seq - 1} (the chain is broken here)")
    if not linked:  # what came before is not tied to what follows
        state.segment, state.matched_in_segment = state.segment + 1, 0

    matched = "excluded" not in event
    if matched:
        hash_follows = _check_event(event, prev_hash, stored_hash, manifest, report, fail)
    else:
        _check_exclusion_possible(seq, manifest, fail)
        hash_follows = _check_excluded(event, prev_hash, stored_hash, report, fail)
    if hash_follows and in_place:
        state.matched_in_segment += matched
    else:  # this line is tied to nothing, and breaks the tie of those before it
        state.segment, state.matched_in_segment = state.segment + 1, 0
    state.prev_hash = stored_hash
    if seq in state.hashes_at:
        state.hashes_at[seq] = stored_hash
        state.bindings[seq] = (state.segment, state.matched_in_segment)


def _check_exclusion_possible(seq: int, manifest: Manifest, fail: Callable[[str, str], None]) -> None:
    """An excluded line where, by the manifest, no event can be excluded. (Where one can, nothing
    shows whether the excluded event matched the filter: the line carries no fields.)"""
    if manifest.export_filter.selects_every_event:
        fail("filter", "the line is excluded, but the manifest's filter selects every event")
    elif seq == manifest["seq_from"]:
        fail("range", "the line is excluded, but a range starts at the first event its filter selects")
    elif seq == manifest["seq_to"] and seq not in {anchor["seq_to"] for anchor in manifest.anchors}:
        fail(
            "range",
            "the line is excluded, but a range ends at the last event its filter selects "
            "or at an anchor the manifest lists",
        )


def _check_excluded(
    event: dict[str, Any],
    prev_hash: bytes,
    stored_hash: bytes,
    report: Report,
    fail: Callable[[str, str], None],
) -> bool:
    """An excluded line; True when its event_hash follows from its prev_hash and record_sha256."""
    report.excluded += 1
    if event["excluded"] is not True:
        fail("line", f"excluded is {event['excluded']!r}, not true")
    if extra := set(event) - EXCLUDED_FIELDS:
        fail(
            "line",
            "an excluded event may carry only seq, prev_hash, record_sha256 and event_hash, "
            f"not {sorted(extra)}",
        )
    if "record_sha256" not in event:
        fail("line", "record_sha256: missing (an excluded event carries the SHA-256 of its record)")
        return False
    try:
        record_sha256 = hashing.parse_hex_digest(event["record_sha256"])
    except hashing.FieldError as exc:
        fail("line", f"record_sha256: {exc}")
        return False
    if hashing.event_hash_from_digest(prev_hash, record_sha256) != stored_hash:
        fail(
            "content",
            "the excluded event's prev_hash and record_sha256 do not hash to its event_hash "
            "(a hash was changed)",
        )
        return False
    return True


def _check_event(
    event: dict[str, Any],
    prev_hash: bytes,
    stored_hash: bytes,
    manifest: Manifest,
    report: Report,
    fail: Callable[[str, str], None],
) -> bool:
    """A matched event; True when its fields hash to its event_hash."""
    report.matched += 1
    withheld = "payload" not in event
    report.withheld += withheld
    if withheld != manifest["withheld_payloads"]:
        state = "withheld" if withheld else "present"
        fail(
            "line",
            f"the payload is {state} but the manifest says withheld_payloads={manifest['withheld_payloads']}",
        )
    allowed = FULL_EVENT_FIELDS | {"payload_sha256" if withheld else "payload"}
    if extra := set(event) - allowed:
        fail(
            "line", f"fields {sorted(extra)} are not part of an exported event (and not covered by its hash)"
        )
    try:
        record = hashing.canonical_record(event)
    except hashing.FieldError as exc:
        fail("line", str(exc))
        return False
    for reason in manifest.export_filter.mismatches(event):
        fail("filter", f"the manifest's filter does not select this event: {reason}")
    if hashing.event_hash(prev_hash, record) != stored_hash:
        fail("content", "the event's fields do not hash to its event_hash (a hashed field was changed)")
        return False
    return True


def _check_data(
    source: FolderSource | S3Source, manifest: Manifest, report: Report, progress: bool
) -> _ChainState:
    """Stream the data object once; returns the state at its end (hashes at anchored seqs)."""
    state = _ChainState(
        prev_hash=manifest["range_prev_hash"],
        hashes_at={a["seq_to"]: None for a in manifest.anchors},
    )
    expected = manifest.expected_lines
    meter = Progress("verify-bundle", unit="events", total=expected, enabled=progress)
    raw = source.open_stream(manifest["data_object"])
    reader = _HashingReader(raw, source)
    try:
        with gzip.GzipFile(fileobj=reader, mode="rb") as stream:
            for number, line in _read_lines(stream, report):
                if number > expected:
                    report.fail(
                        "data",
                        f"line {number} lies beyond the manifest's range (it has {expected} lines); "
                        "reading stopped",
                        line=number,
                    )
                    break
                _check_line(number, line, manifest, report, state)
                report.lines = number
                if number % 4096 == 0:
                    meter.update(number)
        reader.drain()
    finally:
        meter.finish()
        raw.close()
    if report.lines < expected:
        missing_from = manifest["seq_from"] + report.lines
        report.fail(
            "data",
            f"the data ends after {report.lines} lines; seq {missing_from}..{manifest['seq_to']} are missing",
            seq=missing_from,
        )
    report.data_bytes, report.data_sha256 = reader.bytes, reader.sha256.hexdigest()
    if reader.bytes != manifest["data_bytes"]:
        report.fail(
            "digest", f"the data object has {reader.bytes} bytes; the manifest says {manifest['data_bytes']}"
        )
    if reader.sha256.digest() != manifest["data_sha256"]:
        report.fail(
            "digest",
            f"the data object's SHA-256 is {report.data_sha256}; the manifest says "
            f"{manifest['data_sha256'].hex()}",
        )
    if report.lines == expected and report.matched != manifest["matched_count"]:
        report.fail(
            "manifest",
            f"matched_count is {manifest['matched_count']} but the data holds {report.matched} "
            "matched events",
        )
    return state


# ---------------------------------------------------------------------------- anchors

# An anchor object written long after its anchor was created may have been backfilled.
LATE_UPLOAD_WARNING_SECONDS = 24 * 3600


@dataclass
class _FetchedAnchor:
    document: bytes
    lock_mode: str | None
    retain_until: str | None
    legal_hold: bool
    last_modified: Any


class _AnchorFetcher:
    """Fetches anchor objects; a bucket that cannot be reached once is not tried again."""

    def __init__(self, client_factory: Callable[[], Any]):
        self.client_factory = client_factory
        self.client: Any = None
        self.unreachable: dict[str, str] = {}

    def fetch(self, anchor: dict[str, Any]) -> _FetchedAnchor | str:
        """The object, or the reason it could not be reached. A missing object raises LookupError."""
        bucket = anchor["bucket"]
        if bucket in self.unreachable:
            return self.unreachable[bucket]
        params = {"Bucket": bucket, "Key": anchor["key"]}
        if anchor["version_id"] is not None:
            params["VersionId"] = anchor["version_id"]
        try:
            if self.client is None:
                self.client = self.client_factory()
            response = self.client.get_object(**params)
            with response["Body"] as body:
                document = body.read(MAX_ANCHOR_BYTES + 1)
        except ClientError as exc:
            code = s3.error_code(exc)
            if code in ("NoSuchKey", "NoSuchVersion"):
                raise LookupError(f"the bucket holds no such object ({code})") from None
            self.unreachable[bucket] = f"cannot read from bucket {bucket!r}: {code or exc}"
            return self.unreachable[bucket]
        except (BotoCoreError, ValueError, AuditchainError) as exc:
            self.unreachable[bucket] = f"cannot reach bucket {bucket!r}: {exc}"
            return self.unreachable[bucket]
        retain_until = response.get("ObjectLockRetainUntilDate")
        return _FetchedAnchor(
            document=document,
            lock_mode=response.get("ObjectLockMode"),
            retain_until=retain_until.isoformat() if retain_until else None,
            legal_hold=response.get("ObjectLockLegalHoldStatus") == "ON",
            last_modified=response.get("LastModified"),
        )


def _anchor_document_problems(
    fetched: _FetchedAnchor,
    anchor: dict[str, Any],
    manifest: Manifest,
    bundle_hash: bytes | None,
    previous: tuple[int, bytes] | None,
) -> tuple[list[str], dict[str, Any]]:
    """What is wrong with an anchor object, measured against the manifest and the bundle, and
    the document as parsed."""
    if len(fetched.document) > MAX_ANCHOR_BYTES:
        return [f"the object is larger than {MAX_ANCHOR_BYTES} bytes"], {}
    if hashlib.sha256(fetched.document).digest() != anchor["document_digest"]:
        return ["the object's SHA-256 differs from the manifest's document_digest"], {}
    try:
        document = parse_json_object(fetched.document)
    except ValueError as exc:
        return [f"the object is not an anchor document: {exc}"], {}
    if document.get("format") != ANCHOR_FORMAT or document.get("format_version") != FORMAT_VERSION:
        return [f"the object is not an {ANCHOR_FORMAT} v{FORMAT_VERSION} document"], document
    problems = []
    seq_to = anchor["seq_to"]
    if document.get("seq_to") != seq_to:
        problems.append(f"the document's seq_to is {document.get('seq_to')!r}")
    try:
        head_hash = hashing.parse_hex_digest(document.get("head_hash"))
    except hashing.FieldError as exc:
        return problems + [f"the document's head_hash {exc}"], document
    if bundle_hash is not None and head_hash != bundle_hash:
        problems.append(f"the document's head_hash differs from the bundle's event_hash at seq {seq_to}")
    if document.get("database") != manifest.database:
        problems.append("the document names another database than the manifest")
    expected_id = cadence_id(
        manifest.database["system_identifier"], manifest.database["database_name"], seq_to, head_hash.hex()
    )
    if document.get("cadence_id") != expected_id or anchor["cadence_id"].hex() != expected_id:
        problems.append("the cadence_id does not match the anchored database, seq_to and head_hash")
    seq_from = document.get("seq_from")
    if type(seq_from) is not int or document.get("event_count") != seq_to - seq_from + 1:
        problems.append("the document's seq_from and event_count do not agree with its seq_to")
    elif (
        previous is not None
        and seq_from == previous[0] + 1
        and document.get("prev_anchor_digest") != previous[1].hex()
    ):
        problems.append(f"prev_anchor_digest is not the digest of the anchor at seq {previous[0]}")
    return problems, document


def _check_anchors(
    manifest: Manifest,
    chain: _ChainState,
    report: Report,
    fetcher: _AnchorFetcher | None,
    require: bool,
) -> None:
    """Each anchor of the manifest against the bundle and, when fetcher is given, its WORM object."""

    def caveat(message: str, seq: int | None = None) -> None:
        if require:
            report.fail("anchors", message, seq=seq)
        else:
            report.warnings.append(message if seq is None else f"anchor at seq {seq}: {message}")

    if not manifest.anchors and manifest.expected_lines:
        caveat("the manifest lists no anchors: the bundle proves only its internal consistency")
    previous: tuple[int, bytes] | None = None
    for anchor in sorted(manifest.anchors, key=lambda a: a["seq_to"]):
        seq = anchor["seq_to"]
        bundle_hash = chain.hashes_at.get(seq)
        if bundle_hash is not None and bundle_hash != anchor["head_hash"]:
            report.fail(
                "anchors", "the manifest's head_hash differs from the bundle's event_hash here", seq=seq
            )
        where = f"s3://{anchor['bucket']}/{anchor['key']}"
        if anchor["version_id"] is not None:
            where += f" (version {anchor['version_id']})"
        result = AnchorResult(seq_to=seq, location=where, status="skipped", detail="--no-anchors")
        report.anchors.append(result)
        if fetcher is None:
            continue
        try:
            fetched = fetcher.fetch(anchor)
        except LookupError as exc:
            result.status, result.detail = "failed", str(exc)
            report.fail("anchors", f"{where}: {exc}", seq=seq)
            continue
        if isinstance(fetched, str):
            result.status, result.detail = "unreachable", fetched
            caveat(f"not checked: {fetched}", seq)
            continue
        result.lock_mode, result.retain_until = fetched.lock_mode, fetched.retain_until
        problems, document = _anchor_document_problems(fetched, anchor, manifest, bundle_hash, previous)
        previous = (seq, anchor["document_digest"])
        if problems:
            result.status, result.detail = "failed", "; ".join(problems)
            for problem in problems:
                report.fail("anchors", f"{where}: {problem}", seq=seq)
            continue
        result.status = "verified"
        if fetched.lock_mode is None and not fetched.legal_hold:
            caveat(
                "S3 reports no Object Lock retention or legal hold on the anchor object: it is not WORM "
                "(or you lack s3:GetObjectRetention and s3:GetObjectLegalHold, without which S3 hides them)",
                seq,
            )
        if anchor["version_id"] is None:
            report.warnings.append(
                f"anchor at seq {seq}: the manifest has no version_id; the latest version was read"
            )
        _warn_if_late(document, fetched, report, seq)
    _check_binding(manifest, chain, report, caveat)


def _check_binding(
    manifest: Manifest, chain: _ChainState, report: Report, caveat: Callable[[str], None]
) -> None:
    """How many matched events are bound to a verified anchor at or after them by an unbroken run of
    lines whose hashes all verify."""
    bound_per_segment: dict[int, int] = {}
    for result in report.anchors:
        if result.status == "verified" and result.seq_to in chain.bindings:
            segment, matched_before = chain.bindings[result.seq_to]
            bound_per_segment[segment] = max(bound_per_segment.get(segment, 0), matched_before)
    report.anchored = sum(bound_per_segment.values())
    unbound = report.matched - report.anchored
    if unbound and any(result.status == "verified" for result in report.anchors):
        caveat(
            f"{unbound} of {report.matched} matched events are not bound by hash to a verified anchor "
            "(they lie after the last verified anchor, or a line that does not verify lies between them "
            "and it): for these the bundle proves only its internal consistency"
        )


def _warn_if_late(document: dict[str, Any], fetched: _FetchedAnchor, report: Report, seq: int) -> None:
    try:
        created = datetime.fromisoformat(document["created_at"])
        late = (fetched.last_modified - created).total_seconds()
    except (KeyError, TypeError, ValueError):
        return
    if late > LATE_UPLOAD_WARNING_SECONDS:
        report.warnings.append(
            f"anchor at seq {seq}: the object was written {late / 3600:.1f} hours "
            "after the anchor was created"
        )


# ---------------------------------------------------------------------------- the command


def verify_bundle(
    location: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    anchors: str = "check",
    progress: bool = False,
) -> Report:
    """Verify the bundle at a folder or s3://bucket/prefix. anchors is "check", "skip" or
    "require". Raises UnusableBundle (exit 2) or BundleUnavailable (exit 3)."""
    started = time.monotonic()
    report = Report(location=location)
    client: list[Any] = []

    def s3_client() -> Any:
        if not client:
            client.append(s3.make_client(endpoint_url, region))
        return client[0]

    if location.startswith("s3://"):
        try:
            source: FolderSource | S3Source = S3Source(location, s3_client())
        except ValueError as exc:  # botocore refuses a malformed endpoint URL with ValueError
            raise UnusableBundle(f"cannot use S3 endpoint {endpoint_url!r}: {exc}") from None
    else:
        path = Path(location)
        source = FolderSource(path.parent if path.name == MANIFEST_NAME and path.is_file() else path)
        if not source.folder.is_dir():
            raise UnusableBundle(f"{location} is not a folder (a bundle is a folder or s3://bucket/prefix)")
    report.location = source.location

    manifest = load_manifest(source.read_small(MANIFEST_NAME, MAX_MANIFEST_BYTES), report)
    report.manifest = {
        name: manifest[name].hex() if isinstance(manifest[name], bytes) else manifest[name]
        for name in (
            "job_id",
            "created_at",
            "requested_by",
            "filter",
            "seq_from",
            "seq_to",
            "line_count",
            "matched_count",
            "withheld_payloads",
            "range_prev_hash",
            "database",
        )
    }
    chain = _check_data(source, manifest, report, progress)
    fetcher = None if anchors == "skip" else _AnchorFetcher(s3_client)
    _check_anchors(manifest, chain, report, fetcher, require=anchors == "require")
    report.seconds = time.monotonic() - started
    return report


def print_report(report: Report) -> None:
    m = report.manifest
    print(f"bundle    {report.location}")
    if m:
        print(
            f"export    job {m['job_id']} by {m['requested_by']} at {m['created_at']}, "
            + (f"seq {m['seq_from']}..{m['seq_to']}" if m["seq_from"] is not None else "no events")
        )
    for anchor in report.anchors:
        lock = f", {anchor.lock_mode} until {anchor.retain_until}" if anchor.lock_mode else ""
        detail = f": {anchor.detail}" if anchor.detail and anchor.status != "verified" else ""
        print(f"anchor    seq {anchor.seq_to} {anchor.status}{detail} [{anchor.location}{lock}]")
    for warning in report.warnings:
        print(f"WARNING   {warning}")
    for failure in report.failures:
        print(f"FAILED    {failure}")
    if report.failure_count > len(report.failures):
        print(f"FAILED    ... and {report.failure_count - len(report.failures)} more failures")
    s = report.summary()
    print(
        f"checked   {s['events_checked']} events: {s['matched']} matched "
        f"({s['withheld']} with withheld payload), {s['excluded']} excluded; "
        f"{report.data_bytes} bytes in {report.seconds:.2f} s"
    )
    print(
        f"anchored  {s['anchors_verified']} of {s['anchors_in_manifest']} anchors verified; "
        f"{s['anchored']} of {s['matched']} matched events bound by hash to a verified anchor"
    )
    if report.ok:
        print("RESULT    OK" + (" (with warnings)" if report.warnings else ""))
    else:
        print(f"RESULT    FAILED: {report.failure_count} problems, the first: {report.failures[0]}")


def run(args: argparse.Namespace) -> int:
    anchors = "skip" if args.no_anchors else "require" if args.require_anchors else "check"
    try:
        report = verify_bundle(
            args.bundle,
            endpoint_url=args.endpoint_url,
            region=args.region,
            anchors=anchors,
            progress=is_terminal(),
        )
    except AuditchainError as exc:
        if args.json:
            print_json({"bundle": args.bundle, "ok": False, "exit_code": exc.exit_code, "error": str(exc)})
        raise
    if args.json:
        print_json(report.as_json())
    else:
        print_report(report)
    return EXIT_OK if report.ok else EXIT_FAILED


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers,
        "verify-bundle",
        help="verify an export bundle offline (no database needed)",
        description=(
            "Verify an export bundle (a folder or s3://bucket/prefix holding manifest.json and\n"
            "events.ndjson.gz) without the database: the data object's digest, every line's place\n"
            "in the chain, every line's hash re-derived (exported events from their fields, excluded\n"
            "ones from their record's digest), every exported event against the manifest's filter,\n"
            "and the anchors that cover the range against their WORM objects when the bucket can be\n"
            "reached.\n\n"
            "exit codes: 0 all checks passed, 1 a check failed, 2 unusable bundle or arguments,\n"
            "3 S3 unreachable for the bundle itself. See docs/bundle-verification.md."
        ),
        needs_db=False,
    )
    parser.add_argument("bundle", metavar="PATH-or-S3-URL", help="bundle folder, or s3://bucket/prefix")
    s3.add_endpoint_options(parser)
    add_json_flag(parser)
    anchors = parser.add_mutually_exclusive_group()
    anchors.add_argument("--no-anchors", action="store_true", help="do not fetch anchor objects from S3")
    anchors.add_argument(
        "--require-anchors",
        action="store_true",
        help="fail unless every anchor is fetched, matches and is under Object Lock",
    )
    parser.set_defaults(func=run)
