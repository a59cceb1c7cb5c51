"""Signed notes and checkpoints against the vectors of Go's golang.org/x/mod/sumdb (note_test.go,
tlog/note_test.go) and of the C2SP signed-note specification."""

from __future__ import annotations

import base64

import pytest

from auditchain.formats import checkpoint, merkle, note

# golang.org/x/mod/sumdb/note/note_test.go
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_TEXT = (
    b"If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
)
PETER_SIG = (
    "\u2014 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
).encode()
PETER_NOTE = PETER_TEXT + b"\n" + PETER_SIG

# c2sp.org/signed-note, "Verifier keys", "Example"
C2SP_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
C2SP_NOTE = (
    "This is an example message.\n\n"
    "\u2014 example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
).encode()


def test_go_signer_key_signs_exactly_like_go():
    signer = note.parse_skey(PETER_SKEY)
    assert note.encode_vkey(signer.name, signer.public_key) == PETER_VKEY
    # Ed25519 is deterministic: the same key and text give Go's signature byte for byte.
    assert note.sign(PETER_TEXT, [signer]) == PETER_NOTE


def test_go_and_c2sp_notes_open():
    opened = note.open_note(PETER_NOTE, [note.parse_vkey(PETER_VKEY)])
    assert opened.text == PETER_TEXT and opened.verified_by == (PETER_VKEY,)
    opened = note.open_note(C2SP_NOTE, [note.parse_vkey(C2SP_VKEY)])
    assert opened.text == b"This is an example message.\n"


def test_unknown_signatures_are_ignored_but_one_trusted_signature_is_required():
    other = note.parse_skey(note.generate_skey("other.example/log"))
    both = note.sign(PETER_TEXT, [note.parse_skey(PETER_SKEY), other])
    opened = note.open_note(both, [note.parse_vkey(PETER_VKEY)])
    assert opened.verified_by == (PETER_VKEY,) and len(opened.unverified) == 1
    with pytest.raises(note.UnverifiedNote):
        note.open_note(PETER_NOTE, [note.parse_vkey(C2SP_VKEY)])


def test_an_altered_text_fails_the_known_signature():
    altered = PETER_NOTE.replace(b"answer", b"ANSWER")
    with pytest.raises(note.BadSignature, match="invalid signature for key PeterNeumann\\+c74f20a3"):
        note.open_note(altered, [note.parse_vkey(PETER_VKEY)])


@pytest.mark.parametrize(
    "message",
    [
        PETER_TEXT,
        PETER_TEXT + b"\n",
        PETER_TEXT + b"\n" + PETER_SIG[:-1],
        b"\x01" + PETER_NOTE,
        b"\xff" + PETER_NOTE,
        PETER_TEXT + b"\n" + PETER_SIG.replace(b"PeterNeumann", b"Bad Name"),
        PETER_NOTE + b"Unexpected line.\n",
    ],
)
def test_malformed_notes_from_go_tests(message):
    with pytest.raises(note.MalformedNote):
        note.open_note(message, [note.parse_vkey(PETER_VKEY)])


@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",  # Go: wrong key length
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # Go: unknown algorithm
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # key id does not match
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3",
        "",
    ],
)
def test_malformed_verifier_keys(vkey):
    with pytest.raises(note.NoteError):
        note.parse_vkey(vkey)


def test_signer_key_errors_never_show_the_key():
    broken = PETER_SKEY[:-4] + "AAAA"  # another seed: the key id no longer matches
    with pytest.raises(note.NoteError) as caught:
        note.parse_skey(broken)
    assert "AYEKFALV" not in str(caught.value)
    assert "AYEKFALV" not in repr(note.parse_skey(PETER_SKEY))


def test_sign_refuses_text_without_final_newline():
    with pytest.raises(note.MalformedNote):
        note.sign(b"abc", [note.parse_skey(PETER_SKEY)])


def test_go_tree_note_body_parses_as_a_checkpoint():
    # golang.org/x/mod/sumdb/tlog/note_test.go: a go.sum tree note is a checkpoint body.
    cp = checkpoint.parse(
        b"go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n"
    )
    assert cp.size == 123456789012
    assert cp.root == merkle.leaf_hash(b"hello world")
    assert cp.origin == "go.sum database tree"


def test_checkpoint_body_round_trip_and_signature():
    origin = checkpoint.origin(7312345678901234567, "appdb")
    assert origin == "auditchain/7312345678901234567/appdb"
    cp = checkpoint.Checkpoint(
        origin, 8, bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")
    )
    assert (
        cp.body()
        == b"auditchain/7312345678901234567/appdb\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n"
    )
    assert checkpoint.parse(cp.body()) == cp
    signer = note.parse_skey(note.generate_skey(origin))
    signed = note.sign(cp.body(), [signer])
    opened_cp, _ = checkpoint.open_signed(
        signed, [note.parse_vkey(note.encode_vkey(origin, signer.public_key))]
    )
    assert opened_cp == cp


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"o\n8\n", "lines"),
        (b"o\n08\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n", "leading zeroes"),
        (b"o\n-1\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n", "tree size"),
        (b"o\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQ==\n", "32 bytes"),
        (b"o\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\next\n", "extension"),
        (b"o\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=", "newline"),
        (b"\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n", "empty origin"),
    ],
)
def test_malformed_checkpoints(body, problem):
    with pytest.raises(checkpoint.CheckpointError, match=problem):
        checkpoint.parse(body)


@pytest.mark.parametrize("database", ["my db", "a+b", "", "tab\there", "nl\nx"])
def test_origin_refuses_database_names_a_note_cannot_carry(database):
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.origin(7312345678901234567, database)


def test_go_tree_hash_is_base64_of_record_hash():
    assert (
        base64.b64encode(merkle.leaf_hash(b"hello world")) == b"TszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0="
    )
