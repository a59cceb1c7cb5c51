"""`auditchain prove`: one event's receipt, a C2SP tlog-proof (docs/proofs.md "Receipts").

Reads compliance.event_receipt(): the event's line (exactly as an export bundle carries it,
payload included), the newest uploaded signed checkpoint whose tree covers the event, and the
inclusion proof for that tree size. The receipt is checked against the checkpoint's root before
it is written (not its signature: that needs the verifier key, `auditchain verify-proof`).
Needs only the auditor role's privileges.

exit codes: 0 written; 1 the database's tree no longer leads to the signed root (the log was
rewritten after it was signed); 64 no chained event with that seq or event_id, or bad options;
69 no signed checkpoint covers the event yet (the next anchor will) or the database is
unreachable; 78 the database is not set up.
"""

from __future__ import annotations

import argparse
import base64
import sys
from typing import Any
from uuid import UUID

import psycopg

from . import db
from .cliutil import add_command, add_json_flag, print_json
from .errors import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, AuditchainError, first_line
from .formats import checkpoint, merkle, receipt
from .formats.strictjson import parse_json_object

NO_SUCH_EVENT = "AC074"
NOT_SIGNED_YET = "AC075"


def fetch(dsn: str, seq: int | None, event_id: UUID | None) -> tuple:
    with db.setup_errors(dsn), db.connect(dsn, app="auditchain prove") as conn:
        try:
            return conn.execute(
                "SELECT event_seq, tree_size, inclusion_proof, signed_checkpoint, event_line, anchor_id,"
                " cadence_id FROM compliance.event_receipt(seq => %s, event_id => %s)",
                (seq, event_id),
            ).fetchone()
        except psycopg.Error as exc:
            if exc.sqlstate == NO_SUCH_EVENT:
                raise AuditchainError(first_line(exc), EXIT_USAGE) from None
            if exc.sqlstate == NOT_SIGNED_YET:
                raise AuditchainError(first_line(exc), EXIT_UNAVAILABLE) from None
            raise


def check_against_root(seq: int, proof: list[bytes], signed: bytes, line: bytes) -> checkpoint.Checkpoint:
    """The proof leads from the event's leaf to the root the checkpoint states, or EXIT_FAILED."""
    body = signed[: signed.index(b"\n\n") + 1]
    cp = checkpoint.parse(body)
    leaf = merkle.leaf_hash(receipt.event_leaf(parse_json_object(line)))
    try:
        merkle.verify_inclusion(leaf, seq - 1, cp.size, proof, cp.root)
    except merkle.ProofError as exc:
        raise AuditchainError(
            f"event seq {seq}: the database's Merkle tree does not lead to the root of the signed checkpoint "
            f"at tree size {cp.size} ({exc}): the log was changed after it was signed; "
            "run `auditchain verify`",
            EXIT_FAILED,
        ) from None
    return cp


def run(args: argparse.Namespace) -> int:
    seq, size, proof, signed_text, line_text, anchor_id, cadence_id = fetch(args.dsn, args.seq, args.event_id)
    signed, line = signed_text.encode("utf-8"), line_text.encode("utf-8")
    proof = [bytes(h) for h in proof]
    cp = check_against_root(seq, proof, signed, line)
    data = receipt.build_receipt(seq - 1, proof, signed, line)
    if args.out:
        try:
            with open(args.out, "wb") as f:
                f.write(data)
        except OSError as exc:
            raise AuditchainError(
                f"cannot write {args.out}: {exc.strerror or type(exc).__name__}", EXIT_USAGE
            ) from None
    summary: dict[str, Any] = {
        "seq": seq,
        "event_id": parse_json_object(line)["event_id"],
        "origin": cp.origin,
        "tree_size": size,
        "root": base64.b64encode(cp.root).decode("ascii"),
        "anchor_id": anchor_id,
        "cadence_id": cadence_id,
        "out": args.out,
    }
    if args.json:
        if not args.out:
            summary["receipt"] = data.decode("utf-8")
        print_json(summary)
    elif args.out:
        print(
            f"receipt for event seq {seq} written to {args.out}: leaf {seq - 1} of {cp.origin} at tree size "
            f"{size} (anchor {anchor_id}); check it with `auditchain verify-proof {args.out} --vkey VKEY`"
        )
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return EXIT_OK


def _seq(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("a seq is 1 or more")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers,
        "prove",
        help="write an event's receipt (C2SP tlog-proof) against its newest signed checkpoint",
        description=__doc__,
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--seq", type=_seq, help="the event's seq")
    which.add_argument("--event-id", type=UUID, metavar="UUID", help="the event's event_id")
    p.add_argument("--out", metavar="FILE", help="write the receipt here (default: standard output)")
    add_json_flag(p)
    p.set_defaults(func=run)
