"""Hostile bundles for `auditchain verify-bundle`, generated with hypothesis: a genuine bundle
from the export runner, then its lines dropped, duplicated, swapped, truncated or replaced,
its data object cut or padded, its manifest's fields replaced by random JSON, removed or
added, the manifest itself cut, oversized or replaced by random bytes, and the data resealed
(the manifest's digest made to match) or not.

Whatever the damage, verify-bundle must fail clearly: exit 1 (a check failed) or 2 (unusable
bundle), a report or an error message, never a traceback and never success.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from auditchain.cli import main
from auditchain.errors import EXIT_FAILED, EXIT_USAGE
from auditchain.offline.bundle import MAX_MANIFEST_BYTES

settings.register_profile(
    "auditchain-hostile-bundles",
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
HOSTILE = settings.get_profile("auditchain-hostile-bundles")

DATA = "events.ndjson.gz"
MANIFEST = "manifest.json"
EVENTS = 24


def export_to_folder(conn, dsn: str, endpoint_url: str, export_filter: str, folder: Path) -> Path:
    """Everything chained, exported by `auditchain export run` and copied from the bucket."""
    conn.execute("SELECT compliance.drain()")
    job = conn.execute("SELECT compliance.request_export(%s, 'auditor')", (export_filter,)).fetchone()[0]
    bucket = f"ac-bundles-{job.hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=endpoint_url)
    s3.create_bucket(Bucket=bucket)
    assert (
        main(
            [
                "export",
                "run",
                "--job",
                str(job),
                "--dsn",
                dsn,
                "--bucket",
                bucket,
                "--endpoint-url",
                endpoint_url,
            ]
        )
        == 0
    )
    folder.mkdir()
    for name in (MANIFEST, DATA):
        s3.download_file(bucket, f"exports/{job}/{name}", str(folder / name))
    return folder


@pytest.fixture
def genuine(conn, dsn, moto_server, tmp_path) -> Path:
    """A genuine bundle of a tenant filter, so that it has excluded lines."""
    for n in range(EVENTS):
        conn.execute(
            "SELECT compliance.emit('payment.captured', %s,"
            " jsonb_build_object('n', %s::int, 'note', %s::text), %s)",
            (f"user-{n}", n, "caf\u00e9 \u2028 \U0001f600" * (n % 3), "acme" if n % 2 else "globex"),
        )
    folder = export_to_folder(conn, dsn, moto_server.url, '{"tenant_id": "acme"}', tmp_path / "genuine")
    assert verify(folder)[0] == 0, "the genuine bundle verifies"
    return folder


def verify(folder: Path) -> tuple[int, dict]:
    """verify-bundle --json in-process: an unexpected exception propagates and fails the test."""
    with tempfile.TemporaryFile("w+") as out:
        with contextlib.redirect_stdout(out):
            code = main(["verify-bundle", str(folder), "--no-anchors", "--json"])
        out.seek(0)
        return code, json.loads(out.read())


@pytest.fixture
def damaged(genuine, tmp_path) -> Iterator[Callable[[], Path]]:
    """A fresh copy of the genuine bundle for each hypothesis example."""
    copies = tmp_path / "copies"
    copies.mkdir()

    def copy() -> Path:
        folder = Path(tempfile.mkdtemp(dir=copies))
        shutil.copytree(genuine, folder, dirs_exist_ok=True)
        return folder

    yield copy


def lines_of(folder: Path) -> list[bytes]:
    return gzip.decompress((folder / DATA).read_bytes()).splitlines(keepends=True)


def write_data(folder: Path, data: bytes, *, reseal: bool) -> None:
    """Replace the data object; reseal makes the manifest's digest and size match it, so that
    only the lines themselves can give the damage away."""
    (folder / DATA).write_bytes(data)
    if reseal:
        manifest = json.loads((folder / MANIFEST).read_text())
        manifest["data_sha256"] = hashlib.sha256(data).hexdigest()
        manifest["data_bytes"] = len(data)
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))


# Line-level damage: each takes the lines and a hypothesis data object, returns new lines.
def drop(lines, data):
    del lines[data.draw(st.integers(0, len(lines) - 1), label="dropped")]
    return lines


def duplicate(lines, data):
    i = data.draw(st.integers(0, len(lines) - 1), label="duplicated")
    lines.insert(data.draw(st.integers(0, len(lines)), label="at"), lines[i])
    return lines


def swap(lines, data):
    i = data.draw(st.integers(0, len(lines) - 2), label="swapped")
    j = data.draw(st.integers(i + 1, len(lines) - 1), label="with")
    lines[i], lines[j] = lines[j], lines[i]
    return lines


def replace_with_json(lines, data):
    i = data.draw(st.integers(0, len(lines) - 1), label="replaced")
    value = data.draw(json_values, label="by")
    lines[i] = json.dumps(value).encode() + b"\n"
    return lines


def replace_a_field(lines, data):
    i = data.draw(st.integers(0, len(lines) - 1), label="line")
    line = json.loads(lines[i])
    name = data.draw(st.sampled_from(sorted(line)), label="field")
    value = data.draw(json_values.filter(lambda v: v != line[name]), label="value")
    lines[i] = json.dumps({**line, name: value}).encode() + b"\n"
    return lines


def remove_a_field(lines, data):
    i = data.draw(st.integers(0, len(lines) - 1), label="line")
    line = json.loads(lines[i])
    del line[data.draw(st.sampled_from(sorted(line)), label="field")]
    lines[i] = json.dumps(line).encode() + b"\n"
    return lines


def cut_text(lines, data):
    text = b"".join(lines)
    return [text[: data.draw(st.integers(0, len(text) - 1), label="cut at")]]


def insert_bytes(lines, data):
    text = b"".join(lines)
    at = data.draw(st.integers(0, len(text)), label="at")
    return [text[:at] + data.draw(st.binary(min_size=1, max_size=40), label="bytes") + text[at:]]


LINE_DAMAGE = [
    drop,
    duplicate,
    swap,
    replace_with_json,
    replace_a_field,
    remove_a_field,
    cut_text,
    insert_bytes,
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


@pytest.mark.slow
@HOSTILE
@given(data=st.data())
def test_damaged_lines_are_never_accepted(damaged, data):
    folder = damaged()
    damage = data.draw(st.sampled_from(LINE_DAMAGE), label="damage")
    reseal = data.draw(st.booleans(), label="reseal")
    text = b"".join(damage(lines_of(folder), data))
    write_data(folder, gzip.compress(text, 1), reseal=reseal)
    event(f"{damage.__name__}, {'resealed' if reseal else 'digest left'}")
    assert_refused(folder)


@pytest.mark.slow
@HOSTILE
@given(data=st.data())
def test_damaged_data_objects_are_never_accepted(damaged, data):
    folder = damaged()
    raw = (folder / DATA).read_bytes()
    damage = data.draw(st.sampled_from(["cut", "flip", "append", "random", "empty"]), label="damage")
    if damage == "cut":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif damage == "flip":
        at = data.draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([raw[at] ^ data.draw(st.integers(1, 255))]) + raw[at + 1 :]
    elif damage == "append":
        raw += data.draw(st.binary(min_size=1, max_size=64))
    elif damage == "random":
        raw = data.draw(st.binary(max_size=400))
    else:
        raw = b""
    write_data(folder, raw, reseal=data.draw(st.booleans(), label="reseal"))
    event(damage)
    assert_refused(folder)


# Manifest fields the bundle cannot prove: who asked, when, for which job and with which
# filter are the exporter's word (docs/security.md). Their removal is still refused.
UNPROVEN = {"job_id", "requested_by", "created_at", "filter"}


@pytest.mark.slow
@HOSTILE
@given(data=st.data())
def test_damaged_manifests_are_never_accepted(damaged, data):
    folder = damaged()
    text = (folder / MANIFEST).read_text()
    manifest = json.loads(text)
    damage = data.draw(
        st.sampled_from(["replace a field", "remove a field", "add a field", "cut", "random bytes"]),
        label="damage",
    )
    if damage == "replace a field":
        name = data.draw(st.sampled_from(sorted(set(manifest) - UNPROVEN)), label="field")
        manifest[name] = data.draw(json_values.filter(lambda v: v != manifest[name]), label="value")
        raw = json.dumps(manifest).encode()
    elif damage == "remove a field":
        del manifest[data.draw(st.sampled_from(sorted(manifest)), label="field")]
        raw = json.dumps(manifest).encode()
    elif damage == "add a field":
        name = data.draw(st.text(min_size=1, max_size=12).filter(lambda n: n not in manifest), label="field")
        manifest[name] = data.draw(json_values, label="value")
        raw = json.dumps(manifest).encode()
    elif damage == "cut":
        # Anywhere before the end of the JSON (a trailing newline alone is no damage).
        raw = text.encode()[: data.draw(st.integers(0, len(text.rstrip()) - 1))]
    else:
        raw = data.draw(st.binary(max_size=200))
    (folder / MANIFEST).write_bytes(raw)
    event(damage)
    assert_refused(folder)


@pytest.mark.slow
def test_oversized_manifest_and_decompression_bomb(damaged, subtests):
    with subtests.test("manifest over the size limit"):
        folder = damaged()
        manifest = json.loads((folder / MANIFEST).read_text())
        manifest["padding"] = " " * MAX_MANIFEST_BYTES
        (folder / MANIFEST).write_text(json.dumps(manifest))
        code, report = assert_refused(folder)
        assert code == EXIT_USAGE and "larger than" in report["error"]
    with subtests.test("a gzip stream that inflates to 256 MiB of one line"):
        folder = damaged()
        bomb = gzip.compress(b"7" * (256 * 1024 * 1024), 9)
        write_data(folder, bomb, reseal=True)
        code, report = assert_refused(folder)
        assert any("longer than" in f["message"] for f in report["failures"])
    with subtests.test("a gzip stream that inflates to 64 Mi empty lines"):
        # Reading stops one line past the manifest's range, not after 64 Mi lines.
        folder = damaged()
        write_data(folder, gzip.compress(b"\n" * (64 * 1024 * 1024), 9), reseal=True)
        code, report = assert_refused(folder)
        assert (
            report["summary"]["events_checked"]
            <= json.loads((folder / MANIFEST).read_text())["line_count"] + 1
        )


def assert_refused(folder: Path) -> tuple[int, dict]:
    code, report = verify(folder)
    assert code in (EXIT_FAILED, EXIT_USAGE), report
    assert report["ok"] is False and report["exit_code"] == code
    if code == EXIT_USAGE:
        assert report["error"].strip(), "an unusable bundle says why"
    else:
        assert report["failures"] and all(f["message"].strip() for f in report["failures"])
    return code, report


def rewrite_manifest(folder: Path, **fields: object) -> None:
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, **fields}))


def test_a_filter_that_contradicts_the_lines_is_refused(damaged):
    """The genuine bundle was exported for tenant acme and holds excluded lines; a manifest
    claiming an unfiltered export ({}) cannot be true of it."""
    folder = damaged()
    rewrite_manifest(folder, filter={})
    assert_refused(folder)


@pytest.mark.parametrize(("field", "value"), [("job_id", "x"), ("created_at", "yesterday")])
def test_malformed_job_id_or_created_at_is_refused(damaged, field, value):
    folder = damaged()
    rewrite_manifest(folder, **{field: value})
    assert_refused(folder)


def test_hostile_payloads_survive_export_and_offline_verification(conn, dsn, moto_server, tmp_path):
    """Payloads at the edges emit accepts come out of the export runner byte for byte as
    PostgreSQL holds them, and the offline verifier re-derives their hashes."""
    payloads = [
        '{"a": "\\ud83d\\ude00 \u00e9 \u2028 \u202e \u0301 \\u001b \\" \\\\"}',
        '{"a": 1, "a": 2}',
        '{"": ""}',
        '{"n": 1.000000000000000000001, "big": 123456789012345678901234567890}',
        '{"a":' * 5000 + "1" + "}" * 5000,
        json.dumps({"blob": "\U0001f600" * 60_000}),
    ]
    for payload in payloads:
        conn.execute("SELECT compliance.emit('test.hostile_payload', 'someone', %s::jsonb)", (payload,))
    folder = export_to_folder(conn, dsn, moto_server.url, "{}", tmp_path / "bundle")
    code, report = verify(folder)
    assert code == 0, report
    exported = [json.loads(line)["payload"] for line in lines_of(folder)][: len(payloads)]
    stored = [
        row[0] for row in conn.execute("SELECT payload::text FROM compliance.audit_events ORDER BY seq")
    ]
    assert exported == stored[: len(payloads)]
