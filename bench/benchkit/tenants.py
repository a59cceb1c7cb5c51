"""Case tenant_drain: what the per-tenant Merkle trees cost the drainer, at a few and at many
tenants.

The backlog's events are spread round-robin over the given number of tenants. The same
backlog is drained repeatedly, each time in one transaction that is rolled back: alternately
as shipped and with the tenant trees' share of the drain taken out inside that transaction
only (drain's pending batch row skipped by a trigger, and the (tenant_id, seq) index
dropped), so the ratio is the tenant trees' share of the drain, index maintenance included.
What the drainer no longer pays, folding the batches into the tenant heads, happens once per
tenant-heads commitment (_tenant_trees_fold, in commit_tenant_heads): it is timed after the
drain in the shipped transaction and reported beside the ratio, not in it."""

from __future__ import annotations

from .drain import fresh_backlog
from .ledger import Ledger, Timing, human
from .merkle import BATCH, ROUNDS, median_timing
from .results import Row, Target, cpu_metrics

# A trigger, not a rule: drain's cached plan of the INSERT stays rewritten to nothing after a
# rule is rolled back, while triggers are looked up at each execution. It costs one call per
# batch.
NO_TENANT_TREES_SQL = [
    """CREATE FUNCTION bench_ref.skip_row() RETURNS trigger LANGUAGE plpgsql
       AS $$ BEGIN RETURN NULL; END $$""",
    """CREATE TRIGGER bench_no_tenant_trees BEFORE INSERT ON compliance.tenant_tree_pending
       FOR EACH ROW EXECUTE FUNCTION bench_ref.skip_row()""",
    "DROP INDEX compliance.audit_events_tenant_seq",
]
SPREAD_SQL = "UPDATE compliance.audit_outbox SET tenant_id = 'tenant-' || (outbox_id %% %s)"


def _drain_rolled_back(ledger: Ledger, *, with_trees: bool) -> tuple[Timing, Timing | None]:
    """The drain of the whole backlog in one rolled-back transaction, and (with the tenant
    trees) the fold of its batches into the tenant heads after it."""

    def drain_all() -> None:
        while ledger.scalar("SELECT compliance.drain(%s)", (BATCH,)):
            pass

    ledger.conn.execute("BEGIN")
    try:
        # The statistics autovacuum keeps for a live table: after earlier rolled-back folds it
        # may have recorded tenant_trees as empty but many pages long, and the planner then
        # joins every folded tenant against every stored head (minutes at 10,000 tenants).
        ledger.conn.execute("ANALYZE compliance.tenant_trees")
        if not with_trees:
            for statement in NO_TENANT_TREES_SQL:
                ledger.conn.execute(statement)
        drained = ledger.measure(drain_all)
        folded = (
            ledger.measure(lambda: ledger.scalar("SELECT compliance._tenant_trees_fold()"))
            if with_trees
            else None
        )
        return drained, folded
    finally:
        ledger.conn.execute("ROLLBACK")


def run_drain(ledger: Ledger, *, log_size: int, backlog: int, tenants: int) -> Row:
    ledger.ensure_log(log_size)
    row = Row(
        case="tenant_drain",
        variant=f"tenants={human(tenants)} backlog={human(backlog)} log={human(log_size)}",
        unit="events/s",
        reference_name="the same drain without tenant trees (no pending row, no (tenant_id, seq) index)",
        targets=[Target("ratio", ">=", 0.85)],
    )
    fresh_backlog(ledger, backlog)
    ledger.conn.execute(SPREAD_SQL, (tenants,))
    ledger.settle("compliance.audit_outbox")
    _drain_rolled_back(ledger, with_trees=False)  # warm the cache for both
    withouts, withs, folds = [], [], []
    for _ in range(ROUNDS):
        withouts.append(_drain_rolled_back(ledger, with_trees=False)[0])
        drained, folded = _drain_rolled_back(ledger, with_trees=True)
        withs.append(drained)
        folds.append(folded)
    without, with_trees = median_timing(withouts), median_timing(withs)
    fold = median_timing([f for f in folds if f is not None])
    ledger.conn.execute("TRUNCATE compliance.audit_outbox")
    row.measured = backlog / with_trees.wall
    row.reference = backlog / without.wall
    row.metrics = {
        "events": backlog,
        "tenants": tenants,
        "log_size_before": log_size,
        "with_tenant_trees_seconds": with_trees.wall,
        "without_tenant_trees_seconds": without.wall,
        # Paid once per commitment instead (commit_tenant_heads), each tenant's head new here.
        "fold_seconds": fold.wall,
        "rounds": ROUNDS,
        **cpu_metrics(with_trees, without, backlog),
    }
    return row
