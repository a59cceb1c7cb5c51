"""S3 clients built from configuration: endpoint URL, region and boto3's standard credential chain.

Shared by every command that talks to S3 (anchors, bucket management, verification, exports).
Credentials are never passed or logged here: boto3 finds them (environment, profile, instance
or task role) as it does for the AWS CLI.
"""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)

from .errors import EXIT_CONFIG, EXIT_UNAVAILABLE, EXIT_USAGE, AuditchainError

# A few quick retries inside one command; an anchor that still fails stays pending for the next run.
CLIENT_CONFIG = Config(
    connect_timeout=5,
    read_timeout=30,
    retries={"mode": "standard", "max_attempts": 3},
)


AWS_HOST_SUFFIXES = (".amazonaws.com", ".amazonaws.com.cn")

# S3 error codes that mean the store answered but is not set up for us: no such bucket, or
# an access key it does not know.
NOT_SET_UP = ("NoSuchBucket", "InvalidAccessKeyId")

# Every error boto3 raises for a request: the service said no (ClientError) or never answered.
S3_ERRORS = (ClientError, BotoCoreError)


def make_client(endpoint_url: str | None = None, region: str | None = None) -> Any:
    """An S3 client. The endpoint is endpoint_url, else what boto3 resolves (AWS_ENDPOINT_URL_S3,
    AWS_ENDPOINT_URL, the profile), else AWS; any endpoint but AWS's own (MinIO, moto, Ceph) gets
    path-style addressing, which they serve without wildcard DNS."""
    try:
        session = boto3.session.Session()
        client = session.client(
            "s3", endpoint_url=endpoint_url or None, region_name=region or None, config=CLIENT_CONFIG
        )
        host = urllib.parse.urlsplit(client.meta.endpoint_url).hostname or ""
        if host.endswith(AWS_HOST_SUFFIXES):
            return client
        return session.client(
            "s3",
            endpoint_url=client.meta.endpoint_url,
            region_name=region or None,
            config=CLIENT_CONFIG.merge(Config(s3={"addressing_style": "path"})),
        )
    except BotoCoreError as exc:
        raise AuditchainError(f"cannot configure the S3 client: {exc}", EXIT_UNAVAILABLE) from None


def client_from_args(args: argparse.Namespace) -> Any:
    return make_client(args.endpoint_url, args.region)


def error_code(exc: Exception) -> str:
    """The S3 error code (NoSuchKey, AccessDenied, ...) or the botocore exception's class name."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


def describe_error(exc: Exception) -> str:
    """One line for logs and the database: code and message, never credentials."""
    if isinstance(exc, ClientError):
        message = exc.response.get("Error", {}).get("Message", "")
        return f"{error_code(exc)}: {message}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"


def is_not_found(exc: Exception) -> bool:
    if not isinstance(exc, ClientError):
        return False
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 404 or error_code(exc) in ("404", "NoSuchKey", "NoSuchVersion", "NotFound")


def unavailable(action: str, exc: Exception) -> AuditchainError:
    """The error a command raises when S3 could not be used: EXIT_UNAVAILABLE (retry later)
    unless the bucket or the credentials are missing (EXIT_CONFIG) or the request itself was
    malformed, e.g. an invalid bucket name (EXIT_USAGE)."""
    if isinstance(exc, ParamValidationError):
        code = EXIT_USAGE
    elif isinstance(exc, NoCredentialsError | PartialCredentialsError) or error_code(exc) in NOT_SET_UP:
        code = EXIT_CONFIG
    else:
        code = EXIT_UNAVAILABLE
    return AuditchainError(f"{action}: {describe_error(exc)}", code)
