"""Tenant bundles (manifest format 4, mode "tenant") checked by `auditchain verify-bundle --vkey`
offline: bundles of a synthetic multi-tenant log (tests/py/tenantlog.py) verify, hold nothing of
another tenant's events, and each attack fails with the tamper code and a failure naming it."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import clihelpers
from auditchain.cli import main
from auditchain.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from auditchain.formats import hashing, merkle, note, schemas, tenant_heads
from auditchain.formats import manifest as manifest_format
from tenantlog import DATA, TenantLog, b64, encode, write_folder
from test_hashing import emit_odd_events, exported_events
from test_security_hostile_bundles import HOSTILE, LINE_DAMAGE, json_values
from test_verify_bundle import emit_events

TENANTS = ["acme", "globex", None, "Zürich-支店", "b"]
Bundle = tuple[dict[str, Any], list[bytes]]


@pytest.fixture(scope="module")
def log() -> TenantLog:
    """Four rounds of events of five tenants, each round closed by a tenant-heads commitment,
    then one event of each tenant that no commitment covers yet."""
    log = TenantLog.create()
    pick = random.Random(14)
    n = 0
    for round_ in range(4):
        for _ in range(37 + round_):
            n += 1
            log.emit(pick.choice(TENANTS), n)
        log.commit_heads()
    for tenant in TENANTS:
        n += 1
        log.emit(tenant, n)
    return log


def to_size(log: TenantLog) -> int:
    return log.size


def from_size(log: TenantLog) -> int:
    """A checkpoint between the second and the third commitment."""
    return log.commitments[1] + 3


def described(log: TenantLog, size: int) -> int:
    return json.loads(log.commitment_at(size)["payload"])["tree_size"]


def verify(capsys: pytest.CaptureFixture[str], folder: Path, *argv: str) -> tuple[int, dict]:
    code, out, err = clihelpers.run_cli(capsys, "verify-bundle", str(folder), "--json", *argv)
    return code, json.loads(out)


def with_vkey(log: TenantLog) -> tuple[str, str]:
    return ("--vkey", log.vkey)


def relined(bundle: Bundle, lines: list[bytes]) -> Bundle:
    """The bundle with other lines, its manifest's counts and seq bounds made to match them."""
    manifest, _ = bundle
    seqs = [json.loads(line)["seq"] for line in lines]
    counts = {"line_count": len(lines), "matched_count": len(lines)}
    bounds = {"seq_from": seqs[0] if seqs else None, "seq_to": seqs[-1] if seqs else None}
    return manifest | counts | bounds, lines


def edit_line(bundle: Bundle, index: int, change: Callable[[dict], None]) -> Bundle:
    lines = list(bundle[1])
    event = json.loads(lines[index])
    change(event)
    lines[index] = encode(event)
    return bundle[0], lines


# ---------------------------------------------------------------------------- good bundles


@pytest.mark.parametrize("tenant", TENANTS)
def test_a_tenant_bundle_verifies_with_the_verifier_key_alone(log, tmp_path, capsys, tenant):
    size = to_size(log)
    folder = write_folder(tmp_path, *log.tenant_bundle(tenant, size))
    code, report = verify(capsys, folder, *with_vkey(log))
    assert code == EXIT_OK, report["failures"]
    n = described(log, size)
    k = len(log.tenant_lines(tenant, n))
    assert report["summary"]["events_checked"] == k > 0
    assert report["tenant"] | {"signed_by": None} == report["tenant"] | {
        "tenant_id": tenant,
        "complete_up_to_seq": n,
        "tenant_tree_size": k,
        "tenants": len(TENANTS),
        "checkpoint_size": size,
        "committed_at": log.commitment_at(size)["recorded_at"],
        "commitment_seq": log.commitments[-1],
        "signed_by": None,
    }
    assert report["tenant"]["signed_by"] == [log.vkey]


def test_the_text_report_names_tenant_events_completeness_checkpoint_and_time(log, tmp_path, capsys):
    size = to_size(log)
    folder = write_folder(tmp_path, *log.tenant_bundle("acme", size))
    code, out, _ = clihelpers.run_cli(capsys, "verify-bundle", str(folder), *with_vkey(log))
    n = described(log, size)
    k = len(log.tenant_lines("acme", n))
    assert code == EXIT_OK, out
    assert f"tenant    'acme': {k} events, complete up to global seq {n}\n" in out
    committed = log.commitment_at(size)["recorded_at"]
    assert f"checkpt   tree size {size} of {log.signer.name}, signed by {log.vkey}" in out
    assert f"committed at {committed}" in out
    assert out.rstrip().endswith("RESULT    OK")


def test_a_bundle_with_withheld_payloads_verifies_and_must_say_so(log, tmp_path, capsys):
    manifest, lines = log.tenant_bundle("globex", to_size(log), withhold=True)
    assert all(b'"payload"' not in line for line in lines)
    code, report = verify(capsys, write_folder(tmp_path / "ok", manifest, lines), *with_vkey(log))
    assert code == EXIT_OK and report["summary"]["withheld"] == len(lines), report["failures"]

    claims_present = manifest | {"withheld_payloads": False}
    claims_present["filter"] = manifest["filter"] | {"withhold_payloads": False}
    code, report = verify(capsys, write_folder(tmp_path / "bad", claims_present, lines), *with_vkey(log))
    assert code == EXIT_FAILED
    assert (
        "the payload is withheld but the manifest says withheld_payloads=False"
        in report["failures"][0]["text"]
    )


def test_the_vkey_can_be_a_file_of_keys(log, tmp_path, capsys):
    folder = write_folder(tmp_path / "b", *log.tenant_bundle("b", to_size(log)))
    keys = tmp_path / "trusted.vkeys"
    keys.write_text(TenantLog.create().vkey + "\n" + log.vkey + "\n")
    assert verify(capsys, folder, "--vkey", str(keys))[0] == EXIT_OK


def test_a_tenant_bundle_without_vkey_is_a_usage_error(log, tmp_path, capsys):
    folder = write_folder(tmp_path, *log.tenant_bundle("acme", to_size(log)))
    code, out, err = clihelpers.run_cli(capsys, "verify-bundle", str(folder))
    assert code == EXIT_USAGE
    assert err.strip().splitlines() == [
        "auditchain verify-bundle: a tenant bundle is proved by a signed checkpoint: "
        "pass --vkey with the log's verifier key"
    ]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (("--not-before", "2026-12-06"), "has no time zone"),
        (("--not-before", "yesterday"), "is not an ISO-8601 date and time"),
        (("--min-tree-size", "-1"), "must not be negative"),
        (("--vkey", "not-a-key+1234"), "malformed verifier key"),
    ],
)
def test_bad_options_are_usage_errors(log, tmp_path, capsys, argv, words):
    folder = write_folder(tmp_path, *log.tenant_bundle("acme", to_size(log)))
    code, out, err = clihelpers.run_cli(capsys, "verify-bundle", str(folder), *with_vkey(log), *argv)
    assert code == EXIT_USAGE and words in err, err


def test_the_bundle_shows_nothing_of_another_tenants_events(log, tmp_path):
    """What it may show of others (docs/bundle-verification.md): hashes on proof paths, each
    line's prev_hash, the global seqs of the tenant's own events, the number of tenants and the
    global size; and the commitment events, which have no tenant."""
    size = to_size(log)
    since = from_size(log)
    for tenant in ("acme", "Zürich-支店"):
        for bundle in (log.tenant_bundle(tenant, size), log.tenant_bundle(tenant, size, since)):
            folder = write_folder(tmp_path / f"{tenant}-{len(bundle[1])}", *bundle)
            text = (folder / "manifest.json").read_bytes().decode() + b"".join(bundle[1]).decode()
            assert json.loads((folder / "manifest.json").read_text())["data_object"] == DATA
            others = [
                e
                for e in log.events
                if e["tenant_id"] != tenant and e["event_type"] != tenant_heads.COMMITMENT_EVENT_TYPE
            ]
            for event in others:
                digest = hashing.record_digest(hashing.canonical_record(event))
                fields = (
                    "event_id",
                    "occurred_at",
                    "recorded_at",
                    "event_type",
                    "actor",
                    "payload",
                    "actor_salt",
                )
                secrets = [json.dumps(event[name], ensure_ascii=False) for name in fields]
                secrets += [digest.hex(), b64(digest)]
                # An event_hash is the prev_hash of the next event, which may be a line of the bundle.
                if event["seq"] + 1 not in _seqs(bundle) | set(log.commitments):
                    secrets.append(event["event_hash"])
                for secret in secrets:
                    assert secret not in text, (tenant, event["seq"], secret)


def _seqs(bundle: Bundle) -> set[int]:
    return {json.loads(line)["seq"] for line in bundle[1]}


# ---------------------------------------------------------------------------- attacks


def _drop_event(log: TenantLog, bundle: Bundle) -> Bundle:
    return relined(bundle, bundle[1][:3] + bundle[1][4:])


def _add_foreign_event(log: TenantLog, bundle: Bundle) -> Bundle:
    """Another tenant's event put in its seq place."""
    foreign = next(
        e for e in log.events if e["tenant_id"] == "globex" and e["seq"] > json.loads(bundle[1][2])["seq"]
    )
    lines = sorted([*bundle[1], encode(foreign)], key=lambda line: json.loads(line)["seq"])
    return relined(bundle, lines)


def _swap_lines(log: TenantLog, bundle: Bundle) -> Bundle:
    lines = list(bundle[1])
    lines[4], lines[5] = lines[5], lines[4]
    return relined(bundle, lines)


def _alter_line(log: TenantLog, bundle: Bundle) -> Bundle:
    return edit_line(bundle, 2, lambda e: e.update(actor="mallory@example.com"))


def _alter_line_and_rehash(log: TenantLog, bundle: Bundle) -> Bundle:
    def change(event: dict) -> None:
        event["actor"] = "mallory@example.com"
        digest = hashing.record_digest(hashing.canonical_record(event))
        event["event_hash"] = hashing.event_hash_from_digest(bytes.fromhex(event["prev_hash"]), digest).hex()

    return edit_line(bundle, 2, change)


def _event_beyond_the_heads(log: TenantLog, bundle: Bundle) -> Bundle:
    """A genuine event of the tenant that the committed heads do not cover yet."""
    later = [e for e in log.events if e["tenant_id"] == "acme" and e["seq"] > log.commitments[-1]]
    return relined(bundle, [*bundle[1], encode(later[0])])


def _head_of_another_tenant(log: TenantLog, bundle: Bundle) -> Bundle:
    manifest = json.loads(json.dumps(bundle[0]))
    manifest["tenant"]["to"]["head"] = log.checkpoint_proof("globex", to_size(log))["head"]
    return manifest, bundle[1]


def _forged_heads_root(log: TenantLog, bundle: Bundle) -> Bundle:
    """One event dropped, and a tree of tenant heads forged to match: acme's head rebuilt without
    it, the heads root recomputed, the commitment's payload rewritten to carry it."""
    manifest, lines = _drop_event(log, bundle)
    manifest = json.loads(json.dumps(manifest))
    size = to_size(log)
    n = described(log, size)
    kept = [json.loads(line) for line in lines]
    leaves = [merkle.leaf_hash(hashing.record_digest(hashing.canonical_record(e))) for e in kept]
    root = merkle.root_from_leaf_hashes(leaves)
    tenants = log.tenants(n)
    heads = log.heads(n)
    index = tenants.index("acme")
    heads[index] = merkle.leaf_hash(tenant_heads.head_leaf_data("acme", len(leaves), root))
    forged = merkle.root_from_leaf_hashes(heads)
    section = manifest["tenant"]["to"]
    commitment = json.loads(section["commitment"]["line"])
    commitment["payload"] = json.dumps({"root": forged.hex(), "tenants": len(heads), "tree_size": n})
    section["commitment"]["line"] = encode(commitment).decode()
    section["head"] = {
        "tree_size": len(leaves),
        "root": b64(root),
        "index": index,
        "inclusion_proof": [b64(h) for h in merkle.inclusion_proof(heads, index)],
    }
    return manifest, lines


def _signed_by_another_key(log: TenantLog, bundle: Bundle) -> Bundle:
    manifest = json.loads(json.dumps(bundle[0]))
    impostor = note.parse_skey(note.generate_skey(log.signer.name))
    manifest["tenant"]["to"]["checkpoint"] = log.signed_checkpoint(to_size(log), impostor).decode()
    return manifest, bundle[1]


def _checkpoint_size_edited(log: TenantLog, bundle: Bundle) -> Bundle:
    manifest = json.loads(json.dumps(bundle[0]))
    size = to_size(log)
    signed = manifest["tenant"]["to"]["checkpoint"]
    manifest["tenant"]["to"]["checkpoint"] = signed.replace(f"\n{size}\n", f"\n{size + 1}\n", 1)
    return manifest, bundle[1]


def _ordinary_event_as_commitment(log: TenantLog, bundle: Bundle) -> Bundle:
    manifest = json.loads(json.dumps(bundle[0]))
    size = to_size(log)
    event = log.events[9]
    manifest["tenant"]["to"]["commitment"] = {
        "line": encode(event).decode(),
        "inclusion_proof": [b64(h) for h in merkle.inclusion_proof(log.leaf_hashes[:size], 9)],
    }
    return manifest, bundle[1]


# (attack, the check that fails first, words of its one line)
ATTACKS = {
    "one event removed": (_drop_event, "completeness", "events: one is missing"),
    "an event of another tenant added": (_add_foreign_event, "tenant", "an event of tenant 'globex'"),
    "two lines swapped": (_swap_lines, "order", "lines are out of order"),
    "an altered line": (_alter_line, "content", "do not hash to its event_hash"),
    "an altered line, re-hashed": (_alter_line_and_rehash, "completeness", "do not rebuild the tenant root"),
    "an event the heads do not cover": (_event_beyond_the_heads, "range", "the committed tenant heads cover"),
    "a head proof for another tenant": (_head_of_another_tenant, "head", "a head of another tenant"),
    "a forged heads root": (_forged_heads_root, "commitment", "a forged heads root"),
    "a checkpoint signed by another key": (
        _signed_by_another_key,
        "checkpoint",
        "not signed by a trusted key",
    ),
    "a checkpoint's size edited": (_checkpoint_size_edited, "checkpoint", "signature does not verify"),
    "an ordinary event as the commitment": (
        _ordinary_event_as_commitment,
        "commitment",
        "not a compliance.tenant_heads",
    ),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_each_attack_fails_with_one_line_naming_it(log, tmp_path, capsys, attack):
    damage, check, words = ATTACKS[attack]
    folder = write_folder(tmp_path, *damage(log, log.tenant_bundle("acme", to_size(log))))
    code, report = verify(capsys, folder, *with_vkey(log))
    assert code == EXIT_FAILED, report
    first = report["failures"][0]
    assert (first["check"], words in first["message"]) == (check, True), report["failures"]
    assert "\n" not in first["text"]

    code, out, _ = clihelpers.run_cli(capsys, "verify-bundle", str(folder), *with_vkey(log))
    assert code == EXIT_FAILED
    assert out.splitlines()[-1].startswith("RESULT    FAILED:")


def test_an_altered_line_is_named_by_its_seq(log, tmp_path, capsys):
    bundle = _alter_line(log, log.tenant_bundle("acme", to_size(log)))
    code, report = verify(capsys, write_folder(tmp_path, *bundle), *with_vkey(log))
    assert code == EXIT_FAILED
    assert report["failures"][0]["seq"] == json.loads(bundle[1][2])["seq"]


def test_a_stale_checkpoint_fails_when_a_newer_one_is_asked_for(log, tmp_path, capsys):
    old = log.commitments[2]  # a checkpoint that ends at the third commitment
    folder = write_folder(tmp_path, *log.tenant_bundle("acme", old))
    committed = log.events[old - 1]["recorded_at"]
    assert verify(capsys, folder, *with_vkey(log), "--min-tree-size", str(old))[0] == EXIT_OK
    assert verify(capsys, folder, *with_vkey(log), "--not-before", committed)[0] == EXIT_OK

    code, report = verify(capsys, folder, *with_vkey(log), "--min-tree-size", str(to_size(log)))
    assert code == EXIT_FAILED
    assert [f["text"] for f in report["failures"]] == [
        f"stale: the checkpoint has tree size {old}, below --min-tree-size {to_size(log)}: a stale checkpoint"
    ]
    later = log.events[-1]["recorded_at"].replace("Z", "+00:00")
    code, report = verify(capsys, folder, *with_vkey(log), "--not-before", later)
    assert code == EXIT_FAILED
    assert [f["check"] for f in report["failures"]] == ["stale"]
    assert f"committed at {committed}, before --not-before" in report["failures"][0]["message"]
    assert report["tenant"]["checkpoint_size"] == old and report["tenant"]["committed_at"] == committed


# ---------------------------------------------------------------------------- between two checkpoints


def test_a_bundle_between_two_checkpoints_verifies(log, tmp_path, capsys):
    size, since = to_size(log), from_size(log)
    for tenant in TENANTS:
        bundle = log.tenant_bundle(tenant, size, since)
        code, report = verify(capsys, write_folder(tmp_path / str(tenant), *bundle), *with_vkey(log))
        assert code == EXIT_OK, (tenant, report["failures"])
        n0 = described(log, since)
        k0 = len(log.tenant_lines(tenant, n0))
        assert report["tenant"]["from"] == {
            "checkpoint_size": since,
            "after_seq": n0,
            "tenant_tree_size": k0,
            "committed_at": log.commitment_at(since)["recorded_at"],
        }
        assert all(n0 < seq <= described(log, size) for seq in _seqs(bundle))
        assert report["summary"]["events_checked"] == len(log.tenant_lines(tenant, described(log, size))) - k0


def test_a_bundle_between_two_checkpoints_with_one_event_dropped_fails(log, tmp_path, capsys):
    bundle = _drop_event(log, log.tenant_bundle("acme", to_size(log), from_size(log)))
    code, report = verify(capsys, write_folder(tmp_path, *bundle), *with_vkey(log))
    assert code == EXIT_FAILED
    assert report["failures"][0]["check"] == "completeness"
    assert "events after its first" in report["failures"][0]["message"]
    assert "one is missing" in report["failures"][0]["message"]


def _flip(text: str) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[0] ^= 0x01
    return b64(bytes(raw))


@pytest.mark.parametrize(
    ("change", "check", "words"),
    [
        (
            lambda t: t["from"]["frontier"].__setitem__(0, _flip(t["from"]["frontier"][0])),
            "from",
            "wrong frontier",
        ),
        (lambda t: t["from"]["frontier"].pop(), "from", "not a compact range"),
        (
            lambda t: t["tenant_consistency_proof"].__setitem__(0, _flip(t["tenant_consistency_proof"][0])),
            "consistency",
            "does not extend its tree of",
        ),
        (
            lambda t: t["consistency_proof"].__setitem__(0, _flip(t["consistency_proof"][0])),
            "consistency",
            "the to checkpoint does not extend the from checkpoint",
        ),
    ],
    ids=[
        "flipped frontier hash",
        "frontier hash dropped",
        "tenant consistency proof",
        "global consistency proof",
    ],
)
def test_a_wrong_frontier_or_consistency_proof_fails(log, tmp_path, capsys, change, check, words):
    manifest, lines = log.tenant_bundle("acme", to_size(log), from_size(log))
    manifest = json.loads(json.dumps(manifest))
    change(manifest["tenant"])
    code, report = verify(capsys, write_folder(tmp_path, manifest, lines), *with_vkey(log))
    assert code == EXIT_FAILED
    assert (report["failures"][0]["check"], words in report["failures"][0]["message"]) == (check, True), (
        report["failures"]
    )


def test_the_from_and_to_checkpoints_swapped_fail(log, tmp_path, capsys):
    manifest, lines = log.tenant_bundle("acme", to_size(log), from_size(log))
    swapped = log.tenant_bundle("acme", from_size(log))[0]["tenant"]["to"]
    manifest = json.loads(json.dumps(manifest))
    manifest["tenant"]["to"], manifest["tenant"]["from"] = (
        swapped,
        manifest["tenant"]["to"] | {"frontier": manifest["tenant"]["from"]["frontier"]},
    )
    manifest["filter"] |= {"to_checkpoint": from_size(log), "from_checkpoint": to_size(log)}
    code, report = verify(capsys, write_folder(tmp_path, manifest, lines), *with_vkey(log))
    assert code == EXIT_FAILED
    assert report["failures"][0]["text"].startswith("from: the from checkpoint's tree size")


# ---------------------------------------------------------------------------- the manifest


def test_the_tenant_manifest_satisfies_the_published_schema_and_broken_ones_do_not(log):
    for manifest, _ in (
        log.tenant_bundle(None, to_size(log)),
        log.tenant_bundle("b", to_size(log), from_size(log)),
    ):
        sealed = manifest | {"data_sha256": "0" * 64, "data_bytes": 0}
        assert schemas.violations(manifest_format.SCHEMA, sealed) == []
        for broken in (
            sealed | {"mode": "tenants"},
            sealed | {"range_prev_hash": None},
            {k: v for k, v in sealed.items() if k != "tenant"},
            sealed | {"filter": sealed["filter"] | {"event_types": ["a.b"]}},
            sealed | {"tenant": sealed["tenant"] | {"to": sealed["tenant"]["to"] | {"frontier": []}}},
        ):
            assert schemas.violations(manifest_format.SCHEMA, broken) != [], broken
    # A from checkpoint comes with both consistency proofs.
    section = sealed["tenant"]
    for proof in ("consistency_proof", "tenant_consistency_proof"):
        broken = sealed | {"tenant": {k: v for k, v in section.items() if k != proof}}
        assert schemas.violations(manifest_format.SCHEMA, broken) != [], proof


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        (lambda m: m.pop("mode"), EXIT_USAGE, "'mode' is a required property"),
        (lambda m: m.update(format_version=3), EXIT_USAGE, "does not follow format v3"),
        (lambda m: m.update(approved=True), EXIT_FAILED, "'approved' was unexpected"),
        (lambda m: m["filter"].update(tenant_id="globex"), EXIT_FAILED, "is not the tenant section's 'acme'"),
        (lambda m: m["filter"].update(to_checkpoint=7), EXIT_FAILED, "the filter asks for to_checkpoint 7"),
        (lambda m: m.update(line_count=1), EXIT_FAILED, "line_count is 1 but the data holds"),
        (
            lambda m: m.update(database=m["database"] | {"database_name": "other"}),
            EXIT_FAILED,
            "not of this bundle's",
        ),
    ],
)
def test_manifest_inconsistencies(log, tmp_path, capsys, change, code, words):
    manifest, lines = log.tenant_bundle("acme", to_size(log))
    manifest = json.loads(json.dumps(manifest))
    change(manifest)
    got, out, err = clihelpers.run_cli(
        capsys, "verify-bundle", str(write_folder(tmp_path, manifest, lines)), *with_vkey(log)
    )
    assert got == code and words in out + err, out + err


def test_a_range_bundle_of_format_4_verifies_and_notes_that_vkey_does_not_apply(log, tmp_path, capsys):
    lines = [encode(e) for e in log.events]
    manifest = {
        "format": "auditchain-export",
        "format_version": 4,
        "hash_version": 2,
        "mode": "range",
        "job_id": "0190f5b2-0000-7000-8000-000000000005",
        "filter": {"withhold_payloads": False},
        "requested_by": "auditor@example.com",
        "created_at": "2026-12-06T12:00:00.000000Z",
        "seq_from": 1,
        "seq_to": len(lines),
        "range_prev_hash": "0" * 64,
        "line_count": len(lines),
        "matched_count": len(lines),
        "withheld_payloads": False,
        "data_object": DATA,
        "database": {"system_identifier": "7312345678901234567", "database_name": "appdb"},
        "anchors": [],
    }
    folder = write_folder(tmp_path, manifest, lines)
    code, report = verify(capsys, folder, "--no-anchors", *with_vkey(log), "--min-tree-size", "5")
    assert code == EXIT_OK, report["failures"]
    assert report["tenant"] is None
    assert report["notes"] == [
        "--vkey, --min-tree-size and --not-before do not apply to a range bundle "
        "(it carries no checkpoint; its anchors are checked against WORM)"
    ]
    manifest["format_version"] = 3
    folder = write_folder(tmp_path / "v3", manifest, lines)
    code, out, _ = clihelpers.run_cli(capsys, "verify-bundle", str(folder), "--no-anchors")
    assert code == EXIT_FAILED and "'mode' was unexpected): not part of manifest format v3" in out


# ---------------------------------------------------------------------------- the formats


def test_head_leaf_data_is_the_documented_bytes():
    root = bytes(range(32))
    assert tenant_heads.head_leaf_data(None, 3, root) == b"auditchain-tenant-head:v1\n-\n3\n" + root
    assert (
        tenant_heads.head_leaf_data("Zü", 12, root) == b"auditchain-tenant-head:v1\n3:Z\xc3\xbc\n12\n" + root
    )
    for size, bad_root in ((0, root), (1, root[:31])):
        with pytest.raises(tenant_heads.TenantHeadError):
            tenant_heads.head_leaf_data("a", size, bad_root)


def test_compact_range_push_matches_the_database(conn):
    digests = [hashlib.sha256(bytes([i])).digest() for i in range(23)]
    (expected,) = conn.execute(
        "SELECT compliance._tree_push('{}', 0,"
        " ARRAY(SELECT compliance._tree_leaf(d) FROM unnest(%s::bytea[]) AS d))",
        (digests,),
    ).fetchone()
    frontier: list[bytes] = []
    size = 0
    for digest in digests:
        size = merkle.compact_range_push(frontier, size, merkle.leaf_hash(digest))
    assert frontier == [bytes(h) for h in expected] and len(frontier) == 4  # 23 = 16 + 4 + 2 + 1


def test_head_leaf_data_matches_the_database(conn):
    root = bytes(range(32))
    for tenant in TENANTS:
        key = "" if tenant is None else tenant
        (expected,) = conn.execute("SELECT compliance._tenant_head_data(%s, 17, %s)", (key, root)).fetchone()
        assert tenant_heads.head_leaf_data(tenant, 17, root) == bytes(expected)


ZERO = "0" * 64


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (json.dumps({"root": ZERO, "tenants": 2}), "not exactly"),
        (json.dumps({"root": ZERO, "tenants": 2, "tree_size": 5, "x": 1}), "not exactly"),
        (json.dumps({"root": ZERO, "tenants": True, "tree_size": 5}), "tenants is True, not a count"),
        (json.dumps({"root": ZERO, "tenants": 2, "tree_size": -1}), "tree_size is -1"),
        (json.dumps({"root": "A" * 64, "tenants": 2, "tree_size": 5}), "root is not 64 lower-case hex"),
        (f'{{"root": "{ZERO}", "root": "{"1" * 64}", "tenants": 2, "tree_size": 5}}', "duplicate key"),
        ("[1]", "not a JSON object"),
    ],
)
def test_a_commitment_payload_not_of_its_form_is_named(payload, words):
    with pytest.raises(tenant_heads.TenantHeadError, match=None) as caught:
        tenant_heads.parse_commitment_payload(payload)
    assert words in str(caught.value)


def test_a_commitment_payload_parses():
    text = '{"root": "%s", "tenants": 3, "tree_size": 40}' % ("ab" * 32)
    assert tenant_heads.parse_commitment_payload(text) == tenant_heads.HeadsCommitment(
        40, 3, bytes([0xAB]) * 32
    )


# ---------------------------------------------------------------------------- hostile input


def _leaves(value: Any, path: tuple = ()) -> list[tuple]:
    """The paths of every scalar and list under a JSON value."""
    if isinstance(value, dict):
        return [p for key, inner in value.items() for p in _leaves(inner, (*path, key))]
    paths = [path]
    if isinstance(value, list):
        paths += [p for i, inner in enumerate(value) for p in _leaves(inner, (*path, i))]
    return paths


def _verify_quietly(folder: Path, vkey: str) -> int:
    with (
        tempfile.TemporaryFile("w+") as out,
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(out),
    ):
        return main(["verify-bundle", str(folder), "--json", "--vkey", vkey])


@pytest.mark.slow
@HOSTILE
@given(data=st.data())
def test_damaged_tenant_bundles_are_never_accepted(log, tmp_path_factory, data):
    """Lines dropped, duplicated, swapped, replaced or cut (as the range bundle's hostile test damages
    them), or any value of the manifest's tenant section or filter replaced: exit 1 or 64, no
    traceback, never success."""
    manifest, lines = log.tenant_bundle("acme", to_size(log), from_size(log))
    manifest = json.loads(json.dumps(manifest))
    if data.draw(st.booleans(), label="damage the lines"):
        damage = data.draw(st.sampled_from(LINE_DAMAGE), label="damage")
        damaged = damage([line + b"\n" for line in lines], data)
        lines = b"".join(damaged).split(b"\n")[:-1] if damaged else []
    else:
        section = data.draw(st.sampled_from(["tenant", "filter"]), label="section")
        path = data.draw(st.sampled_from(_leaves(manifest[section])), label="path")
        target = manifest[section]
        for step in path[:-1]:
            target = target[step]
        old = target[path[-1]] if path else None
        value = data.draw(json_values.filter(lambda v: v != old), label="value")
        if path:
            target[path[-1]] = value
        else:
            manifest[section] = value
    folder = write_folder(tmp_path_factory.mktemp("hostile"), manifest, lines)
    assert _verify_quietly(folder, log.vkey) in (EXIT_FAILED, EXIT_USAGE)


@pytest.mark.parametrize("where", ["checkpoint", "commitment line", "tenant_id"])
def test_a_lone_surrogate_in_the_manifest_is_refused_without_a_traceback(log, tmp_path, capsys, where):
    """JSON can spell a lone surrogate ("\\ud800"), which has no UTF-8 form to hash or verify."""
    folder = write_folder(tmp_path, *log.tenant_bundle("acme", to_size(log)))
    manifest = json.loads((folder / "manifest.json").read_text())
    section = manifest["tenant"]["to"]
    if where == "checkpoint":
        section["checkpoint"] += "\ud800"
    elif where == "commitment line":
        section["commitment"]["line"] = section["commitment"]["line"].replace("compliance.", "\ud800")
    else:
        manifest["tenant"]["tenant_id"] = manifest["filter"]["tenant_id"] = "acme\ud800"
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="ascii")
    code, report = verify(capsys, folder, *with_vkey(log))
    assert code == EXIT_FAILED
    assert report["failures"][0]["check"] == {"tenant_id": "head"}.get(where, where.split()[0])


def test_the_tree_of_tenant_heads_is_the_databases(conn):
    """The heads rebuilt here from exported events, ordered by tenant id bytes, are the leaves
    compliance.tenant_heads_root and tenant_head_proof prove against: tenant ids with spaces,
    quotes, astral and combining characters, and the events without a tenant."""
    emit_odd_events(conn)
    emit_events(conn, 60)
    leaves: dict[str | None, list[bytes]] = {}
    for event in exported_events(conn):
        digest = bytes.fromhex(event["record_sha256"])
        leaves.setdefault(event["tenant_id"], []).append(merkle.leaf_hash(digest))
    tenants = sorted(leaves, key=lambda t: b"" if t is None else t.encode())
    heads = [
        merkle.leaf_hash(
            tenant_heads.head_leaf_data(t, len(leaves[t]), merkle.root_from_leaf_hashes(leaves[t]))
        )
        for t in tenants
    ]
    size, count, root = conn.execute("SELECT * FROM compliance.tenant_heads_root()").fetchone()
    assert (size, count, bytes(root)) == (
        sum(map(len, leaves.values())),
        len(tenants),
        merkle.root_from_leaf_hashes(heads),
    )
    for index, tenant in enumerate(tenants):
        row = conn.execute(
            "SELECT head_index, tenant_tree_size, tenant_root, proof FROM compliance.tenant_head_proof(%s)",
            (tenant,),
        ).fetchone()
        k, tenant_root = len(leaves[tenant]), merkle.root_from_leaf_hashes(leaves[tenant])
        assert (row[0], row[1], bytes(row[2])) == (index, k, tenant_root)
        data = tenant_heads.head_leaf_data(tenant, k, tenant_root)
        merkle.verify_inclusion(merkle.leaf_hash(data), index, count, [bytes(h) for h in row[3]], bytes(root))
