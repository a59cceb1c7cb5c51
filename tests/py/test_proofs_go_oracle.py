"""Interoperability: Go's golang.org/x/mod/sumdb `note` and `tlog` packages (Debian
golang-golang-x-mod-dev, built offline) accept auditchain's signed checkpoints, receipts, inclusion
proofs and consistency proofs, and reject tampered ones. tests/go/tlogcheck is the Go side.

`make setup` installs Go; without it these tests fail, they are never skipped."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from auditchain import signing
from auditchain.formats import checkpoint, merkle, receipt, tenant_heads
from prooflog import ProofLog
from tenantlog import TenantLog
from test_anchor import anchor_once, create_anchor, emit_and_drain, make_worm_bucket, run_cli
from test_verify_bucket import as_superuser_attacker, rebuild_tree

REPO = Path(__file__).resolve().parents[2]
X_MOD = Path("/usr/share/gocode/src/golang.org/x/mod/sumdb")
SIZE = 1000


@pytest.fixture(scope="session")
def tlogcheck(tmp_path_factory) -> Path:
    go = shutil.which("go")
    if go is None or not X_MOD.is_dir():
        pytest.fail(
            "Go and golang.org/x/mod are needed for the interoperability tests: "
            "`make setup` installs golang-go and golang-golang-x-mod-dev"
        )
    work = tmp_path_factory.mktemp("go")
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": f"{work}:/usr/share/gocode",
        "GOCACHE": str(work / "cache"),
        "GOFLAGS": "",
        "CGO_ENABLED": "0",
    }
    binary = work / "tlogcheck"
    subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=REPO / "tests" / "go" / "tlogcheck",
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return binary


@pytest.fixture(scope="module")
def log() -> ProofLog:
    return ProofLog.of_size(SIZE)


@pytest.fixture
def go(tlogcheck, tmp_path, log):
    """Run tlogcheck with files made from bytes; returns (exit code, output)."""
    vkey_file = tmp_path / "vkey"
    vkey_file.write_text(log.vkey + "\n")

    def run(mode: str, *args: bytes | str, vkey: str | None = None) -> tuple[int, str]:
        if vkey is not None:
            vkey_file.write_text(vkey + "\n")
        argv = []
        for i, arg in enumerate(args):
            if isinstance(arg, bytes):
                path = tmp_path / f"arg{i}"
                path.write_bytes(arg)
                argv.append(str(path))
            else:
                argv.append(arg)
        proc = subprocess.run(
            [str(tlogcheck), mode, str(vkey_file), *argv], capture_output=True, text=True, timeout=30
        )
        assert proc.returncode in (0, 1), proc.stderr  # 2 would be a mistake in this test
        return proc.returncode, proc.stdout + proc.stderr

    return run


def proof_file(hashes: list[bytes]) -> bytes:
    return b"".join(base64.b64encode(h) + b"\n" for h in hashes)


def flip(hashes: list[bytes], which: int) -> list[bytes]:
    spoiled = list(hashes)
    spoiled[which] = bytes([spoiled[which][0] ^ 0x80]) + spoiled[which][1:]
    return spoiled


def record_digest(log: ProofLog, seq: int) -> bytes:
    return receipt.event_leaf(json.loads(log.lines[seq - 1]))


def test_go_opens_our_signed_checkpoint(go, log):
    code, out = go("note", log.signed_checkpoint(SIZE))
    assert code == 0, out
    assert out.split() == [log.signer.name, str(SIZE), log.root(SIZE).hex()]


def test_go_rejects_a_checkpoint_signed_by_another_key(go, log):
    impostor = ProofLog.of_size(SIZE)
    code, out = go("note", impostor.signed_checkpoint(SIZE))
    assert code == 1 and "no verifiable signatures" in out, out


def test_go_rejects_a_changed_size_line(go, log):
    signed = log.signed_checkpoint(SIZE).replace(f"\n{SIZE}\n".encode(), f"\n{SIZE - 1}\n".encode(), 1)
    code, out = go("note", signed)
    assert code == 1 and "invalid signature" in out, out


@pytest.mark.parametrize("index", [0, 1, 421, 511, 512, 998, 999])
def test_go_accepts_our_inclusion_proofs(go, log, index):
    digest = record_digest(log, index + 1)
    proof = log.inclusion_proof(index, SIZE)
    code, out = go("inclusion", log.signed_checkpoint(SIZE), str(index), digest.hex(), proof_file(proof))
    assert code == 0, out


def test_go_rejects_tampered_inclusion_proofs(go, log):
    index = 421
    digest = record_digest(log, index + 1)
    proof = log.inclusion_proof(index, SIZE)
    signed = log.signed_checkpoint(SIZE)
    for name, args in {
        "flipped proof byte": (signed, str(index), digest.hex(), proof_file(flip(proof, 3))),
        "wrong index": (signed, str(index + 1), digest.hex(), proof_file(proof)),
        "another event": (signed, str(index), record_digest(log, index + 2).hex(), proof_file(proof)),
        "proof for another size": (
            signed,
            str(index),
            digest.hex(),
            proof_file(log.inclusion_proof(index, SIZE - 1)),
        ),
        "hash dropped": (signed, str(index), digest.hex(), proof_file(proof[:-1])),
    }.items():
        code, out = go("inclusion", *args)
        assert code == 1, f"{name}: {out}"


@pytest.mark.parametrize(
    ("size1", "size2"), [(1, SIZE), (613, SIZE), (512, SIZE), (999, SIZE), (SIZE, SIZE), (7, 8)]
)
def test_go_accepts_our_consistency_proofs(go, log, size1, size2):
    proof = log.consistency_proof(size1, size2)
    merkle.verify_consistency(size1, size2, proof, log.root(size1), log.root(size2))
    code, out = go(
        "consistency", log.signed_checkpoint(size1), log.signed_checkpoint(size2), proof_file(proof)
    )
    assert code == 0, out


def test_go_rejects_tampered_consistency_proofs(go, log):
    proof = log.consistency_proof(613, SIZE)
    old, new = log.signed_checkpoint(613), log.signed_checkpoint(SIZE)
    rewritten = ProofLog.of_size(SIZE, signer=log.signer)  # same key, same events...
    rewritten.leaf_hashes[100] = merkle.leaf_hash(b"rewritten event")  # ...but one rewritten before 613
    for name, args in {
        "flipped proof byte": (old, new, proof_file(flip(proof, 0))),
        "wrong old size": (log.signed_checkpoint(612), new, proof_file(proof)),
        "hash dropped": (old, new, proof_file(proof[1:])),
        "rewritten history, re-signed": (
            old,
            rewritten.signed_checkpoint(SIZE),
            proof_file(rewritten.consistency_proof(613, SIZE)),
        ),
    }.items():
        code, out = go("consistency", *args)
        assert code == 1, f"{name}: {out}"


def test_go_checks_our_receipt_and_rejects_tampered_ones(go, log):
    seq = 422
    good = log.receipt(seq, SIZE)
    digest = record_digest(log, seq)
    assert receipt.verify_receipt(good, [receipt.note.parse_vkey(log.vkey)]).record_sha256 == digest
    assert go("receipt", good, digest.hex())[0] == 0

    lines = good.split(b"\n")
    lines[2] = f"index {seq}".encode()
    assert go("receipt", b"\n".join(lines), digest.hex())[0] == 1, "wrong index"
    assert go("receipt", good, record_digest(log, seq + 1).hex())[0] == 1, "another event"
    assert go("receipt", good, digest.hex(), vkey=ProofLog.of_size(1).vkey)[0] == 1, "another key"
    resized = good.replace(f"\n{SIZE}\n".encode(), f"\n{SIZE + 1}\n".encode())
    assert go("receipt", resized, digest.hex())[0] == 1, "changed size line"


def test_go_checks_the_worked_receipt_in_the_docs(go):
    doc = (REPO / "docs" / "proofs.md").read_text()
    example = doc.split("```text\n")[4].split("```")[0].encode()
    vkey = doc.split("verifier key: ")[1].split("\n")[0]
    digest = doc.split("whose `record_sha256` is `")[1].split("`")[0]
    assert go("receipt", example, digest, vkey=vkey)[0] == 0


@pytest.fixture
def anchored_log(conn, dsn, endpoint_url, bucket_name, capsys):
    """A real database: 300 events drained and anchored, 40 more anchored, each checkpoint signed
    by `auditchain anchor` with the session's key and uploaded to a WORM bucket."""
    make_worm_bucket(endpoint_url, bucket_name)
    for count in (300, 40):
        emit_and_drain(conn, count)
        create_anchor(conn)
    code, _, err = anchor_once(capsys, dsn, endpoint_url, bucket_name)
    assert code == 0, err
    return conn.execute(
        "SELECT seq_to, document, signed_checkpoint FROM compliance.anchors ORDER BY seq_to"
    ).fetchall()


def test_go_and_verify_proof_accept_a_receipt_from_auditchain_prove(
    go, dsn, anchored_log, capsys, tmp_path, signing_key
):
    out = tmp_path / "event-123.tlog-proof"
    code, _, err = run_cli(capsys, "prove", "--dsn", dsn, "--seq", "123", "--out", str(out))
    assert code == 0, err
    data = out.read_bytes()
    verified = receipt.verify_receipt(data, [receipt.note.parse_vkey(signing_key.vkey)])
    assert (verified.index, verified.checkpoint.size) == (122, 340), "against the newest covering checkpoint"

    assert go("receipt", data, verified.record_sha256.hex(), vkey=signing_key.vkey)[0] == 0
    code, stdout, err = run_cli(capsys, "verify-proof", str(out), "--vkey", signing_key.vkey)
    assert code == 0, err
    assert stdout.startswith("OK: event seq 123 ")
    assert go("receipt", data, verified.record_sha256.hex(), vkey=ProofLog.of_size(1).vkey)[0] == 1


def test_go_accepts_the_consistency_proof_between_two_anchored_checkpoints(go, anchored_log, signing_key):
    (_, _, first), (_, document, second) = anchored_log
    proof = [base64.b64decode(h) for h in json.loads(document)["consistency_proof"]["hashes"]]
    code, out = go("consistency", first.encode(), second.encode(), proof_file(proof), vkey=signing_key.vkey)
    assert code == 0, out
    assert (
        go("consistency", first.encode(), second.encode(), proof_file(flip(proof, 0)), vkey=signing_key.vkey)[
            0
        ]
        == 1
    )


def test_go_rejects_the_consistency_proof_of_a_history_rewritten_after_it_was_signed(
    go, conn, anchored_log, signing_key
):
    """A superuser rewrites event 7 and recomputes the chain and the tree: the proof the database now
    gives from the first signed checkpoint to its head fails against that checkpoint."""
    (_, _, first), _ = anchored_log
    as_superuser_attacker(conn, "UPDATE compliance.audit_events SET actor = 'mallory' WHERE seq = 7")
    rebuild_tree(conn)
    proof, size, root = conn.execute(
        "SELECT compliance.consistency_proof(300, 340), 340, compliance.tree_root(340)"
    ).fetchone()
    # The uploader would sign whatever head the database gives it; the old signature still binds.
    origin = first.split("\n", 1)[0]
    forged_head = signing.sign_checkpoint(
        checkpoint.Checkpoint(origin, size, root), signing.load_key_file(signing_key.path)
    )
    code, out = go("consistency", first.encode(), forged_head, proof_file(proof), vkey=signing_key.vkey)
    assert code == 1, out


# ---------------------------------------------------------------------------- tenant bundles


@pytest.fixture(scope="module")
def tenant_bundle() -> tuple[TenantLog, dict]:
    """The manifest of a tenant bundle between two checkpoints of a synthetic multi-tenant log."""
    log = TenantLog.create()
    tenants = ["acme", "globex", None, "Zürich-支店", "b", "c"]
    for n in range(1, 301):
        log.emit(tenants[n * 7 % 11 % len(tenants)], n)
        if n % 100 == 0:
            log.commit_heads()
    manifest, _ = log.tenant_bundle("acme", log.size, log.commitments[1] + 2)
    return log, manifest


def _hashes(values: list[str]) -> list[bytes]:
    return [base64.b64decode(v) for v in values]


def _signed_tree(log: TenantLog, size: int, root: bytes) -> bytes:
    """Any tree (size, root) as a signed checkpoint: how tlogcheck is handed a tree to check against."""
    return signing.sign_checkpoint(checkpoint.Checkpoint("tenant-tree", size, root), log.signer)


def test_go_accepts_the_tenant_head_proof_in_the_tree_of_tenant_heads(go, tenant_bundle):
    log, manifest = tenant_bundle
    section = manifest["tenant"]
    for which in ("to", "from"):
        proof = section[which]
        commitment = json.loads(proof["commitment"]["line"])
        heads = json.loads(commitment["payload"])
        tree = _signed_tree(log, heads["tenants"], bytes.fromhex(heads["root"]))
        head = proof["head"]
        data = tenant_heads.head_leaf_data("acme", head["tree_size"], base64.b64decode(head["root"]))
        path = proof_file(_hashes(head["inclusion_proof"]))
        assert go("inclusion", tree, str(head["index"]), data.hex(), path, vkey=log.vkey)[0] == 0, which
        other = tenant_heads.head_leaf_data("globex", head["tree_size"], base64.b64decode(head["root"]))
        assert go("inclusion", tree, str(head["index"]), other.hex(), path, vkey=log.vkey)[0] == 1, which
        # The commitment event itself is a leaf of the signed global checkpoint.
        digest = receipt.event_leaf(commitment)
        path = proof_file(_hashes(proof["commitment"]["inclusion_proof"]))
        signed = proof["checkpoint"].encode()
        assert go("inclusion", signed, str(commitment["seq"] - 1), digest.hex(), path, vkey=log.vkey)[0] == 0


def test_go_accepts_the_tenant_and_global_consistency_proofs_of_a_tenant_bundle(go, tenant_bundle):
    log, manifest = tenant_bundle
    section = manifest["tenant"]
    old, new = section["from"]["head"], section["to"]["head"]
    assert old["tree_size"] < new["tree_size"]
    trees = [_signed_tree(log, h["tree_size"], base64.b64decode(h["root"])) for h in (old, new)]
    proof = _hashes(section["tenant_consistency_proof"])
    assert go("consistency", *trees, proof_file(proof), vkey=log.vkey)[0] == 0
    assert go("consistency", *trees, proof_file(flip(proof, 0)), vkey=log.vkey)[0] == 1
    frontier = _hashes(section["from"]["frontier"])
    assert merkle.fold_compact_range(frontier) == base64.b64decode(old["root"])

    signed = [section[w]["checkpoint"].encode() for w in ("from", "to")]
    proof = _hashes(section["consistency_proof"])
    assert go("consistency", *signed, proof_file(proof), vkey=log.vkey)[0] == 0
    assert go("consistency", *signed, proof_file(flip(proof, 1)), vkey=log.vkey)[0] == 1
