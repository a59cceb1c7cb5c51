"""RFC 9162 (RFC 6962) Merkle trees over SHA-256: hashing, roots, proofs and their verifiers.

The verifiers follow transparency-dev/merkle (proof/verify.go), which is stricter than the RFC in
two places a verifier must agree on: every hash is exactly 32 bytes, and a consistency proof from
the empty tree is refused (it proves nothing). tests/py/test_formats_merkle.py holds them to that
library's 196 published vectors and to the classic 8-leaf RFC 6962 vectors.

Indices are 0-based; in auditchain leaf index = seq - 1 and leaf data = the event's 32-byte record
digest (auditchain.hashing.record_digest).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """A proof that does not verify, or cannot be checked; the message is one line naming why."""


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below n (n >= 2): where RFC 9162 splits a tree of n leaves."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes (RFC 9162 §2.1.1); the empty tree's root is SHA-256 of nothing."""
    if not hashes:
        return EMPTY_ROOT
    # Bottom-up, promoting an odd last node unhashed: the same tree as the recursive definition.
    level = list(hashes)
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def root_from_leaves(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf data."""
    return root_from_leaf_hashes([leaf_hash(d) for d in leaves])


def inclusion_proof(hashes: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, hashes) of RFC 9162 §2.1.3.1 over leaf hashes: leaf's sibling first, root's child last."""
    if not 0 <= index < len(hashes):
        raise ValueError(f"index {index} is outside a tree of {len(hashes)} leaves")
    proof: list[bytes] = []
    lo, hi = 0, len(hashes)
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            proof.append(root_from_leaf_hashes(hashes[lo + k : hi]))
            hi = lo + k
        else:
            proof.append(root_from_leaf_hashes(hashes[lo : lo + k]))
            lo += k
    proof.reverse()
    return proof


def consistency_proof(hashes: Sequence[bytes], size1: int) -> list[bytes]:
    """PROOF(size1, hashes) of RFC 9162 §2.1.4.1: from the tree of the first size1 leaves to all of them."""
    if not 0 < size1 <= len(hashes):
        raise ValueError(f"size1 {size1} is not in 1..{len(hashes)}")
    proof: list[bytes] = []
    lo, hi, complete = 0, len(hashes), True
    m = size1
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            proof.append(root_from_leaf_hashes(hashes[lo + k : hi]))
            hi = lo + k
        else:
            proof.append(root_from_leaf_hashes(hashes[lo : lo + k]))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        proof.append(root_from_leaf_hashes(hashes[lo:hi]))
    proof.reverse()
    return proof


def _check_hash(what: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, not {HASH_SIZE}")


def _check_proof_hashes(proof: Sequence[bytes]) -> None:
    for i, h in enumerate(proof):
        _check_hash(f"proof hash {i}", h)


def _decompose(index: int, size: int) -> tuple[int, int]:
    """How many proof hashes lie inside the subtree shared with the last leaf (inner) and on the right
    border above it (border)."""
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    return inner, border


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        seed = node_hash(seed, h) if (index >> i) & 1 == 0 else node_hash(h, seed)
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        if (index >> i) & 1:
            seed = node_hash(h, seed)
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    for h in proof:
        seed = node_hash(h, seed)
    return seed


def _require_match(what: str, calculated: bytes, expected: bytes) -> None:
    if calculated != expected:
        raise ProofError(
            f"{what} mismatch: calculated {calculated.hex()[:16]}…, expected {expected.hex()[:16]}…"
        )


def root_from_inclusion_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root that an inclusion proof for a leaf hash at index in a tree of size leads to."""
    if index < 0 or size < 0:
        raise ProofError("index and size must not be negative")
    if index >= size:
        raise ProofError(f"index {index} is beyond the tree size {size}")
    _check_hash("leaf hash", leaf)
    _check_proof_hashes(proof)
    inner, border = _decompose(index, size)
    if len(proof) != inner + border:
        raise ProofError(
            f"wrong proof length {len(proof)} for index {index} in size {size}, want {inner + border}"
        )
    return _chain_border_right(_chain_inner(leaf, proof[:inner], index), proof[inner:])


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Raise ProofError unless proof shows leaf hash `leaf` at `index` in the tree of `size` with `root`."""
    _check_hash("root", root)
    _require_match("root", root_from_inclusion_proof(leaf, index, size, proof), root)


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Raise ProofError unless proof shows the tree (size1, root1) is a prefix of the tree (size2, root2)."""
    # Roots are only compared, as transparency-dev/merkle does: a root of another length never matches.
    _check_proof_hashes(proof)
    if size1 < 0 or size2 < 0:
        raise ProofError("sizes must not be negative")
    if size1 == 0:
        raise ProofError("a consistency proof from the empty tree is meaningless")
    if size2 < size1:
        raise ProofError(f"size2 {size2} is smaller than size1 {size1}")
    if size1 == size2:
        if proof:
            raise ProofError("size1 equals size2 but the proof is not empty")
        _require_match("root", root1, root2)
        return
    if not proof:
        raise ProofError("empty consistency proof between different sizes")

    inner, border = _decompose(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1  # trailing zero bits of size1
    inner -= shift
    # A size1 that is a power of two is a complete subtree of size2: its root is the seed.
    if size1 == 1 << shift:
        seed, rest = root1, proof
    else:
        seed, rest = proof[0], proof[1:]
    if len(rest) != inner + border:
        want = inner + border + (0 if size1 == 1 << shift else 1)
        raise ProofError(f"wrong proof length {len(proof)} for sizes {size1} to {size2}, want {want}")
    mask = (size1 - 1) >> shift
    hash1 = _chain_border_right(_chain_inner_right(seed, rest[:inner], mask), rest[inner:])
    _require_match("root1", hash1, root1)
    hash2 = _chain_border_right(_chain_inner(seed, rest[:inner], mask), rest[inner:])
    _require_match("root2", hash2, root2)


def compact_range_push(frontier: list[bytes], size: int, leaf: bytes) -> int:
    """Append a leaf hash to the compact range of a tree of `size` leaves, in place; returns the new
    size. The compact range is the roots of the tree's perfect subtrees, largest (leftmost) first:
    one per 1 bit of size. The leaf merges with the subtree to its left once per trailing 1 bit, as
    compliance._tree_push does in the database."""
    _check_hash("leaf hash", leaf)
    bits = size
    while bits & 1:
        leaf = node_hash(frontier.pop(), leaf)
        bits >>= 1
    frontier.append(leaf)
    return size + 1


def check_compact_range(frontier: Sequence[bytes], size: int) -> None:
    """Raise ProofError unless frontier can be the compact range of a tree of `size` leaves."""
    if size < 0:
        raise ProofError("tree size must not be negative")
    if len(frontier) != size.bit_count():
        raise ProofError(
            f"a compact range of {size} leaves has {size.bit_count()} hashes, not {len(frontier)}"
        )
    for i, h in enumerate(frontier):
        _check_hash(f"compact range hash {i}", h)


def fold_compact_range(frontier: Sequence[bytes]) -> bytes:
    """The root of the tree whose compact range this is: the subtree roots hashed from the right
    (the last, smallest subtree is the right child of the others), SHA-256 of nothing when empty."""
    if not frontier:
        return EMPTY_ROOT
    root = frontier[-1]
    for h in reversed(frontier[:-1]):
        root = node_hash(h, root)
    return root
