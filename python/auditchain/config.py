"""Configuration from the environment, read in this one place.

Every variable the CLI reads is listed in ENVIRONMENT with what it sets; a command-line
option always wins over its variable. AWS credentials, region and endpoint (AWS_*) are left
to boto3's standard chain and libpq reads its own PG* variables: neither is repeated here.
docs/cli.md lists the same table (a test keeps them equal).
"""

from __future__ import annotations

import argparse
import os

from .errors import EXIT_USAGE, AuditchainError

ENVIRONMENT = {
    "DATABASE_URL": "PostgreSQL connection string (--dsn); else libpq's PGHOST, PGPORT, PGUSER, PGDATABASE",
    "AUDITCHAIN_BUCKET": "S3 bucket of anchors and exports (--bucket)",
    "AUDITCHAIN_ANCHOR_PREFIX": "key prefix of anchor objects in the bucket (--prefix)",
    "AUDITCHAIN_LOCK_MODE": "Object Lock mode of uploaded anchors: GOVERNANCE or COMPLIANCE (--lock-mode)",
    "AUDITCHAIN_RETENTION_DAYS": "Object Lock retention of uploaded anchors in days (--retention-days)",
    "AUDITCHAIN_SSE_KMS_KEY_ID": "KMS key for SSE-KMS encryption of anchor objects (--sse-kms-key-id)",
    "AUDITCHAIN_SIGNING_KEY": "key file that signs anchor checkpoints (--signing-key)",
    "AUDITCHAIN_SIGNING_KMS_KEY_ID": "AWS KMS Ed25519 key that signs anchor checkpoints (--kms-key-id)",
    "AUDITCHAIN_ANCHOR_LEASE_SECONDS": "seconds an uploader holds a claimed anchor (--lease-seconds)",
    "AUDITCHAIN_SCHEMA_DIR": "folder holding migrations/ and sql/ (default: the installed package's copy)",
}


def env(name: str) -> str | None:
    """The variable's value, None when unset or empty. Only listed variables may be read."""
    if name not in ENVIRONMENT:
        raise KeyError(f"{name} is not a documented auditchain variable")
    return os.environ.get(name) or None


def pg_env(name: str) -> str | None:
    """A libpq variable (PGHOST...), read only to name the target in messages."""
    return os.environ.get(name) or None


def add_endpoint_options(parser: argparse.ArgumentParser) -> None:
    """--endpoint-url and --region for S3; unset, boto3 resolves them (AWS_ENDPOINT_URL_S3,
    AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, the profile) exactly as the AWS CLI does."""
    parser.add_argument(
        "--endpoint-url",
        default=None,
        help="S3-compatible endpoint (default: boto3's AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else AWS)",
    )
    parser.add_argument(
        "--region", default=None, help="AWS region (default: AWS_DEFAULT_REGION or the profile)"
    )


def add_bucket_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bucket", default=env("AUDITCHAIN_BUCKET"), help="S3 bucket (default: AUDITCHAIN_BUCKET)"
    )


def require_bucket(args: argparse.Namespace) -> str:
    if not args.bucket:
        raise AuditchainError("no bucket: pass --bucket or set AUDITCHAIN_BUCKET", EXIT_USAGE)
    return args.bucket
