"""What `auditchain verify-bundle` found: failures, warnings, anchor results, counts; as text or JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import EXIT_FAILED, EXIT_OK

MAX_REPORTED_FAILURES = 20


@dataclass
class Failure:
    check: str
    message: str
    seq: int | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = []
        if self.seq is not None:
            where.append(f"seq {self.seq}")
        if self.line is not None:
            where.append(f"line {self.line}")
        place = f" at {', '.join(where)}" if where else ""
        return f"{self.check}{place}: {self.message}"


@dataclass
class AnchorResult:
    seq_to: int
    location: str
    status: str  # verified, failed, unreachable, skipped
    detail: str = ""
    lock_mode: str | None = None
    retain_until: str | None = None


@dataclass
class Report:
    location: str
    failures: list[Failure] = field(default_factory=list)
    failure_count: int = 0
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lines: int = 0
    matched: int = 0
    excluded: int = 0
    withheld: int = 0
    erased: int = 0
    erasure_seqs: set[int] = field(default_factory=set)
    anchored: int = 0
    data_bytes: int = 0
    data_sha256: str | None = None
    anchors: list[AnchorResult] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    tenant: dict[str, Any] | None = None  # what a tenant-mode bundle proved (offline/tenant.py)
    seconds: float = 0.0

    def fail(self, check: str, message: str, *, seq: int | None = None, line: int | None = None) -> None:
        self.failure_count += 1
        if len(self.failures) < MAX_REPORTED_FAILURES:
            self.failures.append(Failure(check, message, seq, line))

    @property
    def ok(self) -> bool:
        return self.failure_count == 0

    def summary(self) -> dict[str, int]:
        by_status = [a.status for a in self.anchors]
        return {
            "events_checked": self.lines,
            "matched": self.matched,
            "excluded": self.excluded,
            "withheld": self.withheld,
            "erased": self.erased,
            "anchored": self.anchored,
            "anchors_in_manifest": len(self.anchors),
            "anchors_checked": by_status.count("verified") + by_status.count("failed"),
            "anchors_verified": by_status.count("verified"),
            "anchors_unreachable": by_status.count("unreachable"),
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "bundle": self.location,
            "ok": self.ok,
            "exit_code": EXIT_OK if self.ok else EXIT_FAILED,
            "failure_count": self.failure_count,
            "failures": [asdict(f) | {"text": str(f)} for f in self.failures],
            "warnings": self.warnings,
            "notes": self.notes,
            "summary": self.summary(),
            # seqs of the compliance.erasure events that removed the erased values
            "erasure_events": sorted(self.erasure_seqs),
            "anchors": [asdict(a) for a in self.anchors],
            "data_bytes": self.data_bytes,
            "data_sha256": self.data_sha256,
            "manifest": self.manifest,
            "tenant": self.tenant,
            "seconds": round(self.seconds, 3),
        }

    def print_text(self) -> None:
        m = self.manifest
        print(f"bundle    {self.location}")
        if m:
            print(
                f"export    job {m['job_id']} by {m['requested_by']} at {m['created_at']}, "
                + (f"seq {m['seq_from']}..{m['seq_to']}" if m["seq_from"] is not None else "no events")
            )
        for anchor in self.anchors:
            lock = f", {anchor.lock_mode} until {anchor.retain_until}" if anchor.lock_mode else ""
            detail = f": {anchor.detail}" if anchor.detail and anchor.status != "verified" else ""
            print(f"anchor    seq {anchor.seq_to} {anchor.status}{detail} [{anchor.location}{lock}]")
        for note in self.notes:
            print(f"NOTE      {note}")
        for warning in self.warnings:
            print(f"WARNING   {warning}")
        for failure in self.failures:
            print(f"FAILED    {failure}")
        if self.failure_count > len(self.failures):
            print(f"FAILED    ... and {self.failure_count - len(self.failures)} more failures")
        s = self.summary()
        erased = f", {s['erased']} erased" if s["erased"] else ""
        print(
            f"checked   {s['events_checked']} events: {s['matched']} matched "
            f"({s['withheld']} with withheld payload{erased}), {s['excluded']} excluded; "
            f"{self.data_bytes} bytes in {self.seconds:.2f} s"
        )
        if self.tenant is not None:
            self._print_tenant()
        else:
            print(
                f"anchored  {s['anchors_verified']} of {s['anchors_in_manifest']} anchors verified; "
                f"{s['anchored']} of {s['matched']} matched events bound by hash to a verified anchor"
            )
        if self.erasure_seqs:
            erasures = ", ".join(map(str, sorted(self.erasure_seqs)))
            print(
                f"erased    {s['erased']} events verified by their commitments; "
                f"erased by the erasure events at seq {erasures}"
            )
        if self.ok:
            print("RESULT    OK" + (" (with warnings)" if self.warnings else ""))
        else:
            print(f"RESULT    FAILED: {self.failure_count} problems, the first: {self.failures[0]}")

    def _print_tenant(self) -> None:
        t = self.tenant or {}
        name = "(none: the events without a tenant)" if t["tenant_id"] is None else repr(t["tenant_id"])
        if "complete_up_to_seq" not in t:
            print(f"tenant    {name}: {self.lines} events, completeness NOT proven (a proof failed)")
            return
        since = t.get("from")
        events = f"{self.lines} events"
        if since is not None:
            events += (
                f" after global seq {since['after_seq']} (checkpoint of tree size {since['checkpoint_size']})"
            )
        verdict = "complete" if self.ok else "NOT proven complete (claimed)"
        print(f"tenant    {name}: {events}, {verdict} up to global seq {t['complete_up_to_seq']}")
        print(
            f"checkpt   tree size {t['checkpoint_size']} of {t['checkpoint_origin']}, signed by "
            f"{', '.join(t['signed_by'])}; tenant heads ({t['tenants']} tenants) committed at "
            f"{t['committed_at']} (seq {t['commitment_seq']})"
        )
