"""`auditchain verify-bundle`: bundles written here from drained test databases, and bundles
written by `auditchain export run` with anchors uploaded by `auditchain anchor`, verify; one
changed byte in an event is named by its seq; hostile input ends in exit 1 or 2 with a
message, never a traceback; anchors are checked against WORM objects on a loopback S3."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import psycopg
import pytest
from jsonschema import Draft202012Validator
from psycopg import sql
from psycopg.conninfo import make_conninfo
from pytest_postgresql.janitor import DatabaseJanitor

import clihelpers
from auditchain.cli import main
from auditchain.errors import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from auditchain.formats import hashing, schemas
from auditchain.formats import manifest as manifest_format
from auditchain.formats.export_filter import canonical_instant, from_manifest
from auditchain.offline.bundle import verify_bundle
from auditchain.offline.chain import MAX_LINE_BYTES
from auditchain.offline.report import Report
from auditchain.offline.sources import UnusableBundle
from awsfake import free_port
from test_hashing import drain_all, emit_odd_events, exported_events

REPO = Path(__file__).resolve().parents[2]
DATA = "events.ndjson.gz"
FULL_FIELDS = ("seq", "event_id", "occurred_at", "recorded_at", "tenant_id", "event_type", "actor")
# A selection by seq cannot be written as a filter. This filter selects every event (emit
# refuses occurred_at before 1970), yet it is not the empty filter, so a bundle under it may
# show excluded lines: an excluded line carries nothing to read against a filter.
SEQ_SELECTION = {"from": "1970-01-01T00:00:00.000000Z"}
# Seq 1 and the even seqs: a range starts at a selected event.
ODD_SEQS_EXCLUDED = {"matches": lambda e: e["seq"] == 1 or e["seq"] % 2 == 0, "export_filter": SEQ_SELECTION}


# ---------------------------------------------------------------------------- writing bundles


def emit_events(conn: psycopg.Connection, count: int) -> None:
    """count varied events across tenants (one of them NULL), drained into the chain."""
    conn.execute(
        """SELECT compliance.emit(
                      'data.record_' || (ARRAY['read', 'updated', 'deleted'])[1 + i %% 3],
                      'user-' || (i %% 97) || '@example.com',
                      jsonb_build_object(
                          'i', i, 'amount', (i %% 1000) / 100.0, 'note', repeat('x', i %% 40),
                          'nested', jsonb_build_object('ok', i %% 2 = 0,
                                                       'list', jsonb_build_array(i, 'two', null))),
                      (ARRAY['acme', 'globex', NULL, 'Zürich-支店'])[1 + i %% 4])
             FROM generate_series(1, %s) AS i""",
        (count,),
    )
    drain_all(conn)


def database_identity(conn: psycopg.Connection) -> dict[str, str]:
    row = conn.execute(
        "SELECT system_identifier::text, current_database() FROM pg_control_system()"
    ).fetchone()
    return {"system_identifier": row[0], "database_name": row[1]}


def encode_line(line: dict) -> bytes:
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def write_bundle(
    conn: psycopg.Connection,
    folder: Path,
    *,
    seq_from: int = 1,
    seq_to: int | None = None,
    matches: Callable[[dict], bool] = lambda event: True,
    export_filter: dict | None = None,
    withhold: bool = False,
    anchors: Iterable[dict] = (),
) -> dict:
    """Write a bundle for [seq_from, seq_to] of the chain (hash format v2 events); returns its
    manifest (format v3).
    export_filter (default {}) is what the manifest says, in the database's normalised form;
    matches decides each line."""
    folder.mkdir(parents=True, exist_ok=True)
    if seq_to is None:
        seq_to = conn.execute("SELECT max(seq) FROM compliance.audit_events").fetchone()[0]
    lines = matched = 0
    range_prev_hash = None
    with gzip.open(folder / DATA, "wb") as out:
        for event in exported_events(conn, seq_from, seq_to):
            range_prev_hash = range_prev_hash or event["prev_hash"]
            if matches(event):
                line = {"seq": event["seq"], "hash_version": 2}
                line |= {name: event[name] for name in FULL_FIELDS}
                line["actor_salt"] = event["actor_salt"]
                if withhold:
                    line["payload_commitment"] = event["payload_commitment"]
                else:
                    line |= {"payload": event["payload"], "payload_salt": event["payload_salt"]}
                line |= {"prev_hash": event["prev_hash"], "event_hash": event["event_hash"]}
                matched += 1
            else:
                line = {
                    "seq": event["seq"],
                    "prev_hash": event["prev_hash"],
                    "record_sha256": event["record_sha256"],
                    "event_hash": event["event_hash"],
                    "excluded": True,
                }
            out.write(encode_line(line))
            lines += 1
    manifest = {
        "format": "auditchain-export",
        "format_version": 3,
        "hash_version": 2,
        "job_id": "0190f5b2-0000-7000-8000-000000000001",
        "filter": (export_filter or {}) | {"withhold_payloads": withhold},
        "requested_by": "auditor@example.com",
        "created_at": "2026-11-28T12:00:00.000000Z",
        "seq_from": seq_from if lines else None,
        "seq_to": seq_to if lines else None,
        "range_prev_hash": range_prev_hash,
        "line_count": lines,
        "matched_count": matched,
        "withheld_payloads": withhold,
        "data_object": DATA,
        "database": database_identity(conn),
        "anchors": list(anchors),
    }
    seal(folder, manifest)
    return manifest


def seal(folder: Path, manifest: dict) -> None:
    """Write manifest.json with the data object's current digest and size."""
    data = (folder / DATA).read_bytes()
    manifest |= {"data_sha256": hashlib.sha256(data).hexdigest(), "data_bytes": len(data)}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def rewrite_data(folder: Path, change: Callable[[bytes], bytes], *, reseal: bool = False) -> None:
    """Change the uncompressed NDJSON and compress it again; reseal also updates the manifest."""
    (folder / DATA).write_bytes(gzip.compress(change(gzip.decompress((folder / DATA).read_bytes())), 1))
    if reseal:
        seal(folder, json.loads((folder / "manifest.json").read_text()))


def edit_manifest(folder: Path, change: Callable[[dict], object]) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def line_span(data: bytes, seq_from: int, seq: int) -> tuple[int, int]:
    """Start and end (before the newline) of the line of seq in uncompressed NDJSON."""
    start = 0
    for _ in range(seq - seq_from):
        start = data.index(b"\n", start) + 1
    return start, data.index(b"\n", start)


def replace_in_line(seq: int, old: bytes, new: bytes) -> Callable[[bytes], bytes]:
    """A change that replaces the first `old` inside the line of seq with `new`."""

    def change(data: bytes) -> bytes:
        start, end = line_span(data, 1, seq)
        at = data.index(old, start, end)
        return data[:at] + new + data[at + len(old) :]

    return change


def change_byte_after(seq: int, marker: bytes) -> Callable[[bytes], bytes]:
    """A change of the one byte that follows `marker` in the line of seq (to "0", or "1" if it was "0")."""

    def change(data: bytes) -> bytes:
        start, end = line_span(data, 1, seq)
        at = data.index(marker, start, end) + len(marker)
        return data[:at] + (b"1" if data[at : at + 1] == b"0" else b"0") + data[at + 1 :]

    return change


# ---------------------------------------------------------------------------- running the verifier


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`auditchain verify-bundle ARGV` in-process."""
    return clihelpers.run_cli(capsys, "verify-bundle", *argv)


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code, out, _ = run_cli(capsys, *argv, "--json")
    return code, json.loads(out)


def event_failure_seqs(report) -> list[int]:
    return [f.seq for f in report.failures if f.seq is not None]


@pytest.fixture
def chain(conn: psycopg.Connection) -> psycopg.Connection:
    """A test database holding 15 events with odd text followed by 185 varied ones."""
    emit_odd_events(conn)
    emit_events(conn, 185)
    return conn


# ---------------------------------------------------------------------------- bundles that verify


def test_a_bundle_of_the_whole_chain_verifies(chain, tmp_path, capsys):
    write_bundle(chain, tmp_path)
    code, out, err = run_cli(capsys, str(tmp_path), "--no-anchors")
    assert code == 0, out
    assert "checked   200 events: 200 matched (0 with withheld payload), 0 excluded" in out
    assert out.rstrip().endswith("RESULT    OK (with warnings)")
    assert "WARNING   the manifest lists no anchors: the bundle proves only its internal consistency" in out
    assert err == ""


def write_acme_bundle(conn: psycopg.Connection, folder: Path) -> dict:
    """The bundle of filter {"tenant_id": "acme"}: from the first to the last acme event."""
    first, last = conn.execute(
        "SELECT min(seq), max(seq) FROM compliance.audit_events WHERE tenant_id = 'acme'"
    ).fetchone()
    return write_bundle(
        conn,
        folder,
        seq_from=first,
        seq_to=last,
        matches=lambda e: e["tenant_id"] == "acme",
        export_filter={"tenant_id": "acme"},
    )


def test_a_filtered_bundle_verifies_with_the_excluded_events_as_hashes_only(chain, tmp_path, capsys):
    manifest = write_acme_bundle(chain, tmp_path)
    code, report = run_json(capsys, str(tmp_path), "--no-anchors")
    assert code == 0, report["failures"]
    summary = report["summary"]
    assert summary["events_checked"] == manifest["line_count"]
    assert summary["matched"] == manifest["matched_count"] > 0
    assert summary["excluded"] == manifest["line_count"] - summary["matched"] > 0
    assert report["ok"] is True and report["exit_code"] == 0


def test_a_withheld_payload_verifies_from_its_digest_and_a_changed_digest_is_named(chain, tmp_path, capsys):
    write_bundle(chain, tmp_path, withhold=True)
    code, report = run_json(capsys, str(tmp_path), "--no-anchors")
    assert (code, report["summary"]["withheld"]) == (0, 200)

    rewrite_data(tmp_path, change_byte_after(77, b'"payload_commitment":"'), reseal=True)
    code, report = run_json(capsys, str(tmp_path), "--no-anchors")
    assert code == 1
    assert report["failures"][0]["seq"] == 77


def test_an_empty_bundle_verifies(conn, tmp_path, capsys):
    manifest = write_bundle(conn, tmp_path, seq_to=0)
    assert (manifest["line_count"], manifest["seq_from"]) == (0, None)
    code, report = run_json(capsys, str(tmp_path))
    assert code == 0, report
    assert report["summary"]["events_checked"] == 0 and report["warnings"] == []


def test_a_bundle_in_s3_verifies_and_an_unreachable_endpoint_exits_3(
    chain, tmp_path, capsys, endpoint_url, bucket_name
):
    write_bundle(chain, tmp_path)
    s3 = boto3.client("s3", endpoint_url=endpoint_url)
    s3.create_bucket(Bucket=bucket_name)
    for name in ("manifest.json", DATA):
        s3.upload_file(str(tmp_path / name), bucket_name, f"exports/job-1/{name}")
    url = f"s3://{bucket_name}/exports/job-1"
    code, report = run_json(capsys, url, "--endpoint-url", endpoint_url, "--no-anchors")
    assert (code, report["bundle"], report["summary"]["matched"]) == (0, url + "/", 200)

    code, out, err = run_cli(capsys, f"s3://{bucket_name}/exports/job-2", "--endpoint-url", endpoint_url)
    assert code == EXIT_USAGE
    assert f"s3://{bucket_name}/exports/job-2/manifest.json does not exist (NoSuchKey)" in err

    code, out, err = run_cli(capsys, url, "--endpoint-url", f"http://127.0.0.1:{free_port()}")
    assert code == EXIT_UNAVAILABLE
    assert "cannot reach S3" in err and "Traceback" not in err


# ---------------------------------------------------------------------------- tampering


@pytest.fixture(scope="module")
def big_bundle(tmp_path_factory, postgresql_noproc) -> Path:
    """A 50,000-event bundle (built once for the module, from its own scratch database)."""
    folder = tmp_path_factory.mktemp("big") / "bundle"
    dbname = f"auditchain_big_bundle_{os.getpid()}"
    janitor = DatabaseJanitor(
        user=postgresql_noproc.user,
        host=postgresql_noproc.host,
        port=postgresql_noproc.port,
        dbname=dbname,
        template_dbname=postgresql_noproc.template_dbname,
        maintenance_dbname=postgresql_noproc.maintenance_dbname,
    )
    with janitor:
        dsn = make_conninfo(
            host=postgresql_noproc.host,
            port=postgresql_noproc.port,
            user=postgresql_noproc.user,
            dbname=dbname,
        )
        with psycopg.connect(dsn, autocommit=True) as conn:
            emit_events(conn, 50_000)
            write_bundle(conn, folder)
    return folder


def copy_bundle(source: Path, dest: Path) -> Path:
    dest.mkdir()
    for name in ("manifest.json", DATA):
        (dest / name).write_bytes((source / name).read_bytes())
    return dest


@pytest.mark.slow
def test_a_bundle_of_50000_events_verifies(big_bundle, capsys):
    code, report = run_json(capsys, str(big_bundle), "--no-anchors")
    assert code == 0, report["failures"]
    assert report["summary"]["events_checked"] == report["summary"]["matched"] == 50_000


@pytest.mark.slow
@pytest.mark.parametrize(
    ("seq", "marker"),
    [
        (12_345, b'amount\\": '),  # in the payload text
        (20_001, b'"actor":"'),
        (31_000, b'"event_hash":"'),
        (40_404, b'"seq":4040'),
        (45_000, b'"occurred_at":"'),
        (49_999, b'"prev_hash":"'),
    ],
    ids=["payload", "actor", "event_hash", "seq", "occurred_at", "prev_hash"],
)
def test_one_changed_byte_in_an_event_of_50000_is_named_by_its_seq(big_bundle, tmp_path, seq, marker):
    folder = copy_bundle(big_bundle, tmp_path / "bundle")
    rewrite_data(folder, change_byte_after(seq, marker))
    report = verify_bundle(str(folder), anchors="skip")
    assert not report.ok
    assert event_failure_seqs(report)[0] == seq, [str(f) for f in report.failures]
    assert any(f.check == "digest" and "SHA-256" in f.message for f in report.failures)

    # Also when the forger recomputes the data digest in the manifest: the event is still named.
    rewrite_data(folder, lambda data: data, reseal=True)
    report = verify_bundle(str(folder), anchors="skip")
    assert event_failure_seqs(report)[0] == seq and not any(f.check == "digest" for f in report.failures)


def test_any_single_byte_change_in_an_event_line_is_named_by_its_seq(conn, tmp_path):
    emit_events(conn, 40)
    write_bundle(conn, tmp_path / "original")
    original = gzip.decompress((tmp_path / "original" / DATA).read_bytes())
    rng = random.Random(20261128)
    for trial in range(60):
        seq = rng.randint(1, 40)
        start, end = line_span(original, 1, seq)
        at = rng.randrange(start, end)
        byte = rng.choice([b for b in range(256) if b != original[at]])
        folder = copy_bundle(tmp_path / "original", tmp_path / f"trial{trial}")
        changed = original[:at] + bytes([byte]) + original[at + 1 :]
        rewrite_data(folder, lambda data, changed=changed: changed, reseal=True)
        report = verify_bundle(str(folder), anchors="skip")
        detail = f"seq {seq}, byte {original[at - 8 : at + 8]!r}[8] -> {byte:#x}"
        assert not report.ok, detail
        assert event_failure_seqs(report)[0] == seq, (detail, [str(f) for f in report.failures])


@pytest.mark.parametrize(
    ("change", "first_seq", "words"),
    [
        (
            lambda lines: lines[:9] + [lines[10], lines[9]] + lines[11:],
            10,
            "carries seq 11 where seq 10 belongs",
        ),
        (lambda lines: lines[:20] + [lines[19]] + lines[21:], 21, "carries seq 20 where seq 21 belongs"),
        (lambda lines: lines[:30] + lines[31:], 31, "carries seq 32 where seq 31 belongs"),
        (lambda lines: lines[:-1], 40, "the data ends after 39 lines; seq 40..40 are missing"),
        (lambda lines: lines + [lines[-1]], None, "line 41 lies beyond the manifest's range"),
    ],
    ids=["swapped", "duplicated", "dropped", "last-dropped", "appended"],
)
def test_reordered_duplicated_and_missing_lines_are_named(conn, tmp_path, change, first_seq, words):
    emit_events(conn, 40)
    write_bundle(conn, tmp_path)
    rewrite_data(tmp_path, lambda data: b"".join(change(data.splitlines(keepends=True))), reseal=True)
    report = verify_bundle(str(tmp_path), anchors="skip")
    assert not report.ok
    assert report.failures[0].seq == first_seq
    assert words in str(report.failures[0])


EXCLUDED_HASH_MISMATCH = (
    "the excluded event's prev_hash and record_sha256 do not hash to its event_hash (a hash was changed)"
)


def test_a_changed_hash_of_an_excluded_event_is_named(chain, tmp_path):
    write_bundle(chain, tmp_path, **ODD_SEQS_EXCLUDED)
    rewrite_data(tmp_path, change_byte_after(101, b'"event_hash":"'), reseal=True)
    report = verify_bundle(str(tmp_path), anchors="skip")
    assert [str(f) for f in report.failures] == [
        f"content at seq 101, line 101: {EXCLUDED_HASH_MISMATCH}",
        "link at seq 102, line 102: prev_hash is not the event_hash of seq 101 (the chain is broken here)",
    ]


def test_an_excluded_line_with_a_wrong_record_digest_is_named(chain, tmp_path):
    write_bundle(chain, tmp_path, **ODD_SEQS_EXCLUDED)
    rewrite_data(tmp_path, change_byte_after(77, b'"record_sha256":"'), reseal=True)
    report = verify_bundle(str(tmp_path), anchors="skip")
    assert [str(f) for f in report.failures] == [f"content at seq 77, line 77: {EXCLUDED_HASH_MISMATCH}"]


def test_an_excluded_line_without_its_record_digest_is_refused(chain, tmp_path):
    write_bundle(chain, tmp_path, matches=lambda e: e["seq"] != 50, export_filter=SEQ_SELECTION)

    def drop_digest(data: bytes) -> bytes:
        start, end = line_span(data, 1, 50)
        line = json.loads(data[start:end])
        del line["record_sha256"]
        return data[:start] + encode_line(line)[:-1] + data[end:]

    rewrite_data(tmp_path, drop_digest, reseal=True)
    report = verify_bundle(str(tmp_path), anchors="skip")
    assert [str(f) for f in report.failures] == [
        "line at seq 50, line 50: record_sha256: missing "
        "(an excluded event carries the SHA-256 of its record)"
    ]


def test_an_excluded_line_carrying_event_fields_is_refused(chain, tmp_path):
    write_bundle(chain, tmp_path, matches=lambda e: e["seq"] != 50, export_filter=SEQ_SELECTION)
    rewrite_data(
        tmp_path, replace_in_line(50, b'"excluded":true', b'"excluded":true,"actor":"x"'), reseal=True
    )
    report = verify_bundle(str(tmp_path), anchors="skip")
    assert [str(f) for f in report.failures] == [
        "line at seq 50, line 50: an excluded event may carry only seq, prev_hash, record_sha256 and "
        "event_hash, not ['actor']"
    ]


def test_a_field_not_covered_by_the_hash_is_refused(chain, tmp_path):
    write_bundle(chain, tmp_path)
    rewrite_data(tmp_path, replace_in_line(7, b'"seq":7,', b'"seq":7,"approved_by":"cfo",'), reseal=True)
    report = verify_bundle(str(tmp_path), anchors="skip")
    assert [f.seq for f in report.failures] == [7]
    assert "['approved_by'] are not part of an exported event" in report.failures[0].message


def test_a_data_digest_mismatch_alone_fails(chain, tmp_path, capsys):
    write_bundle(chain, tmp_path)
    edit_manifest(tmp_path, lambda m: m.update(data_sha256="0" * 64))
    code, out, _ = run_cli(capsys, str(tmp_path), "--no-anchors")
    assert code == 1
    assert "FAILED    digest: the data object's SHA-256 is " in out


# ---------------------------------------------------------------------------- hostile input


def gz(data: bytes) -> bytes:
    return gzip.compress(data, 1)


def first_line_with(conn: psycopg.Connection) -> Callable[[dict], bytes]:
    """NDJSON for a one-event bundle whose single line is the real line changed by `change`."""
    (event,) = exported_events(conn, 1, 1)
    line = {name: event[name] for name in FULL_FIELDS} | {
        "payload": event["payload"],
        "prev_hash": event["prev_hash"],
        "event_hash": event["event_hash"],
    }
    # ASCII escapes, so that a lone surrogate can be written as "\ud800".
    return lambda change: json.dumps({**line, **change}).encode("ascii") + b"\n"


HOSTILE_DATA = {
    "truncated gzip": (lambda good: good[:-30], "the gzip stream is truncated after"),
    "not gzip at all": (lambda good: b"PK\x03\x04 not a gzip file" * 10, "the gzip stream is corrupt"),
    "garbage after the gzip stream": (lambda good: good + b"garbage!", "the gzip stream is corrupt"),
    "empty line": (lambda good: gz(b"\n"), "malformed JSON"),
    "malformed JSON": (lambda good: gz(b'{"seq": 1,\n'), "malformed JSON"),
    "a JSON array": (lambda good: gz(b"[1, 2]\n"), "a JSON list where an object was expected"),
    "invalid UTF-8": (lambda good: gz(b'{"seq": "\xff\xfe"}\n'), "not valid UTF-8"),
    "duplicate key": (lambda good: gz(b'{"seq": 1, "seq": 1}\n'), "duplicate key 'seq'"),
    "NaN": (lambda good: gz(b'{"seq": NaN}\n'), "NaN is not JSON"),
    "deep nesting": (lambda good: gz(b"[" * 200_000 + b"]" * 200_000 + b"\n"), "nested too deeply"),
    "a 5000-digit number": (lambda good: gz(b'{"seq": ' + b"9" * 5000 + b"}\n"), "a number of more than"),
    "an oversized line": (
        lambda good: gz(b'{"seq": 1, "actor": "' + b"a" * (MAX_LINE_BYTES + 10) + b'"}\n'),
        f"line 1 is longer than {MAX_LINE_BYTES} bytes; reading stopped",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE_DATA))
def test_hostile_data_fails_with_a_message_not_a_traceback(conn, tmp_path, capsys, case):
    emit_events(conn, 1)
    write_bundle(conn, tmp_path)
    make, words = HOSTILE_DATA[case]
    (tmp_path / DATA).write_bytes(make((tmp_path / DATA).read_bytes()))
    seal(tmp_path, json.loads((tmp_path / "manifest.json").read_text()))
    code, out, err = run_cli(capsys, str(tmp_path), "--no-anchors")
    assert code == 1, out
    assert words in out, out
    assert err == ""


HOSTILE_FIELDS = {
    "seq as a string": ({"seq": "1"}, "carries seq '1' where seq 1 belongs"),
    "seq as a boolean": ({"seq": True}, "carries seq True where seq 1 belongs"),
    "tenant as a number": ({"tenant_id": 5}, "tenant_id: is not a string"),
    "payload as an object": ({"payload": {"a": 1}}, "payload: is not a string"),
    "upper-case hash": ({"event_hash": "A" * 64}, "prev_hash or event_hash is not 64 lower-case hex digits"),
    "short hash": ({"prev_hash": "00"}, "prev_hash or event_hash is not 64 lower-case hex digits"),
    "timestamp with an offset": (
        {"occurred_at": "2026-11-28T12:00:00.000000+01:00"},
        "occurred_at: is not a timestamp",
    ),
    "lone surrogate in actor": ({"actor": "\ud800"}, "actor: contains characters with no UTF-8 encoding"),
    "excluded false": ({"excluded": False}, "excluded is False, not true"),
    "both payload forms": (
        {"payload_sha256": "0" * 64},
        "['payload_sha256'] are not part of an exported event",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE_FIELDS))
def test_fields_of_the_wrong_type_fail_with_their_name(conn, tmp_path, capsys, case):
    emit_events(conn, 1)
    write_bundle(conn, tmp_path)
    change, words = HOSTILE_FIELDS[case]
    line = first_line_with(conn)(change)
    (tmp_path / DATA).write_bytes(gz(line))
    seal(tmp_path, json.loads((tmp_path / "manifest.json").read_text()))
    code, out, err = run_cli(capsys, str(tmp_path), "--no-anchors")
    assert code == 1, out
    assert "at seq 1, line 1: " in out and words in out, out


HOSTILE_MANIFESTS = {
    "missing": (
        lambda folder: (folder / "manifest.json").unlink(),
        EXIT_USAGE,
        "manifest.json does not exist",
    ),
    "not JSON": (
        lambda folder: (folder / "manifest.json").write_text("{not json"),
        EXIT_USAGE,
        "malformed JSON",
    ),
    "a JSON array": (
        lambda folder: (folder / "manifest.json").write_text("[]"),
        EXIT_USAGE,
        "a JSON list where an object",
    ),
    "a directory": (
        lambda folder: ((folder / "manifest.json").unlink(), (folder / "manifest.json").mkdir()),
        EXIT_USAGE,
        "manifest.json is not a regular file",
    ),
    "another format": (
        lambda folder: edit_manifest(folder, lambda m: m.update(format="zip")),
        EXIT_USAGE,
        "is not an auditchain-export manifest",
    ),
    "format version 5": (
        lambda folder: edit_manifest(folder, lambda m: m.update(format_version=5)),
        EXIT_USAGE,
        "has format_version 5; this verifier reads versions 1, 2, 3, 4",
    ),
    "format version 4 without a mode": (
        lambda folder: edit_manifest(folder, lambda m: m.update(format_version=4)),
        EXIT_USAGE,
        "does not follow format v4: (top): 'mode' is a required property",
    ),
    "format version 3 with a mode": (
        lambda folder: edit_manifest(folder, lambda m: m.update(mode="range")),
        EXIT_FAILED,
        "(top): Unevaluated properties are not allowed ('mode' was unexpected): "
        "not part of manifest format v3",
    ),
    "hash version 1 in format 3": (
        lambda folder: edit_manifest(folder, lambda m: m.update(hash_version=1)),
        EXIT_USAGE,
        "has hash_version 1",
    ),
    "a field missing": (
        lambda folder: edit_manifest(folder, lambda m: m.pop("data_sha256")),
        EXIT_USAGE,
        "(top): 'data_sha256' is a required property",
    ),
    "line_count a string": (
        lambda folder: edit_manifest(folder, lambda m: m.update(line_count="3")),
        EXIT_USAGE,
        ".line_count: '3' is not of type 'integer'",
    ),
    "withheld_payloads a number": (
        lambda folder: edit_manifest(folder, lambda m: m.update(withheld_payloads=0)),
        EXIT_USAGE,
        ".withheld_payloads: 0 is not of type 'boolean'",
    ),
    "database without its name": (
        lambda folder: edit_manifest(folder, lambda m: m["database"].pop("database_name")),
        EXIT_USAGE,
        ".database: 'database_name' is a required property",
    ),
    "an anchor of the wrong shape": (
        lambda folder: edit_manifest(folder, lambda m: m.update(anchors=[{"seq_to": 1}])),
        EXIT_USAGE,
        ".anchors[0]: 'cadence_id' is a required property",
    ),
    "data_object a path": (
        lambda folder: edit_manifest(folder, lambda m: m.update(data_object="../../etc/passwd")),
        EXIT_USAGE,
        ".data_object: '../../etc/passwd' does not match",
    ),
    "data object missing": (
        lambda folder: (folder / DATA).unlink(),
        EXIT_USAGE,
        "events.ndjson.gz does not exist",
    ),
    "seq_from after seq_to": (
        lambda folder: edit_manifest(folder, lambda m: m.update(seq_from=9, seq_to=3)),
        EXIT_USAGE,
        "is not a range of seqs",
    ),
    "an extra field": (
        lambda folder: edit_manifest(folder, lambda m: m.update(approved=True)),
        EXIT_FAILED,
        "(top): Unevaluated properties are not allowed ('approved' was unexpected)",
    ),
    "line_count wrong": (
        lambda folder: edit_manifest(folder, lambda m: m.update(line_count=3)),
        EXIT_FAILED,
        "line_count 3 but the range seq_from..seq_to has 5",
    ),
    "matched_count wrong": (
        lambda folder: edit_manifest(folder, lambda m: m.update(matched_count=4)),
        EXIT_FAILED,
        "matched_count is 4 but the data holds 5",
    ),
    "range_prev_hash not genesis": (
        lambda folder: edit_manifest(folder, lambda m: m.update(range_prev_hash="1" * 64)),
        EXIT_FAILED,
        "must be 32 zero bytes",
    ),
    "job_id not a version-7 UUID": (
        lambda folder: edit_manifest(
            folder, lambda m: m.update(job_id="0190f5b2-0000-4000-8000-000000000001")
        ),
        EXIT_USAGE,
        ".job_id: '0190f5b2-0000-4000-8000-000000000001' does not match",
    ),
    "job_id in upper case": (
        lambda folder: edit_manifest(folder, lambda m: m.update(job_id=m["job_id"].upper())),
        EXIT_USAGE,
        ".job_id: '0190F5B2-0000-7000-8000-000000000001' does not match",
    ),
    "created_at with an offset": (
        lambda folder: edit_manifest(
            folder, lambda m: m.update(created_at="2026-11-28T13:00:00.000000+01:00")
        ),
        EXIT_USAGE,
        ".created_at: '2026-11-28T13:00:00.000000+01:00' does not match",
    ),
    "created_at not a date": (
        lambda folder: edit_manifest(folder, lambda m: m.update(created_at="2026-02-30T12:00:00.000000Z")),
        EXIT_USAGE,
        "field created_at is not a valid date and time",
    ),
    "a filter with an unknown key": (
        lambda folder: edit_manifest(
            folder, lambda m: m.update(filter={"tenant": "acme", "withhold_payloads": False})
        ),
        EXIT_USAGE,
        ".filter: Additional properties are not allowed ('tenant' was unexpected)",
    ),
    "a filter with a bound of the wrong type": (
        lambda folder: edit_manifest(
            folder, lambda m: m.update(filter={"from": 1700000000, "withhold_payloads": False})
        ),
        EXIT_USAGE,
        ".filter.from: 1700000000 is not of type 'string'",
    ),
    "withheld_payloads contradicting the filter": (
        lambda folder: edit_manifest(folder, lambda m: m.update(filter={"withhold_payloads": True})),
        EXIT_FAILED,
        "withheld_payloads is false but the filter's withhold_payloads is true",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE_MANIFESTS))
def test_hostile_manifests_exit_1_or_2_with_a_message(conn, tmp_path, capsys, case):
    emit_events(conn, 5)
    write_bundle(conn, tmp_path)
    damage, expected_code, words = HOSTILE_MANIFESTS[case]
    damage(tmp_path)
    code, out, err = run_cli(capsys, str(tmp_path), "--no-anchors")
    assert code == expected_code, (out, err)
    assert words in (err if code == EXIT_USAGE else out), (out, err)


def test_a_path_that_is_not_a_folder_exits_2(tmp_path, capsys):
    code, out, err = run_cli(capsys, str(tmp_path / "nowhere"))
    assert code == EXIT_USAGE
    assert (
        err
        == f"auditchain verify-bundle: {tmp_path / 'nowhere'} is not a folder (a bundle is a folder or s3://bucket/prefix)\n"
    )


def test_the_command_line_never_shows_a_traceback(conn, tmp_path):
    emit_events(conn, 3)
    write_bundle(conn, tmp_path)
    (tmp_path / DATA).write_bytes((tmp_path / DATA).read_bytes()[:-5])
    env = {**os.environ, "PYTHONPATH": str(REPO / "python")}
    for argv, code in (([str(tmp_path), "--no-anchors"], EXIT_FAILED), ([str(tmp_path / "x")], EXIT_USAGE)):
        proc = subprocess.run(
            [sys.executable, "-m", "auditchain.cli", "verify-bundle", *argv, "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert proc.returncode == code, proc.stderr
        assert "Traceback" not in proc.stderr
        assert json.loads(proc.stdout)["exit_code"] == code


# ---------------------------------------------------------------------------- the manifest's filter


FILTERS_AT_THE_EDGES = [
    {},
    {"from": "2026-01-01T24:00:00Z"},
    {"from": "2026-12-31T23:59:60Z"},
    {"from": "2026-12-31T23:59:60.5Z"},
    {"from": "2026-01-01T24:00:00.000001Z"},
    {"from": "2024-02-29T00:00:00Z"},
    {"from": "2026-02-29T00:00:00Z"},
    {"from": "0000-01-01T00:00:00Z"},
    {"from": "0001-01-01T00:00:00.5+15:59"},
    {"from": "9999-12-31T23:59:59.999999-15:59"},
    {"from": "2026-01-01T00:00:00+16:00"},
    {"from": "2026-01-01T00:00:00+01:60"},
    {"from": "2026-01-01T00:00:00"},
    {"from": "2026-01-01 00:00:00Z"},
    {"from": "2026-01-01T00:00:00.1234567Z"},
    {"from": "２026-01-01T00:00:00Z"},
    {"from": None},
    {"from": "2026-01-01T01:00:00+01:00", "to": "2026-01-01T00:00:00Z"},
    {"from": "2026-01-01T01:00:00+01:00", "to": "2026-01-01T00:00:00.000001Z"},
    {"tenant_id": "acme", "tenant_ids": ["acme"]},
    {"tenant_id": ""},
    {"tenant_id": "t" * 128},
    {"tenant_id": "t" * 129},
    {"tenant_id": "a\tb"},
    {"tenant_id": "Zürich-支店"},
    {"tenant_id": None},
    {"tenant_ids": []},
    {"tenant_ids": ["acme", "acme", "globex"]},
    {"tenant_ids": ["acme", 7]},
    {"tenant_ids": "acme"},
    {"event_types": ["data.read", "a.b"]},
    {"event_types": ["ab"]},
    {"event_types": ["Data.read"]},
    {"event_types": ["data."]},
    {"event_types": ["a." + "b" * 126]},
    {"event_types": ["a." + "b" * 127]},
    {"actor": "   "},
    {"actor": " x "},
    {"actor": "a" * 256},
    {"actor": "a" * 257},
    {"actor": ""},
    {"withhold_payloads": False},
    {"withhold_payloads": "true"},
    {"withhold_payloads": 1},
    {"tenant": "acme"},
]


def test_manifests_record_the_filter_as_the_database_normalised_it(conn):
    """Every filter the database accepts has one normalised form, which satisfies the published
    schema and which the verifier reads as the database's instants, sets and actor; a filter
    the database refuses has none."""
    manifest_id = schemas.load(manifest_format.SCHEMA)["$id"]
    normalised_filter = Draft202012Validator(
        {
            "allOf": [
                {"$ref": f"{manifest_id}#/$defs/filter"},
                {"$ref": f"{manifest_id}#/$defs/normalized_filter"},
            ]
        },
        registry=schemas.registry(),
    )
    accepted = 0
    for candidate in [*FILTERS_AT_THE_EDGES, {"actor": "line\nfeed"}, {"tenant_ids": ["b", "B", "a", "b"]}]:
        try:
            (normalised,) = conn.execute(
                "SELECT compliance.normalize_export_filter(%s::jsonb)", (json.dumps(candidate),)
            ).fetchone()
        except psycopg.errors.DatabaseError:  # AC030, or 22009 for an offset beyond ±15:59
            continue
        accepted += 1
        assert list(normalised_filter.iter_errors(normalised)) == [], candidate
        parsed = from_manifest(normalised, 2)
        for key, instant in (("from", parsed.from_instant), ("to", parsed.to_instant)):
            expected = None
            if key in candidate:
                (expected,) = conn.execute(
                    "SELECT compliance._iso_utc(%s::timestamptz)", (candidate[key],)
                ).fetchone()
            assert instant == expected, candidate
        listed = candidate.get("tenant_ids", [candidate["tenant_id"]] if "tenant_id" in candidate else None)
        assert parsed.tenants == (None if listed is None else frozenset(listed)), candidate
        assert parsed.actor == candidate.get("actor")
    assert accepted >= 15, "the edge cases include filters the database accepts"
    assert normalised_filter.is_valid({"tenant_ids": ["b", "a"], "withhold_payloads": False}), (
        "sortedness is the verifier's check, not the schema's"
    )


def seqs_where(conn: psycopg.Connection, condition: str) -> set[int]:
    query = sql.SQL("SELECT seq FROM compliance.audit_events WHERE {}").format(sql.SQL(condition))
    return {seq for (seq,) in conn.execute(query)}


def refiltered(folder: Path, export_filter: dict) -> Report:
    """The report on the bundle with its manifest's filter replaced."""
    edit_manifest(folder, lambda m: m.update(filter={"withhold_payloads": False} | export_filter))
    return verify_bundle(str(folder), anchors="skip")


def filter_failures(folder: Path, export_filter: dict) -> list[tuple[int, str]]:
    return [(f.seq, f.message) for f in refiltered(folder, export_filter).failures]


NOT_SELECTED = "the manifest's filter does not select this event: "


def test_every_matched_event_is_held_to_the_manifests_filter(chain, tmp_path):
    """from is inclusive and to exclusive, as in the database; each event the filter does not
    select is named with the reason."""
    acme = tmp_path / "acme"
    write_acme_bundle(chain, acme)
    assert filter_failures(acme, {"tenant_ids": ["acme", "initech"]}) == []
    with pytest.raises(UnusableBundle, match="is not sorted"):
        refiltered(acme, {"tenant_ids": ["initech", "acme"]})
    report = refiltered(acme, {"tenant_ids": ["globex", "initech"]})
    acme_seqs = sorted(seqs_where(chain, "tenant_id = 'acme'"))
    assert report.failure_count == len(acme_seqs)
    assert [(f.seq, f.check) for f in report.failures] == [(seq, "filter") for seq in acme_seqs[:20]]
    assert report.failures[0].message == f"{NOT_SELECTED}tenant_id 'acme' is not a tenant the filter selects"

    folder = tmp_path / "all"
    write_bundle(chain, folder)
    first, last = chain.execute(
        "SELECT compliance._iso_utc(min(occurred_at)), compliance._iso_utc(max(occurred_at))"
        "  FROM compliance.audit_events"
    ).fetchone()
    assert filter_failures(folder, {"from": first}) == []
    offset_form = {"from": first.replace("Z", "+00:00")}
    with pytest.raises(UnusableBundle, match="does not match"):
        refiltered(folder, offset_form)  # version 2 records only canonical instants
    edit_manifest(folder, lambda m: m.update(format_version=1, hash_version=1))
    assert filter_failures(folder, offset_form) == [], "version 1 recorded the bound as requested"
    edit_manifest(folder, lambda m: m.update(format_version=3, hash_version=2))
    one_us_later = canonical_instant((datetime.fromisoformat(first) + timedelta(microseconds=1)).isoformat())
    failures = filter_failures(folder, {"from": one_us_later})
    assert failures == [(1, f"{NOT_SELECTED}occurred_at is before the filter's from")]

    report = refiltered(folder, {"to": last})
    at_last = sorted(
        seqs_where(chain, "occurred_at = (SELECT max(occurred_at) FROM compliance.audit_events)")
    )
    assert report.failure_count == len(at_last)
    assert [f.seq for f in report.failures] == at_last[:20]
    assert report.failures[0].message == f"{NOT_SELECTED}occurred_at is not before the filter's to"
    one_us_later = canonical_instant((datetime.fromisoformat(last) + timedelta(microseconds=1)).isoformat())
    assert filter_failures(folder, {"to": one_us_later}) == []

    report = refiltered(folder, {"event_types": ["data.record_read", "test.odd_text"]})
    other_types = sorted(seqs_where(chain, "event_type NOT IN ('data.record_read', 'test.odd_text')"))
    assert report.failure_count == len(other_types)
    assert [f.seq for f in report.failures] == other_types[:20]
    assert report.failures[0].message.startswith(f"{NOT_SELECTED}event_type 'data.record_")
    report = refiltered(folder, {"actor": "nobody"})
    assert report.failure_count == 200
    assert report.failures[0].message == f"{NOT_SELECTED}actor is not the filter's actor"


def test_excluded_lines_that_the_manifest_rules_out_are_named(chain, tmp_path, worm, bucket_name):
    """An empty filter excludes nothing; a range starts at a selected event and ends at one or
    at an anchor the manifest lists. Nothing else is known of an excluded line."""
    anchor_at_200 = put_anchor(worm, bucket_name, anchor_document(chain, 1, 200), 200)
    cases = [
        ({}, 3, [], [(3, "filter", "the line is excluded, but the manifest's filter selects every event")]),
        (
            SEQ_SELECTION,
            1,
            [],
            [(1, "range", "the line is excluded, but a range starts at the first event its filter selects")],
        ),
        (
            SEQ_SELECTION,
            200,
            [],
            [
                (
                    200,
                    "range",
                    "the line is excluded, but a range ends at the last event its filter selects "
                    "or at an anchor the manifest lists",
                )
            ],
        ),
        (SEQ_SELECTION, 200, [anchor_at_200], []),
        (SEQ_SELECTION, 100, [], []),
    ]
    for number, (export_filter, excluded, anchors, expected) in enumerate(cases):
        folder = tmp_path / str(number)
        write_bundle(
            chain,
            folder,
            export_filter=export_filter,
            matches=lambda e, excluded=excluded: e["seq"] != excluded,
            anchors=anchors,
        )
        report = verify_bundle(str(folder), anchors="skip")
        assert [(f.seq, f.check, f.message) for f in report.failures] == expected, export_filter


# ---------------------------------------------------------------------------- anchors


def anchor_document(conn: psycopg.Connection, seq_from: int, seq_to: int, **override) -> str:
    """An anchor document of format v1 for seq_to, as jsonb text (what the uploader stores)."""
    return conn.execute(
        """
        WITH e AS (SELECT seq, event_hash FROM compliance.audit_events WHERE seq = %(seq_to)s),
             id AS (SELECT system_identifier::text AS sysid, current_database() AS dbname
                      FROM pg_control_system())
        SELECT (jsonb_build_object(
                    'format', 'auditchain-anchor',
                    'format_version', 1,
                    'cadence_id', encode(sha256(convert_to(
                        'auditchain-anchor:v1:' || id.sysid || ':' || id.dbname || ':' || e.seq
                        || ':' || encode(e.event_hash, 'hex'), 'UTF8')), 'hex'),
                    'seq_from', %(seq_from)s::bigint,
                    'seq_to', e.seq,
                    'head_hash', encode(e.event_hash, 'hex'),
                    'event_count', e.seq - %(seq_from)s + 1,
                    'prev_anchor_digest', %(prev)s::text,
                    'created_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                    'database', jsonb_build_object('system_identifier', id.sysid, 'database_name', id.dbname))
                || %(override)s::jsonb)::text
          FROM e, id
        """,
        {
            "seq_from": seq_from,
            "seq_to": seq_to,
            "prev": override.pop("prev_anchor_digest", None),
            "override": json.dumps(override),
        },
    ).fetchone()[0]


@pytest.fixture
def worm(endpoint_url, bucket_name):
    """An S3 client and an Object Lock bucket on the loopback server."""
    client = boto3.client("s3", endpoint_url=endpoint_url)
    client.create_bucket(Bucket=bucket_name, ObjectLockEnabledForBucket=True)
    return client


def put_anchor(client, bucket: str, document: str, seq_to: int, *, locked: bool = True) -> dict:
    """Upload an anchor document; returns the manifest's entry for it."""
    parsed = json.loads(document)
    key = f"anchors/{seq_to:020d}-{parsed['cadence_id']}.json"
    extra = {}
    if locked:
        extra = {
            "ObjectLockMode": "COMPLIANCE",
            "ObjectLockRetainUntilDate": datetime.now(UTC) + timedelta(days=1),
        }
    put = client.put_object(Bucket=bucket, Key=key, Body=document.encode("utf-8"), **extra)
    return {
        "cadence_id": parsed["cadence_id"],
        "seq_to": seq_to,
        "head_hash": parsed["head_hash"],
        "document_digest": hashlib.sha256(document.encode("utf-8")).hexdigest(),
        "bucket": bucket,
        "key": key,
        "version_id": put.get("VersionId"),  # none in a bucket without versioning
    }


def test_anchors_are_verified_against_their_worm_objects(
    chain, tmp_path, capsys, worm, bucket_name, endpoint_url
):
    first = anchor_document(chain, 1, 120)
    second = anchor_document(chain, 121, 200, prev_anchor_digest=hashlib.sha256(first.encode()).hexdigest())
    anchors = [put_anchor(worm, bucket_name, first, 120), put_anchor(worm, bucket_name, second, 200)]
    write_bundle(chain, tmp_path, anchors=anchors)
    code, report = run_json(capsys, str(tmp_path), "--endpoint-url", endpoint_url, "--require-anchors")
    assert code == 0, report
    assert [(a["seq_to"], a["status"], a["lock_mode"]) for a in report["anchors"]] == [
        (120, "verified", "COMPLIANCE"),
        (200, "verified", "COMPLIANCE"),
    ]
    assert report["summary"]["anchored"] == 200 and report["warnings"] == []


def test_a_manifest_that_leaves_out_an_anchor_between_two_others_fails(
    chain, tmp_path, capsys, worm, bucket_name, endpoint_url
):
    """The anchors of a range are consecutive in the database: the next anchor's seq_from and
    prev_anchor_digest show the one left out, however well each listed anchor verifies alone."""
    documents = [anchor_document(chain, 1, 80)]
    for seq_from, seq_to in ((81, 150), (151, 200)):
        digest = hashlib.sha256(documents[-1].encode()).hexdigest()
        documents.append(anchor_document(chain, seq_from, seq_to, prev_anchor_digest=digest))
    first, middle, last = (
        put_anchor(worm, bucket_name, d, s) for d, s in zip(documents, (80, 150, 200), strict=True)
    )
    write_bundle(chain, tmp_path / "all", anchors=[first, middle, last])
    code, _, _ = run_cli(capsys, str(tmp_path / "all"), "--endpoint-url", endpoint_url, "--require-anchors")
    assert code == EXIT_OK, "the three consecutive anchors verify"

    write_bundle(chain, tmp_path / "gap", anchors=[first, last])
    code, out, _ = run_cli(capsys, str(tmp_path / "gap"), "--endpoint-url", endpoint_url)
    assert code == EXIT_FAILED
    assert (
        "the anchor chain has a gap: this anchor starts at seq 151, the previous one listed ends at seq 80"
        in out
    )


def test_an_anchor_with_a_wrong_head_hash_is_caught(chain, tmp_path, capsys, worm, bucket_name, endpoint_url):
    forged = anchor_document(chain, 1, 200, head_hash="ab" * 32)
    write_bundle(chain, tmp_path, anchors=[put_anchor(worm, bucket_name, forged, 200)])
    code, out, _ = run_cli(capsys, str(tmp_path), "--endpoint-url", endpoint_url)
    assert code == EXIT_FAILED
    # A forged head no longer matches the cadence_id the document was written under.
    assert "its cadence_id does not match its database, seq_to and head_hash" in out
    assert "the manifest's head_hash differs from the bundle's event_hash here" in out


def test_an_anchor_object_that_differs_from_its_digest_is_caught(
    chain, tmp_path, capsys, worm, bucket_name, endpoint_url
):
    entry = put_anchor(worm, bucket_name, anchor_document(chain, 1, 200), 200)
    write_bundle(chain, tmp_path, anchors=[entry | {"document_digest": "0" * 64}])
    code, out, _ = run_cli(capsys, str(tmp_path), "--endpoint-url", endpoint_url)
    assert code == 1
    assert "the object's SHA-256 differs from the manifest's document_digest" in out


def test_a_missing_anchor_object_is_a_failure(chain, tmp_path, capsys, worm, bucket_name, endpoint_url):
    entry = put_anchor(worm, bucket_name, anchor_document(chain, 1, 200), 200)
    write_bundle(chain, tmp_path, anchors=[entry | {"key": "anchors/elsewhere.json", "version_id": None}])
    code, out, _ = run_cli(capsys, str(tmp_path), "--endpoint-url", endpoint_url)
    assert code == 1
    assert "the bucket holds no such object (NoSuchKey)" in out


def test_an_unreachable_anchor_is_a_warning_and_a_failure_when_anchors_are_required(
    chain, tmp_path, capsys, worm, bucket_name, endpoint_url
):
    write_bundle(
        chain, tmp_path, anchors=[put_anchor(worm, bucket_name, anchor_document(chain, 1, 200), 200)]
    )
    closed = f"http://127.0.0.1:{free_port()}"
    code, report = run_json(capsys, str(tmp_path), "--endpoint-url", closed)
    assert code == 0
    assert report["anchors"][0]["status"] == "unreachable"
    assert report["summary"]["anchors_checked"] == 0 and report["summary"]["anchored"] == 0
    assert report["warnings"][0].startswith(
        f"anchor at seq 200: not checked: cannot reach bucket '{bucket_name}'"
    )

    code, report = run_json(capsys, str(tmp_path), "--endpoint-url", closed, "--require-anchors")
    assert code == 1
    assert report["failures"][0]["check"] == "anchors" and report["failures"][0]["seq"] == 200


def test_no_anchors_skips_the_bucket_but_still_checks_the_manifest_against_the_bundle(
    chain, tmp_path, capsys, worm, bucket_name
):
    entry = put_anchor(worm, bucket_name, anchor_document(chain, 1, 200), 200)
    write_bundle(chain, tmp_path, anchors=[entry])
    code, report = run_json(capsys, str(tmp_path), "--endpoint-url", "http://127.0.0.1:1", "--no-anchors")
    assert (code, report["anchors"][0]["status"]) == (0, "skipped")

    edit_manifest(tmp_path, lambda m: m["anchors"][0].update(head_hash="cd" * 32))
    code, report = run_json(capsys, str(tmp_path), "--no-anchors")
    assert code == 1
    assert report["failures"][0]["text"] == (
        "anchors at seq 200: the manifest's head_hash differs from the bundle's event_hash here"
    )


def test_an_unlocked_anchor_object_is_not_worm(chain, tmp_path, capsys, endpoint_url, bucket_name):
    client = boto3.client("s3", endpoint_url=endpoint_url)
    client.create_bucket(Bucket=bucket_name)
    write_bundle(
        chain,
        tmp_path,
        anchors=[put_anchor(client, bucket_name, anchor_document(chain, 1, 200), 200, locked=False)],
    )
    code, report = run_json(capsys, str(tmp_path), "--endpoint-url", endpoint_url)
    assert code == 0
    assert "it is not WORM" in report["warnings"][0]
    code, report = run_json(capsys, str(tmp_path), "--endpoint-url", endpoint_url, "--require-anchors")
    assert code == 1


def test_a_broken_link_between_anchors_is_caught(chain, tmp_path, capsys, worm, bucket_name, endpoint_url):
    first = anchor_document(chain, 1, 120)
    second = anchor_document(chain, 121, 200, prev_anchor_digest="ee" * 32)
    write_bundle(
        chain,
        tmp_path,
        anchors=[put_anchor(worm, bucket_name, first, 120), put_anchor(worm, bucket_name, second, 200)],
    )
    code, out, _ = run_cli(capsys, str(tmp_path), "--endpoint-url", endpoint_url)
    assert code == 1
    assert "prev_anchor_digest is not the digest of the anchor at seq 120" in out


def forge_actor(seq: int, rehash_through: int) -> Callable[[bytes], bytes]:
    """A forger's change to a bundle starting at seq 1: the actor of the matched event at seq is
    rewritten and every hash from there through seq rehash_through recomputed (an excluded line's
    from its record_sha256); the line after that gets the new prev_hash and keeps its event_hash."""

    def change(data: bytes) -> bytes:
        lines = [json.loads(line) for line in data.splitlines()]
        lines[seq - 1]["actor"] = "someone else"
        prev = bytes.fromhex(lines[seq - 1]["prev_hash"])
        for line in lines[seq - 1 : rehash_through]:
            line["prev_hash"] = prev.hex()
            if line.get("excluded"):
                prev = hashing.event_hash_from_digest(prev, bytes.fromhex(line["record_sha256"]))
            else:
                prev = hashing.event_hash(prev, hashing.canonical_record(line))
            line["event_hash"] = prev.hex()
        if rehash_through < len(lines):
            lines[rehash_through]["prev_hash"] = prev.hex()
        return b"".join(encode_line(line) for line in lines)

    return change


def test_an_event_rewritten_with_hashes_recomputed_up_to_an_excluded_line_is_caught(
    chain, tmp_path, capsys, worm, bucket_name, endpoint_url
):
    """Every line of the range re-derives its event_hash, an excluded one from its record's digest,
    so a forger can no longer stop recomputing at an excluded line: the chain breaks there."""
    entry = put_anchor(worm, bucket_name, anchor_document(chain, 1, 200), 200)
    write_bundle(
        chain, tmp_path, matches=lambda e: e["seq"] != 150, export_filter=SEQ_SELECTION, anchors=[entry]
    )
    rewrite_data(tmp_path, forge_actor(10, rehash_through=149), reseal=True)
    code, report = run_json(capsys, str(tmp_path), "--endpoint-url", endpoint_url)
    assert code == 1
    assert [f["text"] for f in report["failures"]] == [
        f"content at seq 150, line 150: {EXCLUDED_HASH_MISMATCH}"
    ]
    assert report["summary"]["anchored"] == 50  # seq 151..200: the break at 150 unties everything before it


def test_an_event_rewritten_with_every_later_hash_recomputed_is_caught_by_the_anchor(
    chain, tmp_path, capsys, worm, bucket_name, endpoint_url
):
    entry = put_anchor(worm, bucket_name, anchor_document(chain, 1, 200), 200)
    write_bundle(
        chain, tmp_path, matches=lambda e: e["seq"] % 3 != 0, export_filter=SEQ_SELECTION, anchors=[entry]
    )
    rewrite_data(tmp_path, forge_actor(10, rehash_through=200), reseal=True)
    code, report = run_json(capsys, str(tmp_path), "--endpoint-url", endpoint_url)
    assert code == 1
    assert {(f["check"], f["seq"]) for f in report["failures"]} == {("anchors", 200)}
    assert any("the document's head_hash differs" in f["text"] for f in report["failures"])
    assert report["summary"]["anchored"] == 0


def test_a_filtered_bundle_binds_every_matched_event_up_to_a_verified_anchor(
    chain, tmp_path, capsys, worm, bucket_name, endpoint_url
):
    """Excluded lines no longer cut the tie: only the matched events after the last verified
    anchor are unbound, and the report says so."""
    entry = put_anchor(worm, bucket_name, anchor_document(chain, 1, 150), 150)
    write_bundle(
        chain, tmp_path, matches=lambda e: e["seq"] % 3 != 0, export_filter=SEQ_SELECTION, anchors=[entry]
    )
    code, report = run_json(capsys, str(tmp_path), "--endpoint-url", endpoint_url)
    assert code == 0, report["failures"]
    assert (report["summary"]["matched"], report["summary"]["excluded"]) == (134, 66)
    assert report["summary"]["anchored"] == 100  # the matched events of seq 1..150
    assert report["warnings"] == [
        "34 of 134 matched events are not bound by hash to a verified anchor (they lie after the last "
        "verified anchor, or a line that does not verify lies between them and it): for these the "
        "bundle proves only its internal consistency"
    ]
    code, report = run_json(capsys, str(tmp_path), "--endpoint-url", endpoint_url, "--require-anchors")
    assert code == 1


# ---------------------------------------------------------------------------- the real pipeline


def test_bundles_written_by_the_export_runner_verify_against_uploaded_anchors(
    conn, dsn, tmp_path, capsys, endpoint_url, bucket_name
):
    """emit -> drain -> create_anchor -> `auditchain anchor` -> `auditchain export run` -> verify-bundle."""
    client = boto3.client("s3", endpoint_url=endpoint_url)
    worm, exports = f"{bucket_name}-worm", f"{bucket_name}-exp"
    client.create_bucket(Bucket=worm, ObjectLockEnabledForBucket=True)
    client.create_bucket(Bucket=exports)
    emit_odd_events(conn)
    emit_events(conn, 285)
    conn.execute("SELECT compliance.create_anchor()")
    emit_events(conn, 20)
    conn.execute("SELECT compliance.create_anchor()")
    assert main(["anchor", "--once", "--dsn", dsn, "--bucket", worm, "--endpoint-url", endpoint_url]) == 0

    filters = {
        "all": {},
        "acme": {"tenant_id": "acme"},
        "withheld": {"tenant_id": "acme", "withhold_payloads": True},
        "none": {"tenant_id": "nobody"},
    }
    jobs = {}
    for name, bundle_filter in filters.items():
        jobs[name] = conn.execute(
            "SELECT compliance.request_export(%s, 'auditor@example.com')", (json.dumps(bundle_filter),)
        ).fetchone()[0]
        runner = ["export", "run", "--job", str(jobs[name]), "--dsn", dsn, "--bucket", exports]
        assert main([*runner, "--endpoint-url", endpoint_url]) == 0
    capsys.readouterr()

    def verify_job(name: str, *extra: str) -> tuple[int, dict]:
        return run_json(
            capsys, f"s3://{exports}/exports/{jobs[name]}", "--endpoint-url", endpoint_url, *extra
        )

    code, report = verify_job("all", "--require-anchors")
    assert code == 0, report
    assert report["summary"]["anchored"] == report["summary"]["matched"] == 320
    assert [a["status"] for a in report["anchors"]] == ["verified", "verified"]

    code, report = verify_job("acme", "--require-anchors")
    assert code == 0, report
    summary = report["summary"]
    assert summary["excluded"] > 0 and summary["anchored"] == summary["matched"] > 0

    code, report = verify_job("withheld")
    assert (code, report["summary"]["withheld"]) == (0, summary["matched"])

    code, report = verify_job("none")
    assert (code, report["summary"]["events_checked"]) == (0, 0)

    # The same bundle, downloaded, with one changed byte: named by its seq.
    folder = tmp_path / "all"
    folder.mkdir()
    for file_name in ("manifest.json", DATA):
        client.download_file(exports, f"exports/{jobs['all']}/{file_name}", str(folder / file_name))
    rewrite_data(folder, change_byte_after(200, b'"actor":"'))
    report = verify_bundle(str(folder), endpoint_url=endpoint_url)
    assert event_failure_seqs(report)[0] == 200
