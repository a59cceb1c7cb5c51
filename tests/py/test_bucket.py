"""`auditchain bucket` against the loopback S3 API: check, create, the guarded switch to
COMPLIANCE and the refusal to lower retention in COMPLIANCE. moto itself enforces neither
the irreversibility nor the retention floor, so every refusal tested here is ours."""

from __future__ import annotations

import json

import pytest

from auditchain.errors import EXIT_CONFIG, EXIT_UNAVAILABLE, EXIT_USAGE
from test_anchor import make_worm_bucket, run_cli, s3_client


def bucket_cli(capsys, endpoint_url: str, action: str, bucket: str, *extra: str) -> tuple[int, str, str]:
    return run_cli(capsys, "bucket", action, "--endpoint-url", endpoint_url, "--bucket", bucket, *extra)


def default_retention(endpoint_url: str, bucket: str) -> dict:
    config = s3_client(endpoint_url).get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    # moto reports the unused one of Days/Years as 0; S3 leaves it out.
    return {k: v for k, v in config["Rule"]["DefaultRetention"].items() if v}


def tag_stage(endpoint_url: str, bucket: str, stage: str) -> None:
    s3_client(endpoint_url).put_bucket_tagging(
        Bucket=bucket, Tagging={"TagSet": [{"Key": "auditchain:stage", "Value": stage}]}
    )


def test_check_reports_a_worm_bucket(endpoint_url, bucket_name, capsys):
    make_worm_bucket(endpoint_url, bucket_name, days=30)

    code, out, _ = bucket_cli(capsys, endpoint_url, "check", bucket_name, "--json")

    assert code == 0
    assert json.loads(out) == {
        "bucket": bucket_name,
        "object_lock_enabled": True,
        "versioning": "Enabled",
        "default_mode": "GOVERNANCE",
        "default_days": 30,
        "default_years": None,
        "stage": None,
        "worm_capable": True,
    }


def test_check_fails_for_a_bucket_without_object_lock(endpoint_url, bucket_name, capsys):
    s3_client(endpoint_url).create_bucket(Bucket=bucket_name)

    code, out, _ = bucket_cli(capsys, endpoint_url, "check", bucket_name)

    assert code == 1
    assert "object lock:       NOT enabled\n" in out
    assert out.endswith("WORM-capable:      NO\n")


def test_a_missing_bucket_is_a_setup_problem_and_an_unreachable_store_is_unavailable(endpoint_url, capsys):
    code, _, err = bucket_cli(capsys, endpoint_url, "check", "ac-no-such-bucket-here")
    assert code == EXIT_CONFIG
    assert "NoSuchBucket" in err

    code, _, err = bucket_cli(capsys, "http://127.0.0.1:9", "check", "ac-no-such-bucket-here")
    assert code == EXIT_UNAVAILABLE
    assert "Could not connect" in err


def test_create_makes_a_worm_bucket_with_governance_default_and_is_idempotent(
    endpoint_url, bucket_name, capsys
):
    code, out, err = bucket_cli(
        capsys, endpoint_url, "create", bucket_name, "--retention-days", "90", "--stage", "dev"
    )

    assert code == 0, err
    assert out == f"created bucket {bucket_name} with Object Lock, default retention GOVERNANCE 90 days\n"
    assert default_retention(endpoint_url, bucket_name) == {"Mode": "GOVERNANCE", "Days": 90}
    assert s3_client(endpoint_url).get_bucket_versioning(Bucket=bucket_name)["Status"] == "Enabled"
    assert bucket_cli(capsys, endpoint_url, "check", bucket_name)[1].count("stage tag:         dev\n") == 1

    code, out, _ = bucket_cli(capsys, endpoint_url, "create", bucket_name)
    assert (code, out) == (0, f"bucket {bucket_name} already exists with Object Lock (GOVERNANCE, 90 days)\n")


def test_create_refuses_an_existing_bucket_without_object_lock(endpoint_url, bucket_name, capsys):
    s3_client(endpoint_url).create_bucket(Bucket=bucket_name)

    code, _, err = bucket_cli(capsys, endpoint_url, "create", bucket_name)

    assert code == EXIT_CONFIG
    assert "is not WORM-capable" in err


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--stage", "prod", "--confirm-stage", "prod"], "--i-understand-this-is-irreversible is required"),
        (
            ["--stage", "prod", "--confirm-stage", "prd", "--i-understand-this-is-irreversible"],
            "must repeat --stage",
        ),
        (
            ["--stage", "staging", "--confirm-stage", "staging", "--i-understand-this-is-irreversible"],
            'belongs to stage "prod", not "staging"',
        ),
    ],
    ids=["no-flag", "mistyped-stage", "wrong-stage"],
)
def test_set_compliance_refuses_without_matching_stage_and_flag(
    endpoint_url, bucket_name, capsys, args, reason
):
    make_worm_bucket(endpoint_url, bucket_name)
    tag_stage(endpoint_url, bucket_name, "prod")

    code, _, err = bucket_cli(capsys, endpoint_url, "set-compliance", bucket_name, *args)

    assert code == EXIT_USAGE
    assert reason in err
    assert "cannot be undone" in err
    assert default_retention(endpoint_url, bucket_name)["Mode"] == "GOVERNANCE"


def test_set_compliance_refuses_an_untagged_bucket(endpoint_url, bucket_name, capsys):
    make_worm_bucket(endpoint_url, bucket_name)

    code, _, err = bucket_cli(
        capsys,
        endpoint_url,
        "set-compliance",
        bucket_name,
        "--stage",
        "prod",
        "--confirm-stage",
        "prod",
        "--i-understand-this-is-irreversible",
    )

    assert code == EXIT_USAGE
    assert 'has no "auditchain:stage" tag' in err
    assert default_retention(endpoint_url, bucket_name)["Mode"] == "GOVERNANCE"


def test_set_compliance_switches_the_default_mode_keeping_retention(endpoint_url, bucket_name, capsys):
    make_worm_bucket(endpoint_url, bucket_name, days=400)
    tag_stage(endpoint_url, bucket_name, "prod")
    confirm = ["--stage", "prod", "--confirm-stage", "prod", "--i-understand-this-is-irreversible"]

    code, out, err = bucket_cli(capsys, endpoint_url, "set-compliance", bucket_name, *confirm)

    assert code == 0, err
    assert "default retention is now COMPLIANCE, 400 days" in out
    assert default_retention(endpoint_url, bucket_name) == {"Mode": "COMPLIANCE", "Days": 400}

    code, out, _ = bucket_cli(capsys, endpoint_url, "set-compliance", bucket_name, *confirm)
    assert (code, out) == (
        0,
        f"bucket {bucket_name} is already in COMPLIANCE mode (COMPLIANCE, 400 days); nothing to do\n",
    )


def test_set_retention_refuses_to_lower_retention_in_compliance_mode(endpoint_url, bucket_name, capsys):
    make_worm_bucket(endpoint_url, bucket_name, mode="COMPLIANCE", days=365)

    code, _, err = bucket_cli(capsys, endpoint_url, "set-retention", bucket_name, "--days", "364")

    assert code == EXIT_USAGE
    assert "can only be extended, not lowered to 364" in err
    assert default_retention(endpoint_url, bucket_name) == {"Mode": "COMPLIANCE", "Days": 365}

    code, out, _ = bucket_cli(capsys, endpoint_url, "set-retention", bucket_name, "--days", "400")
    assert (code, out) == (0, f"bucket {bucket_name}: default retention is now COMPLIANCE, 400 days\n")
    assert default_retention(endpoint_url, bucket_name) == {"Mode": "COMPLIANCE", "Days": 400}


def test_set_retention_may_lower_governance_retention(endpoint_url, bucket_name, capsys):
    make_worm_bucket(endpoint_url, bucket_name, days=365)

    code, _, err = bucket_cli(capsys, endpoint_url, "set-retention", bucket_name, "--days", "30")

    assert code == 0, err
    assert default_retention(endpoint_url, bucket_name) == {"Mode": "GOVERNANCE", "Days": 30}


def test_bucket_commands_need_a_bucket(endpoint_url, capsys, monkeypatch):
    monkeypatch.delenv("AUDITCHAIN_BUCKET", raising=False)

    code, _, err = run_cli(capsys, "bucket", "check", "--endpoint-url", endpoint_url)

    assert code == EXIT_USAGE
    assert "no bucket: pass --bucket or set AUDITCHAIN_BUCKET" in err
