"""Receipts (C2SP tlog-proof@v1) and `auditchain verify-proof`: a good receipt verifies offline, each
kind of bad receipt fails with the tamper code and one line naming it, unusable input is a usage error,
and the command imports neither the database driver nor the AWS SDK."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from auditchain import signing
from auditchain.cli import main
from auditchain.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from auditchain.formats import checkpoint, merkle, note, receipt
from prooflog import ORIGIN, ProofLog

REPO = Path(__file__).resolve().parents[2]
SIZE = 300
SEQ = 123


@pytest.fixture(scope="module")
def log() -> ProofLog:
    return ProofLog.of_size(SIZE)


@pytest.fixture(scope="module")
def good(log: ProofLog) -> bytes:
    return log.receipt(SEQ, SIZE)


def test_receipt_layout_follows_tlog_proof(log, good):
    text = good.decode()
    head, _, signed = text.partition("\n\n")
    lines = head.split("\n")
    assert lines[0] == "c2sp.org/tlog-proof@v1"
    assert base64.b64decode(lines[1].removeprefix("extra ")) == log.lines[SEQ - 1]
    assert lines[2] == f"index {SEQ - 1}"
    assert [base64.b64decode(h) for h in lines[3:]] == log.inclusion_proof(SEQ - 1, SIZE)
    assert signed.encode() == log.signed_checkpoint(SIZE)
    assert signed.startswith(f"{ORIGIN}\n{SIZE}\n")


def test_every_leaf_of_a_small_log_verifies(log):
    vkey = [note.parse_vkey(log.vkey)]
    for size in (1, 2, 7, 64, 65):
        for seq in range(1, size + 1):
            verified = receipt.verify_receipt(log.receipt(seq, size), vkey, origin=ORIGIN)
            assert verified.event["seq"] == seq and verified.checkpoint.size == size


def _replace_line(data: bytes, number: int, new: bytes) -> bytes:
    lines = data.split(b"\n")
    lines[number] = new
    return b"\n".join(lines)


def _drop_line(data: bytes, number: int) -> bytes:
    lines = data.split(b"\n")
    del lines[number]
    return b"\n".join(lines)


def _flip_proof_byte(data: bytes) -> bytes:
    lines = data.split(b"\n")
    raw = bytearray(base64.b64decode(lines[4]))
    raw[7] ^= 0x01
    lines[4] = base64.b64encode(bytes(raw))
    return b"\n".join(lines)


def _alter_event(data: bytes, change) -> bytes:
    event = json.loads(base64.b64decode(data.split(b"\n")[1].removeprefix(b"extra ")))
    change(event)
    line = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
    return _replace_line(data, 1, b"extra " + base64.b64encode(line))


def _other_size_checkpoint(log: ProofLog, data: bytes) -> bytes:
    head, _, _ = data.partition(b"\n\n")
    return head + b"\n\n" + log.signed_checkpoint(SIZE - 1)


def _edited_size_line(data: bytes) -> bytes:
    return data.replace(f"{ORIGIN}\n{SIZE}\n".encode(), f"{ORIGIN}\n{SIZE + 1}\n".encode())


# (name, how to spoil a good receipt, the words the one-line failure must contain)
BAD_RECEIPTS = [
    ("truncated in the proof", lambda log, d: d[: d.index(b"\n\n") - 20], "truncated"),
    ("truncated in the signature", lambda log, d: d[:-10], "malformed"),
    ("truncated before the checkpoint", lambda log, d: d[: d.index(b"\n\n") + 2], "truncated"),
    ("empty file", lambda log, d: b"", "truncated"),
    ("checkpoint of another size", _other_size_checkpoint, "inclusion proof does not verify"),
    ("size line edited", lambda log, d: _edited_size_line(d), "signature does not verify"),
    ("flipped proof byte", lambda log, d: _flip_proof_byte(d), "inclusion proof does not verify"),
    ("proof hash dropped", lambda log, d: _drop_line(d, 4), "wrong proof length"),
    ("index changed", lambda log, d: _replace_line(d, 2, f"index {SEQ}".encode()), "does not match"),
    (
        "index and event seq changed together",
        lambda log, d: _replace_line(
            _alter_event(d, lambda e: e.update(seq=SEQ + 1)), 2, f"index {SEQ}".encode()
        ),
        "inclusion proof does not verify",
    ),
    (
        "event actor altered",
        lambda log, d: _alter_event(d, lambda e: e.update(actor="mallory")),
        "inclusion proof",
    ),
    (
        "event payload altered",
        lambda log, d: _alter_event(d, lambda e: e.update(payload='{"amount": 1}')),
        "inclusion proof",
    ),
    (
        "event without its payload",
        lambda log, d: _alter_event(d, lambda e: e.pop("payload")),
        "event is malformed",
    ),
    ("no event", lambda log, d: _drop_line(d, 1), "no event"),
    (
        "duplicate key in the event",
        lambda log, d: _replace_line(d, 1, b"extra " + base64.b64encode(b'{"seq":1,"seq":1}')),
        "duplicate key",
    ),
    ("wrong header", lambda log, d: _replace_line(d, 0, b"c2sp.org/tlog-proof@v2"), "first line"),
]


@pytest.mark.parametrize(("name", "spoil", "words"), BAD_RECEIPTS, ids=[b[0] for b in BAD_RECEIPTS])
def test_bad_receipts_are_refused_by_the_library(log, good, name, spoil, words):
    with pytest.raises(receipt.ReceiptError, match=words) as caught:
        receipt.verify_receipt(spoil(log, good), [note.parse_vkey(log.vkey)])
    assert "\n" not in str(caught.value)


def test_receipt_signed_by_another_key_is_refused(log):
    impostor = ProofLog.of_size(SIZE)  # same events and origin, another key
    with pytest.raises(receipt.ReceiptError, match="not signed by the trusted key"):
        receipt.verify_receipt(impostor.receipt(SEQ, SIZE), [note.parse_vkey(log.vkey)])


def test_expected_origin_is_enforced(log, good):
    with pytest.raises(receipt.ReceiptError, match="origin"):
        receipt.verify_receipt(good, [note.parse_vkey(log.vkey)], origin="auditchain/1/otherdb")


# ---------------------------------------------------------------- the command


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main(["verify-proof", *argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_command_accepts_a_good_receipt(tmp_path, capsys, log, good):
    path = tmp_path / "event.tlog-proof"
    path.write_bytes(good)
    code, out, _ = run_cli(capsys, str(path), "--vkey", log.vkey)
    assert code == EXIT_OK and out.startswith(f"OK: event seq {SEQ} ")
    code, out, _ = run_cli(capsys, str(path), "--vkey", log.vkey, "--json")
    document = json.loads(out)
    assert code == EXIT_OK and document["ok"] and document["seq"] == SEQ and document["tree_size"] == SIZE
    assert document["signed_by"] == [log.vkey] and document["origin"] == ORIGIN


def test_command_trusts_any_of_several_keys_from_a_file(tmp_path, capsys, log, good):
    keys = tmp_path / "trusted.vkeys"
    keys.write_text(f"{ProofLog.of_size(1).vkey}\n{log.vkey}\n")
    (tmp_path / "r").write_bytes(good)
    code, out, _ = run_cli(capsys, str(tmp_path / "r"), "--vkey", str(keys))
    assert code == EXIT_OK, out


@pytest.mark.parametrize(("name", "spoil", "words"), BAD_RECEIPTS, ids=[b[0] for b in BAD_RECEIPTS])
def test_command_fails_bad_receipts_with_one_line(tmp_path, capsys, log, good, name, spoil, words):
    path = tmp_path / "bad.tlog-proof"
    path.write_bytes(spoil(log, good))
    code, out, err = run_cli(capsys, str(path), "--vkey", log.vkey)
    assert code == EXIT_FAILED
    assert out == "" and err.count("\n") == 1 and words in err, err


def test_command_fails_another_key(tmp_path, capsys, log, good):
    path = tmp_path / "r"
    path.write_bytes(good)
    code, _, err = run_cli(capsys, str(path), "--vkey", ProofLog.of_size(1).vkey)
    assert code == EXIT_FAILED and "not signed by the trusted key" in err


@pytest.mark.parametrize(
    "vkey",
    [
        "not-a-key+zz+AAAA",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "/nonexistent/vkey",
    ],
)
def test_command_malformed_or_unreadable_key_is_a_usage_error(tmp_path, capsys, good, vkey):
    path = tmp_path / "r"
    path.write_bytes(good)
    code, _, err = run_cli(capsys, str(path), "--vkey", vkey)
    assert code == EXIT_USAGE and err.count("\n") == 1, err


def test_command_unreadable_receipt_is_a_usage_error(tmp_path, capsys, log):
    code, _, err = run_cli(capsys, str(tmp_path / "missing.tlog-proof"), "--vkey", log.vkey)
    assert code == EXIT_USAGE and "cannot read" in err
    code, _, err = run_cli(capsys, str(tmp_path), "--vkey", log.vkey)  # a directory
    assert code == EXIT_USAGE


def test_command_json_failure(tmp_path, capsys, log, good):
    path = tmp_path / "r"
    path.write_bytes(_flip_proof_byte(good))
    code, out, _ = run_cli(capsys, str(path), "--vkey", log.vkey, "--json")
    assert code == EXIT_FAILED and json.loads(out)["ok"] is False


def test_command_imports_no_database_driver_and_no_aws_sdk(tmp_path, log, good):
    path = tmp_path / "r"
    path.write_bytes(good)
    probe = (
        "import sys\n"
        "from auditchain.cli import main\n"
        f"code = main(['verify-proof', {str(path)!r}, '--vkey', {log.vkey!r}])\n"
        "heavy = ('psycopg', 'psycopg_binary', 'boto3', 'botocore')\n"
        "print(code, sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "python")}
    proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip().endswith(f"{EXIT_OK} []"), proc.stdout + proc.stderr


def test_worked_examples_in_docs_verify():
    doc = (REPO / "docs" / "proofs.md").read_text()
    blocks = doc.split("```text\n")[1:]
    signed_checkpoint, keys, _, example = (b.split("```")[0].encode() for b in blocks[:4])
    vkey = keys.decode().split("verifier key: ")[1].split("\n")[0]
    skey = keys.decode().split("signer key:   ")[1].split("\n")[0]
    signer = note.parse_skey(skey)
    assert note.encode_vkey(signer.name, signer.public_key) == vkey
    cp, _ = checkpoint.open_signed(signed_checkpoint, [note.parse_vkey(vkey)])
    assert (
        cp.size == 8 and cp.root.hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    )
    assert signing.sign_checkpoint(cp, signer) == signed_checkpoint  # Ed25519 is deterministic
    verified = receipt.verify_receipt(example, [note.parse_vkey(vkey)], origin=ORIGIN)
    assert verified.event["seq"] == 6
    assert f"is `{verified.record_sha256.hex()}`" in doc
    assert example == ProofLog.of_size(8, signer=signer).receipt(6, 8)


def test_consistency_between_signed_checkpoints_catches_a_rewritten_history(log):
    trusted = [note.parse_vkey(log.vkey)]
    old, _ = checkpoint.open_signed(log.signed_checkpoint(200), trusted)
    new, _ = checkpoint.open_signed(log.signed_checkpoint(SIZE), trusted)
    checkpoint.verify_consistency(old, new, log.consistency_proof(200, SIZE))

    # A superuser rewrites event 50, recomputes everything and signs again with the same key.
    rewritten = ProofLog.of_size(SIZE, signer=log.signer)
    rewritten.leaf_hashes[49] = merkle.leaf_hash(b"rewritten")
    forged, _ = checkpoint.open_signed(rewritten.signed_checkpoint(SIZE), trusted)
    with pytest.raises(merkle.ProofError, match="mismatch"):
        checkpoint.verify_consistency(old, forged, rewritten.consistency_proof(200, SIZE))

    other_log = checkpoint.Checkpoint("auditchain/1/otherdb", new.size, new.root)
    with pytest.raises(merkle.ProofError, match="two logs"):
        checkpoint.verify_consistency(old, other_log, log.consistency_proof(200, SIZE))
