"""`auditchain verify-proof`: check an event receipt (C2SP tlog-proof@v1) offline with the log's
verifier key. No database, no network, no AWS SDK: only auditchain.formats and cryptography (the
command line imports nothing else for this command), so an auditor needs nothing else installed.
"""

from __future__ import annotations

import argparse
import base64
from typing import Any

from ..cliutil import add_command, add_json_flag, print_json
from ..errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, AuditchainError
from ..formats import receipt
from .vkeys import add_vkey_option, read_verifiers

# No receipt comes near this: a few hundred bytes of event, 63 hashes and a short signed note.
MAX_RECEIPT_BYTES = 16 * 1024 * 1024


def read_receipt(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_RECEIPT_BYTES + 1)
    except OSError as exc:
        raise AuditchainError(
            f"cannot read {path}: {exc.strerror or type(exc).__name__}", EXIT_USAGE
        ) from None
    if len(data) > MAX_RECEIPT_BYTES:
        raise AuditchainError(f"{path} is larger than any receipt ({MAX_RECEIPT_BYTES} bytes)", EXIT_USAGE)
    return data


def summary(path: str, verified: receipt.VerifiedReceipt) -> dict[str, Any]:
    cp = verified.checkpoint
    return {
        "ok": True,
        "receipt": path,
        "origin": cp.origin,
        "tree_size": cp.size,
        "root": base64.b64encode(cp.root).decode("ascii"),
        "index": verified.index,
        "seq": verified.event["seq"],
        "event_id": verified.event["event_id"],
        "record_sha256": verified.record_sha256.hex(),
        "signed_by": list(verified.signed_by),
    }


def run(args: argparse.Namespace) -> int:
    try:
        verifiers = read_verifiers(args.vkey)
        data = read_receipt(args.receipt)
        try:
            verified = receipt.verify_receipt(data, verifiers, origin=args.origin)
        except receipt.ReceiptError as exc:
            raise AuditchainError(str(exc), EXIT_FAILED) from None
    except AuditchainError as exc:
        if args.json:
            print_json({"receipt": args.receipt, "ok": False, "exit_code": exc.exit_code, "error": str(exc)})
        raise
    result = summary(args.receipt, verified)
    if args.json:
        print_json(result)
    else:
        signers = ", ".join(result["signed_by"])
        print(
            f"OK: event seq {result['seq']} ({result['event_id']}) is leaf {result['index']} of "
            f"{result['origin']} at tree size {result['tree_size']}, signed by {signers}"
        )
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers,
        "verify-proof",
        help="verify an event receipt (C2SP tlog-proof) offline with the log's verifier key",
        description=(
            "Verify a receipt written by `auditchain prove` without the database or AWS: the\n"
            "checkpoint's signature by a trusted key, the event's record digest recomputed from its\n"
            "line, its index (seq - 1), and the Merkle inclusion proof from that leaf to the signed\n"
            "root. An inclusion proof shows that this event is in the log; it says nothing about\n"
            "other events (see docs/proofs.md).\n\n"
            "exit codes: 0 the receipt verifies; 1 it does not (truncated, another key, wrong size,\n"
            "altered proof or event: one line names the failure); 64 unreadable file or malformed key."
        ),
        needs_db=False,
    )
    parser.add_argument("receipt", metavar="FILE", help="the receipt (.tlog-proof)")
    add_vkey_option(parser, required=True)
    parser.add_argument("--origin", help="also require this checkpoint origin (auditchain/<sysid>/<db>)")
    add_json_flag(parser)
    parser.set_defaults(func=run)
