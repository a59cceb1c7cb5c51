"""Checkpoint signers and the key commands: a local key file for real, and AWS KMS through botocore's
Stubber (moto has no Ed25519 KMS keys), which checks every request against the installed KMS model;
the stub answers with signatures made by a local key, so the signed checkpoints really verify."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

import botocore.session
import pytest
from botocore.stub import Stubber
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from auditchain import signing
from auditchain.cli import main
from auditchain.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, EXIT_USAGE, AuditchainError
from auditchain.formats import checkpoint, note
from prooflog import ORIGIN

ARN = "arn:aws:kms:eu-west-1:111122223333:key/0f6a9b0e-6b1c-4d8e-9d42-6f4c1b2a3c4d"
ALIAS = "alias/auditchain-checkpoints"
CHECKPOINT = checkpoint.Checkpoint(ORIGIN, 1000, bytes(range(32)))


def test_kms_model_has_ed25519():
    model = botocore.session.get_session().get_service_model("kms")
    assert "ED25519_SHA_512" in model.shape_for("SigningAlgorithmSpec").enum
    assert "ECC_NIST_EDWARDS25519" in model.shape_for("KeySpec").enum


@contextmanager
def kms_stub() -> Iterator[tuple[object, Stubber]]:
    """A real botocore KMS client whose answers come from a Stubber; every stubbed call must be made."""
    client = botocore.session.get_session().create_client(
        "kms", region_name="eu-west-1", aws_access_key_id="AKIATEST", aws_secret_access_key="not-used"
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def kms():
    with kms_stub() as stub:
        yield stub


def _spki(public_key) -> bytes:
    return public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def stub_public_key(
    stubber: Stubber, key: Ed25519PrivateKey, key_spec: str = "ECC_NIST_EDWARDS25519"
) -> None:
    stubber.add_response(
        "get_public_key",
        {
            "KeyId": ARN,
            "PublicKey": _spki(key.public_key()),
            "KeySpec": key_spec,
            "KeyUsage": "SIGN_VERIFY",
            "SigningAlgorithms": ["ED25519_SHA_512", "ED25519_PH_SHA_512"],
        },
        {"KeyId": ALIAS},
    )


def stub_sign(stubber: Stubber, message: bytes, signature: bytes) -> None:
    stubber.add_response(
        "sign",
        {"KeyId": ARN, "Signature": signature, "SigningAlgorithm": "ED25519_SHA_512"},
        {"KeyId": ARN, "Message": message, "MessageType": "RAW", "SigningAlgorithm": "ED25519_SHA_512"},
    )


def test_kms_signed_checkpoint_verifies_with_its_vkey(kms):
    client, stubber = kms
    key = Ed25519PrivateKey.generate()
    stub_public_key(stubber, key)
    body = CHECKPOINT.body()
    stub_sign(stubber, body, key.sign(body))
    signer = signing.KmsSigner(client, ALIAS, name=ORIGIN)
    signed = signing.sign_checkpoint(CHECKPOINT, signer)
    vkey = note.encode_vkey(ORIGIN, key.public_key().public_bytes_raw())
    assert checkpoint.open_signed(signed, [note.parse_vkey(vkey)])[0] == CHECKPOINT


def test_kms_key_name_defaults_to_the_key_arn(kms):
    client, stubber = kms
    stub_public_key(stubber, Ed25519PrivateKey.generate())
    assert signing.KmsSigner(client, ALIAS).name == ARN


def test_kms_signature_from_another_key_is_never_published(kms):
    client, stubber = kms
    stub_public_key(stubber, Ed25519PrivateKey.generate())
    body = CHECKPOINT.body()
    stub_sign(stubber, body, Ed25519PrivateKey.generate().sign(body))
    with pytest.raises(AuditchainError, match="does not verify") as caught:
        signing.sign_checkpoint(CHECKPOINT, signing.KmsSigner(client, ALIAS, name=ORIGIN))
    assert caught.value.exit_code == EXIT_FAILED


def test_kms_key_of_another_kind_is_a_configuration_error(kms):
    client, stubber = kms
    stubber.add_response(
        "get_public_key",
        {
            "KeyId": ARN,
            "PublicKey": _spki(generate_private_key(SECP256R1()).public_key()),
            "KeySpec": "ECC_NIST_P256",
            "KeyUsage": "SIGN_VERIFY",
            "SigningAlgorithms": ["ECDSA_SHA_256"],
        },
        {"KeyId": ALIAS},
    )
    with pytest.raises(AuditchainError, match="not an ECC_NIST_EDWARDS25519") as caught:
        signing.KmsSigner(client, ALIAS)
    assert caught.value.exit_code == EXIT_CONFIG


def test_kms_missing_key_is_a_configuration_error(kms):
    client, stubber = kms
    stubber.add_client_error("get_public_key", "NotFoundException", "Alias is not found.", 400)
    with pytest.raises(AuditchainError, match="NotFoundException") as caught:
        signing.KmsSigner(client, ALIAS)
    assert caught.value.exit_code == EXIT_CONFIG


def test_key_vkey_command_for_kms(kms, monkeypatch, capsys):
    client, stubber = kms
    key = Ed25519PrivateKey.generate()
    stub_public_key(stubber, key)
    monkeypatch.setattr(signing, "kms_client", lambda region=None: client)
    assert main(["key", "vkey", "--kms-key-id", ALIAS, "--name", ORIGIN]) == EXIT_OK
    assert capsys.readouterr().out == note.encode_vkey(ORIGIN, key.public_key().public_bytes_raw()) + "\n"


# ---------------------------------------------------------------- local key files


def test_generate_writes_a_private_file_and_prints_its_vkey(tmp_path, capsys):
    path = tmp_path / "checkpoint.key"
    old = os.umask(0)
    try:
        assert main(["key", "generate", "--name", ORIGIN, "--out", str(path)]) == EXIT_OK
    finally:
        os.umask(old)
    out, err = capsys.readouterr()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    skey = path.read_text().strip()
    assert skey.startswith(f"PRIVATE+KEY+{ORIGIN}+") and skey not in out + err
    vkey = out.strip()
    assert main(["key", "vkey", "--key-file", str(path)]) == EXIT_OK
    assert capsys.readouterr().out.strip() == vkey

    signed = signing.sign_checkpoint(CHECKPOINT, signing.load_key_file(path))
    assert checkpoint.open_signed(signed, [note.parse_vkey(vkey)])[0] == CHECKPOINT


def test_generate_never_overwrites(tmp_path, capsys):
    path = tmp_path / "checkpoint.key"
    path.write_text("keep me\n")
    assert main(["key", "generate", "--name", ORIGIN, "--out", str(path)]) == EXIT_USAGE
    assert path.read_text() == "keep me\n"
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["has space", "a+b", ""])
def test_generate_refuses_names_a_note_cannot_carry(tmp_path, capsys, name):
    path = tmp_path / "k"
    assert main(["key", "generate", "--name", name, "--out", str(path)]) == EXIT_USAGE
    assert not path.exists()


def test_malformed_key_file_is_a_usage_error_that_does_not_echo_it(tmp_path, capsys):
    path = tmp_path / "k"
    secret = "PRIVATE+KEY+x+00000000+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
    path.write_text(secret)
    assert main(["key", "vkey", "--key-file", str(path)]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert "AYEKFALV" not in captured.out + captured.err and "key id does not match" in captured.err
    assert main(["key", "vkey", "--key-file", str(tmp_path / "missing")]) == EXIT_USAGE
