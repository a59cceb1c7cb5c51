"""Case tenant_export: one tenant's events, 1% of the log, as a tenant bundle against the same
tenant as a range bundle (filter {"tenant_id": ...}), both written by `auditchain export run`
into the loopback moto S3 and checked by `auditchain verify-bundle`.

The filler gives tenant-1pct every 100th event. Before the timed part (untimed): the tenant
heads are committed, the commitment chained, an anchor recorded and its checkpoint signed
with a throw-away key (record_anchor_upload with the signed note: the bundle needs the signed
checkpoint in the database, not the anchor object in S3). Figures: events/s of the export in
tenant mode against range mode (the ratio is the speed-up), and beside it the bundle bytes,
the verifier's seconds and both tools' peak RSS in each mode."""

from __future__ import annotations

import json
from pathlib import Path

from auditchain.formats import note

from .exports import BUCKET, BundleLab, missing
from .ledger import Ledger, human
from .results import Row, Target

TENANT = "tenant-1pct"
SIGNER = note.parse_skey(note.generate_skey("bench-checkpoints"))


def _sign_pending_anchors(ledger: Ledger) -> None:
    """What `auditchain anchor` records after uploading, without the uploads."""
    while row := ledger.conn.execute(
        "SELECT anchor_id, seq_to, cadence_id, lease_id FROM compliance.claim_next_anchor('bench')"
    ).fetchone():
        anchor_id, seq_to, cadence_id, lease_id = row
        body = ledger.scalar("SELECT checkpoint FROM compliance.anchors WHERE anchor_id = %s", (anchor_id,))
        signed = note.sign(body.encode(), [SIGNER]).decode()
        name = f"{seq_to:020d}-{cadence_id}"
        ledger.conn.execute(
            "SELECT compliance.record_anchor_upload(%s, %s, %s, 'v1', 'COMPLIANCE', now() + interval '1 day',"
            " %s, %s, %s, 'v1')",
            (
                anchor_id,
                BUCKET,
                f"bench/anchors/{name}.json",
                lease_id,
                signed,
                f"bench/checkpoints/{name}.checkpoint",
            ),
        )


def _commit_and_sign(ledger: Ledger) -> None:
    ledger.drain_all()
    ledger.scalar("SELECT compliance.create_anchor()")
    ledger.scalar("SELECT compliance.commit_tenant_heads()")
    ledger.drain_all()
    ledger.scalar("SELECT compliance.create_anchor()")
    _sign_pending_anchors(ledger)


def _export(lab: BundleLab, size: int, mode: str) -> tuple[dict, int, Path]:
    """Request and run one export; its outcome, the runner's peak RSS (KiB) and the downloaded folder."""
    job_id = lab.ledger.scalar(
        "SELECT compliance.request_export(%s, 'bench', %s)", (json.dumps({"tenant_id": TENANT}), mode)
    )
    outcome, done = lab.run_export(job_id, f"bench/tenant-{mode}/{size}/")
    return outcome, done.peak_rss_kib, lab.download(outcome["prefix"], f"tenant_{mode}_{size}")


def _verify(lab: BundleLab, folder: Path, *options: str) -> tuple[float, int]:
    report, done = lab.run_verify(folder, *options)
    return report["seconds"], done.peak_rss_kib


def run(lab: BundleLab, *, size: int) -> Row:
    row = Row(
        case="tenant_export",
        variant=f"events={human(size)} tenant=1%",
        unit="tenant events/s",
        reference_name=f'the same tenant as a range bundle (filter {{"tenant_id": "{TENANT}"}})',
        targets=[
            Target("ratio", ">=", 10),
            Target("bytes_ratio", ">=", 10),
            Target("verify_speedup", ">=", 10),
        ],
    )
    row.skipped = missing("auditchain.export", "auditchain.offline.bundle")
    if row.skipped:
        return row
    ledger = lab.ledger
    ledger.ensure_log(size)
    lab._start_s3()
    _commit_and_sign(ledger)
    ledger.settle("compliance.audit_events")

    tenant, tenant_rss, tenant_folder = _export(lab, size, "tenant")
    ranged, range_rss, range_folder = _export(lab, size, "range")
    ledger.drain_all()  # the two requests' own audit events
    events = tenant["line_count"]
    if events != ranged["matched_count"]:
        raise RuntimeError(
            f"tenant bundle has {events} events, the range bundle matched {ranged['matched_count']}"
        )
    tenant_verify, tenant_verify_rss = _verify(
        lab, tenant_folder, "--vkey", note.encode_vkey(SIGNER.name, SIGNER.public_key)
    )
    range_verify, range_verify_rss = _verify(lab, range_folder, "--no-anchors")

    row.measured = events / tenant["seconds"]
    row.reference = events / ranged["seconds"]
    row.metrics = {
        "tenant_events": events,
        "log_size": size,
        "tenant_bytes": tenant["data_bytes"],
        "range_bytes": ranged["data_bytes"],
        "bytes_ratio": ranged["data_bytes"] / tenant["data_bytes"],
        "tenant_export_seconds": tenant["seconds"],
        "range_export_seconds": ranged["seconds"],
        "tenant_verify_seconds": tenant_verify,
        "range_verify_seconds": range_verify,
        "verify_speedup": range_verify / tenant_verify,
        "tenant_export_peak_rss_mib": round(tenant_rss / 1024, 1),
        "range_export_peak_rss_mib": round(range_rss / 1024, 1),
        "tenant_verify_peak_rss_mib": round(tenant_verify_rss / 1024, 1),
        "range_verify_peak_rss_mib": round(range_verify_rss / 1024, 1),
    }
    return row
