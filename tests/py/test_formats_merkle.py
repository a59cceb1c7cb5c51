"""The Merkle verifier agrees with transparency-dev/merkle's 196 vectors and the classic RFC 6962 set,
and the proofs it generates verify and are the published ones."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditchain.formats import merkle

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "merkle"
VECTOR_FILES = sorted(VECTORS.rglob("*.json"))

# RFC 6962 leaf inputs used by Certificate Transparency, Trillian and transparency-dev since 2013.
LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
H = bytes.fromhex


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def test_all_vector_files_are_present() -> None:
    assert len(VECTOR_FILES) == 196
    assert (VECTORS / "LICENSE").is_file()


@pytest.mark.parametrize("path", VECTOR_FILES, ids=lambda p: str(p.relative_to(VECTORS)))
def test_transparency_dev_vector(path: Path) -> None:
    v = json.loads(path.read_text())
    proof = [_b64(h) for h in v["proof"] or []]
    try:
        if "leafIdx" in v:
            merkle.verify_inclusion(_b64(v["leafHash"]), v["leafIdx"], v["treeSize"], proof, _b64(v["root"]))
        else:
            merkle.verify_consistency(v["size1"], v["size2"], proof, _b64(v["root1"]), _b64(v["root2"]))
    except merkle.ProofError as exc:
        assert v["wantErr"], f"{v['desc']}: refused a good proof: {exc}"
        assert "\n" not in str(exc)
    else:
        assert not v["wantErr"], f"{v['desc']}: accepted a bad proof"


def test_classic_roots() -> None:
    assert (
        merkle.root_from_leaves([]).hex()
        == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    for n in range(1, 9):
        assert merkle.root_from_leaves(LEAVES[:n]).hex() == ROOTS[n - 1], n


def test_classic_inclusion_proof() -> None:
    hashes = [merkle.leaf_hash(d) for d in LEAVES]
    proof = merkle.inclusion_proof(hashes, 5)
    assert [p.hex() for p in proof] == [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        ROOTS[3],
    ]
    merkle.verify_inclusion(hashes[5], 5, 8, proof, H(ROOTS[7]))
    with pytest.raises(merkle.ProofError, match="root mismatch"):
        merkle.verify_inclusion(hashes[4], 5, 8, proof, H(ROOTS[7]))


@pytest.mark.parametrize(
    ("size1", "size2", "expected"),
    [
        (
            6,
            8,
            [
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                ROOTS[3],
            ],
        ),
        (
            2,
            5,
            [
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ],
)
def test_classic_consistency_proofs(size1: int, size2: int, expected: list[str]) -> None:
    hashes = [merkle.leaf_hash(d) for d in LEAVES[:size2]]
    proof = merkle.consistency_proof(hashes, size1)
    assert [p.hex() for p in proof] == expected
    merkle.verify_consistency(size1, size2, proof, H(ROOTS[size1 - 1]), H(ROOTS[size2 - 1]))
    with pytest.raises(merkle.ProofError, match="root[12] mismatch"):
        merkle.verify_consistency(size1, size2, proof, H(ROOTS[size1]), H(ROOTS[size2 - 1]))


def test_every_generated_proof_verifies_up_to_40_leaves() -> None:
    # Every index and size pair, so the generator and the verifier meet on odd and power-of-two shapes alike.
    hashes = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(40)]
    roots = [merkle.root_from_leaf_hashes(hashes[:n]) for n in range(41)]
    for size in range(1, 41):
        for index in range(size):
            merkle.verify_inclusion(
                hashes[index], index, size, merkle.inclusion_proof(hashes[:size], index), roots[size]
            )
        for size1 in range(1, size + 1):
            proof = merkle.consistency_proof(hashes[:size], size1)
            merkle.verify_consistency(size1, size, proof, roots[size1], roots[size])


def test_refusals_name_the_problem() -> None:
    leaf = merkle.leaf_hash(b"x")
    with pytest.raises(merkle.ProofError, match="beyond the tree size"):
        merkle.verify_inclusion(leaf, 3, 3, [], leaf)
    with pytest.raises(merkle.ProofError, match="wrong proof length"):
        merkle.verify_inclusion(leaf, 0, 2, [], leaf)
    with pytest.raises(merkle.ProofError, match="leaf hash is 31 bytes"):
        merkle.verify_inclusion(leaf[:31], 0, 1, [], leaf)
    with pytest.raises(merkle.ProofError, match="empty tree"):
        merkle.verify_consistency(0, 0, [], merkle.EMPTY_ROOT, merkle.EMPTY_ROOT)
    with pytest.raises(merkle.ProofError, match="smaller than size1"):
        merkle.verify_consistency(2, 1, [], leaf, leaf)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300), st.data())
def test_any_flipped_bit_in_a_proof_is_refused(size, data):
    hashes = [merkle.leaf_hash(i.to_bytes(2, "big")) for i in range(size)]
    root = merkle.root_from_leaf_hashes(hashes)
    index = data.draw(st.integers(0, size - 1))
    proof = merkle.inclusion_proof(hashes, index)
    merkle.verify_inclusion(hashes[index], index, size, proof, root)
    size1 = data.draw(st.integers(1, size))
    consistency = merkle.consistency_proof(hashes, size1)
    root1 = merkle.root_from_leaf_hashes(hashes[:size1])
    merkle.verify_consistency(size1, size, consistency, root1, root)
    for which, target in ((proof, "inclusion"), (consistency, "consistency")):
        if not which:
            continue
        i = data.draw(st.integers(0, len(which) - 1))
        bit = data.draw(st.integers(0, 255))
        spoiled = list(which)
        spoiled[i] = bytes(b ^ (1 << (bit % 8)) if j == bit // 8 else b for j, b in enumerate(spoiled[i]))
        with pytest.raises(merkle.ProofError):
            if target == "inclusion":
                merkle.verify_inclusion(hashes[index], index, size, spoiled, root)
            else:
                merkle.verify_consistency(size1, size, spoiled, root1, root)


def test_a_compact_range_folds_to_the_root_at_every_size() -> None:
    hashes = [merkle.leaf_hash(bytes([i])) for i in range(70)]
    frontier: list[bytes] = []
    size = 0
    assert merkle.fold_compact_range(frontier) == merkle.EMPTY_ROOT
    for leaf in hashes:
        size = merkle.compact_range_push(frontier, size, leaf)
        merkle.check_compact_range(frontier, size)
        assert merkle.fold_compact_range(frontier) == merkle.root_from_leaf_hashes(hashes[:size])
        if size == 13:  # 8 + 4 + 1: the roots of the perfect subtrees, largest first
            roots = [hashes[0:8], hashes[8:12], hashes[12:13]]
            assert frontier == [merkle.root_from_leaf_hashes(r) for r in roots]


def test_a_compact_range_of_the_wrong_shape_is_refused() -> None:
    leaf = merkle.leaf_hash(b"x")
    for frontier, size, words in (
        ([leaf], 2 + 1, "has 2 hashes, not 1"),
        ([leaf, leaf], 4, "has 1 hashes, not 2"),
        ([leaf[:31]], 1, "compact range hash 0 is 31 bytes"),
    ):
        with pytest.raises(merkle.ProofError, match=words):
            merkle.check_compact_range(frontier, size)
