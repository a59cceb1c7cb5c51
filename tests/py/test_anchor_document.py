"""The anchor document reader (formats.anchor_document, schemas/anchor.schema.json): versions 1 and
2 both read, a version 2 document held to its checkpoint, and the worked examples of
docs/anchoring.md checked as an auditor would check them."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from auditchain.formats import anchor_document, checkpoint, note

REPO = Path(__file__).resolve().parents[2]
ROOT_8 = "fmqM68HeGUVyRP2OCVbFz069XDJsYBB+nTn5IhA1Rf0="  # the example's root at tree size 8


def anchoring_examples() -> tuple[dict, bytes, str, bytes]:
    """The v2 document, its signed checkpoint, its verifier key, and the v1 document of the docs."""
    doc = (REPO / "docs" / "anchoring.md").read_text()
    section = doc.split("## The anchor document, format versions 1 and 2")[1].split("\n## ")[0]
    blocks = re.findall(r"```(\w*)\n(.*?)```", section, re.S)
    (_, v2), (_, signed), (_, vkey), (_, v1) = blocks[:4]
    assert [language for language, _ in blocks[:4]] == ["json", "", "", "json"]
    return anchor_document.parse(v2.encode()), signed.encode(), vkey.strip(), v1.encode()


def test_the_worked_v2_example_verifies_as_documented():
    document, signed, vkey, _ = anchoring_examples()
    cp, _ = checkpoint.open_signed(signed, [note.parse_vkey(vkey)])
    assert cp.body() == document["checkpoint"].encode()
    assert (cp.origin, cp.size) == ("auditchain/7716148546011290665/appdb", document["seq_to"])
    previous = checkpoint.Checkpoint(
        cp.origin, 5, base64.b64decode("0yIFEud+Qw0lnSusbFUUGycnxFrvVfrM1lOqwHjmROI=")
    )
    assert anchor_document.consistency_problem(previous, document) is None


def test_the_worked_v1_example_still_reads():
    *_, v1 = anchoring_examples()
    document = anchor_document.parse(v1)
    assert document["format_version"] == 1
    assert anchor_document.checkpoint_of(document) is None


def edited(changes: dict) -> bytes:
    document, *_ = anchoring_examples()
    return json.dumps({**document, **changes}).encode()


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"format_version": 1}, "v1 or v2 document"),
        ({"consistency_proof": None}, "only the anchor starting at seq 1 has no consistency_proof"),
        (
            {"checkpoint": "auditchain/7716148546011290665/appdb\n7\n" + ROOT_8 + "\n"},
            "tree size 7 is not seq_to 8",
        ),
        (
            {"checkpoint": "auditchain/1/appdb\n8\n" + ROOT_8 + "\n"},
            "is not 'auditchain/7716148546011290665/appdb'",
        ),
        (
            {"consistency_proof": {"from_tree_size": 4, "hashes": []}},
            "does not start at the previous anchor's tree size",
        ),
        ({"format_version": 3}, "v1 or v2 document"),
    ],
)
def test_a_v2_document_is_held_to_its_checkpoint(changes, words):
    with pytest.raises(ValueError, match=words):
        anchor_document.parse(edited(changes))


def test_an_altered_consistency_proof_is_named():
    document, signed, vkey, _ = anchoring_examples()
    hashes = list(document["consistency_proof"]["hashes"])
    hashes[1] = base64.b64encode(bytes(32)).decode()
    forged = anchor_document.parse(edited({"consistency_proof": {"from_tree_size": 5, "hashes": hashes}}))
    previous = checkpoint.Checkpoint(
        "auditchain/7716148546011290665/appdb",
        5,
        base64.b64decode("0yIFEud+Qw0lnSusbFUUGycnxFrvVfrM1lOqwHjmROI="),
    )
    problem = anchor_document.consistency_problem(previous, forged)
    assert problem and problem.startswith("its consistency proof from tree size 5 does not verify")
