"""Who signs checkpoints: a local Ed25519 key file (the C2SP note signer-key format) or an AWS KMS key
(key spec ECC_NIST_EDWARDS25519, algorithm ED25519_SHA_512, message type RAW: pure RFC 8032 Ed25519,
the signature a note verifier expects).

botocore is imported only when KMS is used: a local key needs no AWS SDK.

The private key never leaves its file or KMS through this module: it is not logged, not shown in
errors or reprs, and never sent to the database. Only signed checkpoints and the verifier key leave.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key

from .errors import EXIT_CONFIG, EXIT_FAILED, EXIT_UNAVAILABLE, EXIT_USAGE, AuditchainError
from .formats import note
from .formats.checkpoint import Checkpoint

log = logging.getLogger(__name__)

KMS_KEY_SPEC = "ECC_NIST_EDWARDS25519"
KMS_SIGNING_ALGORITHM = "ED25519_SHA_512"
KMS_MAX_MESSAGE = 4096  # KMS Sign with MessageType RAW; a checkpoint body is about 100 bytes
# KMS answers that mean "this key or these credentials cannot be used", not "try again later".
_KMS_CONFIG_ERRORS = {
    "AccessDeniedException",
    "DisabledException",
    "InvalidKeyUsageException",
    "KMSInvalidStateException",
    "NotFoundException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "IncompleteSignature",
    "ExpiredTokenException",
}


def load_key_file(path: str | Path) -> note.LocalSigner:
    """The signer in a key file written by `auditchain key generate` (one PRIVATE+KEY+... line)."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditchainError(f"cannot read the key file {path}: {type(exc).__name__}", EXIT_USAGE) from None
    try:
        return note.parse_skey(text)
    except note.NoteError as exc:
        raise AuditchainError(f"key file {path}: {exc}", EXIT_USAGE) from None


def _kms_failure(action: str, exc: Exception) -> AuditchainError:
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "ClientError"))
        message = exc.response.get("Error", {}).get("Message", "")
        exit_code = EXIT_CONFIG if code in _KMS_CONFIG_ERRORS else EXIT_UNAVAILABLE
        return AuditchainError(f"KMS {action}: {code}: {message}".rstrip(": "), exit_code)
    if isinstance(exc, NoCredentialsError):
        return AuditchainError(f"KMS {action}: no AWS credentials", EXIT_CONFIG)
    return AuditchainError(f"KMS {action}: {type(exc).__name__}: {exc}", EXIT_UNAVAILABLE)


class KmsSigner:
    """Signs note text with an Ed25519 key held by AWS KMS. The public key (and so the key ID) comes
    from GetPublicKey once; every signature is checked against it before it is used."""

    def __init__(self, client: Any, key_id: str, name: str | None = None):
        from botocore.exceptions import BotoCoreError, ClientError

        self._client = client
        self._errors = (BotoCoreError, ClientError)
        try:
            answer = client.get_public_key(KeyId=key_id)
        except self._errors as exc:
            raise _kms_failure(f"GetPublicKey for {key_id}", exc) from None
        if answer.get("KeySpec") != KMS_KEY_SPEC or KMS_SIGNING_ALGORITHM not in answer.get(
            "SigningAlgorithms", []
        ):
            raise AuditchainError(
                f"KMS key {key_id} is {answer.get('KeySpec')}, not an {KMS_KEY_SPEC} signing key "
                f"that allows {KMS_SIGNING_ALGORITHM}",
                EXIT_CONFIG,
            )
        public = load_der_public_key(answer["PublicKey"])
        if not isinstance(public, Ed25519PublicKey):
            raise AuditchainError(f"KMS key {key_id} returned a public key that is not Ed25519", EXIT_CONFIG)
        # The key ARN: one stable name per key, whatever alias or ID the operator typed.
        self._key_id = answer.get("KeyId") or key_id
        self._name = name or self._key_id
        if not note.valid_name(self._name):
            raise AuditchainError(f"invalid key name {self._name!r}: no spaces or '+' allowed", EXIT_USAGE)
        self._public = public.public_bytes_raw()

    @property
    def name(self) -> str:
        return self._name

    @property
    def public_key(self) -> bytes:
        return self._public

    def sign(self, message: bytes) -> bytes:
        if len(message) > KMS_MAX_MESSAGE:
            raise AuditchainError(f"note of {len(message)} bytes exceeds KMS's {KMS_MAX_MESSAGE}-byte limit")
        try:
            answer = self._client.sign(
                KeyId=self._key_id,
                Message=message,
                MessageType="RAW",
                SigningAlgorithm=KMS_SIGNING_ALGORITHM,
            )
        except self._errors as exc:
            raise _kms_failure(f"Sign with {self._key_id}", exc) from None
        return answer["Signature"]

    def __repr__(self) -> str:
        return f"KmsSigner({self._key_id!r})"


def kms_client(region: str | None = None) -> Any:
    """A KMS client from boto3's standard chain (AWS_ENDPOINT_URL_KMS is honoured by botocore itself)."""
    import boto3
    from botocore.exceptions import BotoCoreError

    from .s3 import CLIENT_CONFIG

    try:
        return boto3.session.Session().client("kms", region_name=region or None, config=CLIENT_CONFIG)
    except BotoCoreError as exc:
        raise AuditchainError(f"cannot configure the KMS client: {exc}", EXIT_CONFIG) from None


def signer_from_options(
    key_file: str | None, kms_key_id: str | None, name: str | None = None, region: str | None = None
) -> note.Signer:
    """The signer that --signing-key/--key-file FILE or --kms-key-id ID [--name NAME] select."""
    if key_file:
        if name:
            raise AuditchainError("--name applies to KMS keys only: a key file carries its name", EXIT_USAGE)
        return load_key_file(key_file)
    if kms_key_id:
        return KmsSigner(kms_client(region), kms_key_id, name)
    raise AuditchainError("a signing key is needed: a key file or --kms-key-id", EXIT_USAGE)


def sign_checkpoint(body: Checkpoint | bytes, signer: note.Signer) -> bytes:
    """The signed checkpoint note for a checkpoint (or its body). Each signature is verified against
    the signer's public key before it is returned (note.sign), so a faulty signer never publishes."""
    text = body.body() if isinstance(body, Checkpoint) else body
    try:
        signed = note.sign(text, [signer])
    except note.NoteError as exc:
        raise AuditchainError(f"cannot sign the checkpoint: {exc}", EXIT_FAILED) from None
    log.debug("signed a checkpoint with %s", note.encode_vkey(signer.name, signer.public_key))
    return signed
