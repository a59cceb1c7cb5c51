"""`auditchain key generate` and `auditchain key vkey`: the checkpoint signing key and the one-line
verifier key an auditor is given (C2SP signed-note formats; docs/proofs.md, "Key management")."""

from __future__ import annotations

import argparse
import os
import sys

from . import signing
from .cliutil import add_command
from .errors import EXIT_OK, EXIT_USAGE, AuditchainError
from .formats import note


def write_new_key_file(path: str, skey: str) -> None:
    """Create the file with mode 0600 (never widened by the umask, never replacing a file)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AuditchainError(
            f"{path} already exists: a signing key is never overwritten", EXIT_USAGE
        ) from None
    except OSError as exc:
        raise AuditchainError(f"cannot create {path}: {exc.strerror}", EXIT_USAGE) from None
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(skey + "\n")


def run_generate(args: argparse.Namespace) -> int:
    try:
        skey = note.generate_skey(args.name)
    except note.NoteError as exc:
        raise AuditchainError(str(exc), EXIT_USAGE) from None
    write_new_key_file(args.out, skey)
    signer = note.parse_skey(skey)
    print(note.encode_vkey(signer.name, signer.public_key))
    print(
        f"signing key written to {args.out} (mode 0600); the line above is its verifier key", file=sys.stderr
    )
    return EXIT_OK


def run_vkey(args: argparse.Namespace) -> int:
    signer = signing.signer_from_options(args.key_file, args.kms_key_id, args.name, args.region)
    print(note.encode_vkey(signer.name, signer.public_key))
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    key = add_command(
        subparsers, "key", help="create a checkpoint signing key, print a verifier key", needs_db=False
    )
    actions = key.add_subparsers(dest="key_command", metavar="ACTION", required=True)

    generate = add_command(
        actions,
        "generate",
        help="write a new Ed25519 signing key (C2SP note signer-key format) and print its verifier key",
        description=(
            "Write a new Ed25519 signing key to FILE (mode 0600; an existing file is never replaced)\n"
            "and print its one-line verifier key on stdout. NAME is the key name every signature\n"
            "carries; use the log's checkpoint origin, auditchain/<system_identifier>/<database>.\n\n"
            "exit codes: 0 written; 64 bad name, or FILE exists or cannot be created."
        ),
        needs_db=False,
    )
    generate.add_argument("--name", required=True, help="key name: no spaces or '+'")
    generate.add_argument("--out", required=True, metavar="FILE", help="where to write the signing key")
    generate.set_defaults(func=run_generate)

    vkey = add_command(
        actions,
        "vkey",
        help="print the one-line verifier key of a key file or an AWS KMS key",
        description=(
            "Print the verifier key (name+keyid+base64 key) that auditors pass to `verify-proof`\n"
            "and to Go's golang.org/x/mod/sumdb/note. For KMS, the key must be an\n"
            "ECC_NIST_EDWARDS25519 signing key; NAME defaults to the key's ARN and must be the\n"
            "same name `anchor` signs with.\n\n"
            "exit codes: 0 printed; 64 unreadable or malformed key file; 69 KMS unreachable;\n"
            "78 KMS key missing, not allowed, or not an Ed25519 signing key."
        ),
        needs_db=False,
    )
    source = vkey.add_mutually_exclusive_group(required=True)
    source.add_argument("--key-file", metavar="FILE", help="a key file written by `key generate`")
    source.add_argument("--kms-key-id", metavar="ID", help="an AWS KMS key ID, ARN or alias")
    vkey.add_argument("--name", help="key name for a KMS key (default: the key ARN)")
    vkey.add_argument("--region", help="AWS region of the KMS key (default: the AWS configuration)")
    vkey.set_defaults(func=run_vkey)
