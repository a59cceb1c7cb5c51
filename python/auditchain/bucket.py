"""`auditchain bucket`: the WORM bucket for anchors (S3 Object Lock).

check            Object Lock, versioning and default retention; exit 1 unless WORM-capable
create           a bucket with Object Lock for development and demos (GOVERNANCE default)
set-compliance   switch the default retention mode to COMPLIANCE: irreversible, guarded
set-retention    change the default retention period; never lowered while in COMPLIANCE
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass

from . import s3
from .cliutil import add_command, add_json_flag, print_json
from .config import add_bucket_option, add_endpoint_options, require_bucket
from .errors import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, EXIT_USAGE, AuditchainError

STAGE_TAG = "auditchain:stage"
DAYS_PER_YEAR = 365  # how a retention given in years is compared with one given in days

IRREVERSIBLE_NOTICE = """\
Switching the bucket's default Object Lock mode to COMPLIANCE cannot be undone.
Every object written in COMPLIANCE mode can then be neither deleted nor have its retention
shortened by anyone - administrators and the AWS account root included - until its
retain-until date (365 days by default). Retention can later only be extended. A switch on
the wrong stage's bucket keeps whatever is written there for that long.

To proceed, name the stage (it must equal the bucket's "auditchain:stage" tag), type it
again, and confirm:
  auditchain bucket set-compliance --bucket B --stage S --confirm-stage S \\
      --i-understand-this-is-irreversible
Then run `auditchain anchor` with --lock-mode COMPLIANCE (AUDITCHAIN_LOCK_MODE=COMPLIANCE)."""


@dataclass(frozen=True)
class LockStatus:
    bucket: str
    object_lock_enabled: bool
    versioning: str | None
    default_mode: str | None
    default_days: int | None
    default_years: int | None

    @property
    def worm_capable(self) -> bool:
        return self.object_lock_enabled and self.versioning == "Enabled"

    @property
    def default_retention_days(self) -> int | None:
        if self.default_days is not None:
            return self.default_days
        return self.default_years * DAYS_PER_YEAR if self.default_years is not None else None

    def describe_retention(self) -> str:
        if not self.default_mode:
            return "none"
        if self.default_years is not None:
            return f"{self.default_mode}, {self.default_years} years"
        return f"{self.default_mode}, {self.default_days} days"


def read_stage_tag(client, bucket: str) -> str | None:
    """The bucket's auditchain:stage tag, None when untagged."""
    try:
        tags = client.get_bucket_tagging(Bucket=bucket)["TagSet"]
    except s3.S3_ERRORS as exc:
        if s3.error_code(exc) == "NoSuchTagSet":
            return None
        raise s3.unavailable(f"cannot read the tags of bucket {bucket}", exc) from None
    return next((t["Value"] for t in tags if t["Key"] == STAGE_TAG), None)


def read_lock_status(client, bucket: str) -> LockStatus:
    """What the bucket enforces; exit 1 when it does not exist, 3 when S3 cannot be asked."""
    try:
        versioning = client.get_bucket_versioning(Bucket=bucket).get("Status")
        try:
            config = client.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
        except s3.S3_ERRORS as exc:
            if s3.error_code(exc) != "ObjectLockConfigurationNotFoundError":
                raise
            config = {}
    except s3.S3_ERRORS as exc:
        raise s3.unavailable(f"cannot read the configuration of bucket {bucket}", exc) from None
    retention = config.get("Rule", {}).get("DefaultRetention", {})
    return LockStatus(
        bucket=bucket,
        object_lock_enabled=config.get("ObjectLockEnabled") == "Enabled",
        versioning=versioning,
        default_mode=retention.get("Mode"),
        # Exactly one of Days and Years is set; some S3 implementations report the other as 0.
        default_days=retention.get("Days") or None,
        default_years=retention.get("Years") or None,
    )


def require_worm(client, bucket: str) -> LockStatus:
    """The bucket's lock status, or a configuration error when it cannot hold WORM objects."""
    status = read_lock_status(client, bucket)
    if not status.worm_capable:
        raise AuditchainError(
            f"bucket {bucket} is not WORM-capable (Object Lock "
            f"{'enabled' if status.object_lock_enabled else 'not enabled'}, versioning "
            f"{status.versioning or 'never enabled'}); anchors need a bucket created with Object Lock",
            EXIT_CONFIG,
        )
    return status


def put_default_retention(client, bucket: str, mode: str, days: int) -> None:
    try:
        client.put_object_lock_configuration(
            Bucket=bucket,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": mode, "Days": days}},
            },
        )
    except s3.S3_ERRORS as exc:
        raise s3.unavailable(f"cannot set the default retention of bucket {bucket}", exc) from None


def _run_check(args: argparse.Namespace) -> int:
    client = s3.client_from_args(args)
    bucket = require_bucket(args)
    status = read_lock_status(client, bucket)
    stage = read_stage_tag(client, bucket)
    if args.json:
        print_json({**asdict(status), "stage": stage, "worm_capable": status.worm_capable})
    else:
        print(f"bucket:            {status.bucket}")
        print(f"object lock:       {'enabled' if status.object_lock_enabled else 'NOT enabled'}")
        print(f"versioning:        {status.versioning or 'never enabled'}")
        print(f"default retention: {status.describe_retention()}")
        print(f"stage tag:         {stage or 'none'}")
        print(f"WORM-capable:      {'yes' if status.worm_capable else 'NO'}")
    return EXIT_OK if status.worm_capable else EXIT_FAILED


def _bucket_exists(client, bucket: str) -> bool:
    try:
        client.head_bucket(Bucket=bucket)
        return True
    except s3.S3_ERRORS as exc:
        if s3.is_not_found(exc):
            return False
        raise s3.unavailable(f"cannot look up bucket {bucket}", exc) from None


def _run_create(args: argparse.Namespace) -> int:
    bucket = require_bucket(args)
    client = s3.client_from_args(args)
    if _bucket_exists(client, bucket):
        status = require_worm(client, bucket)
        print(f"bucket {bucket} already exists with Object Lock ({status.describe_retention()})")
        return EXIT_OK
    params: dict = {"Bucket": bucket, "ObjectLockEnabledForBucket": True}
    region = client.meta.region_name
    if region and region != "us-east-1":
        params["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        client.create_bucket(**params)
        if args.stage:
            client.put_bucket_tagging(
                Bucket=bucket, Tagging={"TagSet": [{"Key": STAGE_TAG, "Value": args.stage}]}
            )
    except s3.S3_ERRORS as exc:
        raise s3.unavailable(f"cannot create bucket {bucket}", exc) from None
    put_default_retention(client, bucket, "GOVERNANCE", args.retention_days)
    print(
        f"created bucket {bucket} with Object Lock, default retention GOVERNANCE {args.retention_days} days"
    )
    return EXIT_OK


def _run_set_compliance(args: argparse.Namespace) -> int:
    bucket = require_bucket(args)
    client = s3.client_from_args(args)
    status = require_worm(client, bucket)
    if status.default_mode == "COMPLIANCE":
        print(f"bucket {bucket} is already in COMPLIANCE mode ({status.describe_retention()}); nothing to do")
        return EXIT_OK
    stage = read_stage_tag(client, bucket)
    refusal = None
    if stage is None:
        refusal = f'bucket {bucket} has no "{STAGE_TAG}" tag; tag it with its stage first'
    elif stage != args.stage:
        refusal = f'bucket {bucket} belongs to stage "{stage}", not "{args.stage}"'
    elif args.confirm_stage != args.stage:
        refusal = "--confirm-stage must repeat --stage exactly"
    elif not args.i_understand_this_is_irreversible:
        refusal = "--i-understand-this-is-irreversible is required"
    days = args.retention_days or status.default_retention_days or 365
    if refusal is None and status.default_retention_days and days < status.default_retention_days:
        refusal = f"--retention-days {days} is lower than the current default {status.default_retention_days}"
    if refusal:
        print(IRREVERSIBLE_NOTICE, file=sys.stderr)
        raise AuditchainError(f"refused: {refusal}; nothing was changed", EXIT_USAGE)
    put_default_retention(client, bucket, "COMPLIANCE", days)
    print(f"bucket {bucket} (stage {args.stage}): default retention is now COMPLIANCE, {days} days.")
    print("This cannot be undone. Run `auditchain anchor` with --lock-mode COMPLIANCE from now on.")
    return EXIT_OK


def _run_set_retention(args: argparse.Namespace) -> int:
    bucket = require_bucket(args)
    client = s3.client_from_args(args)
    status = require_worm(client, bucket)
    mode = status.default_mode or "GOVERNANCE"
    current = status.default_retention_days
    if mode == "COMPLIANCE" and current is not None and args.days < current:
        raise AuditchainError(
            f"refused: bucket {bucket} is in COMPLIANCE mode; its default retention of {current} days can "
            f"only be extended, not lowered to {args.days} (anchors would get inconsistent retention); "
            "nothing was changed",
            EXIT_USAGE,
        )
    put_default_retention(client, bucket, mode, args.days)
    print(f"bucket {bucket}: default retention is now {mode}, {args.days} days")
    return EXIT_OK


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive number of days")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    group = add_command(
        subparsers,
        "bucket",
        help="check or set up the WORM bucket for anchors",
        needs_db=False,
        description=__doc__,
    )
    commands = group.add_subparsers(dest="bucket_command", metavar="ACTION", required=True)

    def action(name: str, help: str, func) -> argparse.ArgumentParser:
        p = add_command(commands, name, help=help, needs_db=False)
        add_bucket_option(p)
        add_endpoint_options(p)
        p.set_defaults(func=func)
        return p

    check = action(
        "check",
        "report Object Lock, versioning and default retention; exit 1 unless WORM-capable",
        _run_check,
    )
    add_json_flag(check)

    create = action("create", "create a bucket with Object Lock (development and demos)", _run_create)
    create.add_argument(
        "--retention-days",
        type=_positive_int,
        default=365,
        help="default GOVERNANCE retention (default: 365)",
    )
    create.add_argument("--stage", help=f'tag the bucket "{STAGE_TAG}=STAGE" (needed by set-compliance)')

    comply = action(
        "set-compliance", "switch the default retention to COMPLIANCE (irreversible)", _run_set_compliance
    )
    comply.description = IRREVERSIBLE_NOTICE
    comply.add_argument(
        "--stage", required=True, help=f'the stage the bucket belongs to (its "{STAGE_TAG}" tag)'
    )
    comply.add_argument("--confirm-stage", required=True, help="the same stage, typed again")
    comply.add_argument(
        "--i-understand-this-is-irreversible",
        action="store_true",
        help="confirm that COMPLIANCE cannot be switched back",
    )
    comply.add_argument(
        "--retention-days",
        type=_positive_int,
        help="default retention in days (default: the current one, else 365)",
    )

    retention = action(
        "set-retention",
        "change the default retention period (never lowered in COMPLIANCE)",
        _run_set_retention,
    )
    retention.add_argument("--days", type=_positive_int, required=True, help="new default retention in days")
