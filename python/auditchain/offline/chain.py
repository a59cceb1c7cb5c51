"""The chain walk of `auditchain verify-bundle`: the data object streamed once, every line
re-hashed and linked to the one before, in constant memory.

Every event the filter matched is re-hashed from its own fields (formats/hashing.py) and must
satisfy the manifest's filter; every excluded event is re-hashed from the digest of its
record. Events are checked even when the data object's digest already differs from the
manifest, so that a changed event is still named by its seq.
"""

from __future__ import annotations

import functools
import gzip
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from ..formats import hashing
from ..formats.manifest import Manifest
from ..formats.strictjson import parse_json_object
from ..progress import meter
from .report import Report
from .sources import FolderSource, HashingReader, S3Source

# Longest NDJSON line read. A payload is at most 256 KiB as jsonb; even escaped twice
# (jsonb text, then a JSON string in the line) it stays far below this.
MAX_LINE_BYTES = 16 * 1024 * 1024
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
class ChainState:
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


def _check_line(number: int, raw: bytes, manifest: Manifest, report: Report, state: ChainState) -> None:
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
        hash_follows = check_event(event, prev_hash, stored_hash, manifest, report, fail)[1]
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


def check_event(
    event: dict[str, Any],
    prev_hash: bytes,
    stored_hash: bytes,
    manifest: Manifest,
    report: Report,
    fail: Callable[[str, str], None],
) -> tuple[bytes | None, bool]:
    """A matched event: its record digest (None when its fields do not form a record), and
    whether its fields hash to its event_hash."""
    report.matched += 1
    try:
        version = hashing.hash_version(event)
    except hashing.FieldError as exc:
        fail("line", str(exc))
        return None, False
    allowed = FULL_EVENT_FIELDS | _version_fields(event, version, manifest, report, fail)
    if extra := set(event) - allowed:
        fail(
            "line", f"fields {sorted(extra)} are not part of an exported event (and not covered by its hash)"
        )
    try:
        record_sha256 = hashing.record_digest(hashing.canonical_record(event))
    except hashing.FieldError as exc:
        fail("line", str(exc))
        return None, False
    for reason in manifest.export_filter.mismatches(event):
        fail("filter", f"the manifest's filter does not select this event: {reason}")
    if hashing.event_hash_from_digest(prev_hash, record_sha256) != stored_hash:
        fail("content", "the event's fields do not hash to its event_hash (a hashed field was changed)")
        return record_sha256, False
    return record_sha256, True


def _version_fields(
    event: dict[str, Any],
    version: int,
    manifest: Manifest,
    report: Report,
    fail: Callable[[str, str], None],
) -> set[str]:
    """The fields a matched line of this hash version may carry besides FULL_EVENT_FIELDS,
    having counted a withheld payload and erased fields and checked both against the manifest.

    A v2 field is present (value and salt), erased (commitment and "<field>_erased_by", the seq
    of the compliance.erasure event; the seq is not hashed, the commitment is), or for the
    payload of a withheld bundle, withheld (commitment only)."""
    if version == 1:
        withheld = "payload" not in event
        erased: list[str] = []
        fields = {"payload_sha256" if withheld else "payload"}
    else:
        fields = {"hash_version"}
        erased = [name for name in ("payload", "actor") if f"{name}_erased_by" in event]
        for name in ("payload", "actor"):
            if name in erased:
                fields |= {f"{name}_commitment", f"{name}_erased_by"}
                by, seq = event[f"{name}_erased_by"], event.get("seq")
                if type(by) is not int or type(seq) is not int or by <= seq:
                    fail("line", f"{name}_erased_by is {by!r}, not the seq of a later erasure event")
                else:
                    report.erasure_seqs.add(by)
                if name in event:
                    fail("line", f"the {name} is marked erased but is present")
            elif name == "payload" and "payload" not in event:
                fields.add("payload_commitment")
            else:
                fields |= {name, f"{name}_salt"}
                if name == "actor" and "actor" not in event:
                    fail("line", "the actor is missing without an erasure mark (a value was removed)")
        withheld = "payload" not in erased and "payload" not in event
    report.withheld += withheld
    report.erased += bool(erased)
    if "payload" not in erased and withheld != manifest["withheld_payloads"]:
        state = "withheld" if withheld else "present"
        fail(
            "line",
            f"the payload is {state} but the manifest says withheld_payloads={manifest['withheld_payloads']}",
        )
    return fields


def stream_data(
    source: FolderSource | S3Source,
    manifest: Manifest,
    report: Report,
    progress: bool,
    check_line: Callable[[int, bytes], bool],
) -> HashingReader:
    """Stream the data object once, line by line, through check_line (which returns False to stop
    reading), counting lines in report.lines; returns the reader that hashed every byte."""
    bar = meter("verify-bundle", unit="events", total=manifest.expected_lines, enabled=progress)
    raw = source.open_stream(manifest["data_object"])
    reader = HashingReader(raw, source)
    try:
        with gzip.GzipFile(fileobj=reader, mode="rb") as stream:
            for number, line in _read_lines(stream, report):
                if not check_line(number, line):
                    break
                report.lines = number
                if number % 4096 == 0:
                    bar.update(number - bar.n)
        reader.drain()
    finally:
        bar.close()
        raw.close()
    return reader


def check_digest(reader: HashingReader, manifest: Manifest, report: Report) -> None:
    """The data object's size and SHA-256 against the manifest's."""
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


def check_data(
    source: FolderSource | S3Source, manifest: Manifest, report: Report, progress: bool
) -> ChainState:
    """Stream the data object once; returns the state at its end (hashes at anchored seqs)."""
    state = ChainState(
        prev_hash=manifest["range_prev_hash"],
        hashes_at={a["seq_to"]: None for a in manifest.anchors},
    )
    expected = manifest.expected_lines

    def check_line(number: int, line: bytes) -> bool:
        if number > expected:
            report.fail(
                "data",
                f"line {number} lies beyond the manifest's range (it has {expected} lines); reading stopped",
                line=number,
            )
            return False
        _check_line(number, line, manifest, report, state)
        return True

    reader = stream_data(source, manifest, report, progress, check_line)
    if report.lines < expected:
        missing_from = manifest["seq_from"] + report.lines
        report.fail(
            "data",
            f"the data ends after {report.lines} lines; seq {missing_from}..{manifest['seq_to']} are missing",
            seq=missing_from,
        )
    check_digest(reader, manifest, report)
    if report.lines == expected and report.matched != manifest["matched_count"]:
        report.fail(
            "manifest",
            f"matched_count is {manifest['matched_count']} but the data holds {report.matched} "
            "matched events",
        )
    return state
