"""auditchain benchmarks: every hot path beside its physical reference, in one run on one cluster.

    python bench/run.py --full     minutes; results in bench/results/latest.json
    python bench/run.py --smoke    seconds; tiny sizes, so the bench cannot rot

It creates a database bench_<pid> on the cluster named by PGHOST/PGPORT/PGUSER (default
127.0.0.1:54329, postgres), migrates it, runs the cases and drops it. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from benchkit import (
    drain,
    emit,
    emit_batch,
    erasure,
    exports,
    latency,
    merkle,
    monitors,
    rotation,
    tenant_export,
    tenants,
    verify,
)
from benchkit.cluster import Server, bench_database, describe_machine
from benchkit.ledger import Ledger
from benchkit.results import Row, format_table, write_json

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Profile:
    name: str
    emit_clients: tuple[int, ...]
    emit_seconds: int
    emit_rounds: int
    emit_batch_sizes: tuple[int, ...]
    emit_batch_rounds: int
    emit_batch_events: int
    drain_backlog: int
    small_log: int
    large_log: int
    huge_log: int
    verify_rounds: int
    latency_rate: int
    latency_seconds: int
    latency_via_cron: bool
    proof_samples: int
    erase_events: int


FULL = Profile(
    name="full",
    emit_clients=(1, 4, 8),
    emit_seconds=10,
    emit_rounds=3,
    emit_batch_sizes=(100, 1000),
    emit_batch_rounds=3,
    emit_batch_events=50_000,
    drain_backlog=200_000,
    small_log=200_000,
    large_log=1_000_000,
    huge_log=5_000_000,
    verify_rounds=2,
    latency_rate=1000,
    latency_seconds=120,
    latency_via_cron=True,
    proof_samples=1000,
    erase_events=10_000,
)
SMOKE = Profile(
    name="smoke",
    emit_clients=(1, 4, 8),
    emit_seconds=1,
    emit_rounds=1,
    emit_batch_sizes=(10, 100),
    emit_batch_rounds=1,
    emit_batch_events=1_000,
    drain_backlog=2_000,
    small_log=2_000,
    large_log=6_000,
    huge_log=10_000,
    verify_rounds=1,
    latency_rate=200,
    latency_seconds=3,
    latency_via_cron=False,
    proof_samples=200,
    erase_events=1_000,
)

Step = tuple[str, Callable[[Ledger], Row]]


def plan(p: Profile, lab: exports.BundleLab) -> list[Step]:
    """The cases in the order that grows the log once: each step asks for the log size it needs."""
    steps: list[Step] = [
        ("emit", lambda lg, c=c: emit.run(lg, clients=c, seconds=p.emit_seconds, rounds=p.emit_rounds))
        for c in p.emit_clients
    ]
    steps += [
        (
            "emit_batch",
            lambda lg, n=n: emit_batch.run(
                lg, per_call=n, rounds=p.emit_batch_rounds, events=p.emit_batch_events
            ),
        )
        for n in p.emit_batch_sizes
    ]
    # The drain into an empty log is the baseline the later drains' cost per event is held to.
    first_drain: list[Row] = []

    def drain_at(lg: Ledger, log_size: int) -> Row:
        # The export case emits an audit event of its own: chain it, it is part of the log.
        if lg.outbox_depth():
            lg.drain_all()
        log_size = max(log_size, lg.chained())
        row = drain.run(
            lg, log_size=log_size, backlog=p.drain_backlog, baseline=next(iter(first_drain), None)
        )
        first_drain[:] = first_drain or [row]
        return row

    steps.append(("drain", lambda lg: drain_at(lg, 0)))
    for size in (p.small_log, p.large_log):
        steps += [
            ("verify_chain", lambda lg, s=size: verify.run(lg, size=s, rounds=p.verify_rounds)),
            ("merkle_proof", lambda lg, s=size: merkle.run_proof(lg, size=s, samples=p.proof_samples)),
            ("receipt_verify", lambda lg, s=size: merkle.run_receipt(lg, size=s, samples=p.proof_samples)),
            # Leaves the log at its size: the backlog is drained in rolled-back transactions.
            ("merkle_drain", lambda lg, s=size: merkle.run_drain(lg, log_size=s, backlog=p.drain_backlog)),
        ]
        if size == p.large_log:
            # Few and many tenants: the tenant trees' share of the drain (rolled back, like merkle_drain).
            steps += [
                (
                    "tenant_drain",
                    lambda lg, t=t: tenants.run_drain(
                        lg, log_size=p.large_log, backlog=p.drain_backlog, tenants=t
                    ),
                )
                for t in (10, 10_000)
            ]
        steps += [
            ("export", lambda lg, s=size: lab.export(s)),
            ("verify_bundle", lambda lg, s=size: lab.verify_bundle(s)),
            # The cases below leave the log longer than its size (an erasure event, the
            # monitors' arrivals): they come after every case that asks for an exact size.
            # Hash format v2 against v1, same rows, rolled back.
            ("hash_v2_drain", lambda lg, s=size: erasure.run_drain(lg, log_size=s, backlog=p.drain_backlog)),
            ("erase", lambda lg, s=size: erasure.run_erase(lg, size=s, count=p.erase_events)),
        ]
        if size == p.large_log:
            # One tenant (1% of the log) in tenant mode against range mode; leaves a commitment,
            # an anchor and two export requests behind.
            steps.append(("tenant_export", lambda lg: tenant_export.run(lab, size=p.large_log)))
            # 100 expected-event monitors checked beside the large log, 1,000 events a second arriving.
            steps.append(("monitors", lambda lg: monitors.run(lg, log_size=p.large_log)))
    steps.append(("drain", lambda lg: drain_at(lg, p.large_log)))
    # The outbox-side prototype (not production code): its log size does not matter.
    steps.append(("rotation", lambda lg: rotation.run(lg, backlog=p.drain_backlog)))
    # Emit again beside a large log: emit touches only the outbox, so it should not care.
    steps.append(
        ("emit", lambda lg: emit.run(lg, clients=4, seconds=p.emit_seconds, rounds=1)),
    )
    steps.append(("drain", lambda lg: drain_at(lg, p.huge_log)))
    # The drainer alone, then as production schedules it: pg_cron adds its own delays.
    for via_cron in (False, True) if p.latency_via_cron else (False,):
        steps.append(
            (
                "latency",
                lambda lg, v=via_cron: latency.run(
                    lg, rate=p.latency_rate, seconds=p.latency_seconds, via_cron=v
                ),
            )
        )
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--full", action="store_const", const=FULL, dest="profile", help="the full suite")
    mode.add_argument("--smoke", action="store_const", const=SMOKE, dest="profile", help="tiny sizes")
    parser.add_argument(
        "--output",
        type=Path,
        help="JSON results file (default bench/results/latest.json, or smoke.json with --smoke)",
    )
    parser.add_argument(
        "--only", action="append", metavar="CASE", help="run only this case (repeatable); others are skipped"
    )
    args = parser.parse_args(argv)
    profile: Profile = args.profile
    output = args.output or RESULTS / ("latest.json" if profile is FULL else "smoke.json")

    server = Server.from_env()
    rows: list[Row] = []
    started = time.time()
    with bench_database(server) as dbname:
        ledger = Ledger.open(server, dbname)
        lab = exports.BundleLab(ledger)
        try:
            machine = describe_machine(ledger.conn)
            for case, step in plan(profile, lab):
                if args.only and case not in args.only:
                    continue
                print(f"bench: {case} ...", file=sys.stderr, flush=True)
                try:
                    row = step(ledger)
                except Exception as exc:  # one failed case must not lose the others' numbers
                    traceback.print_exc()
                    row = Row(case, "-", unit="", reference_name="", error=f"{type(exc).__name__}: {exc}")
                    ledger.reconnect()
                print(f"bench: {case} {row.variant}: {row.measured} vs {row.reference}", file=sys.stderr)
                rows.append(row)
        finally:
            lab.close()
            ledger.close()
    machine["load_average_end"] = list(os.getloadavg())
    document = {
        "mode": profile.name,
        "profile": asdict(profile),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "database": dbname,
        "machine": machine,
        "cases": [row.to_json() for row in rows],
    }
    write_json(output, document)
    print(format_table(rows))
    print(f"\nresults written to {output}")
    return 1 if any(row.error for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
