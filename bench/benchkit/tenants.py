"""Case tenant_drain: what the per-tenant Merkle trees cost the drainer, at a few and at many
tenants.

The backlog's events are spread round-robin over the given number of tenants. The same
backlog is drained repeatedly, each time in one transaction that is rolled back: alternately
as shipped and with the tenant trees' share taken out inside that transaction only
(compliance._tenant_tree_append replaced by a no-op and the (tenant_id, seq) index dropped),
so the ratio is the tenant trees' share of the drain, index maintenance included. Before the
timed part, each transaction gives every tenant a head (untimed), so the drain extends
existing trees as it does in a running system rather than creating them."""

from __future__ import annotations

from .drain import fresh_backlog
from .ledger import Ledger, Timing, human
from .merkle import BATCH, ROUNDS, median_timing
from .results import Row, Target, cpu_metrics

NO_TENANT_TREES_SQL = [
    """CREATE OR REPLACE FUNCTION compliance._tenant_tree_append(tenant_keys text[], leaf_hashes bytea[])
       RETURNS void LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT $$""",
    "DROP INDEX compliance.audit_events_tenant_seq",
]
SPREAD_SQL = "UPDATE compliance.audit_outbox SET tenant_id = 'tenant-' || (outbox_id %% %s)"
HEADS_SQL = """
INSERT INTO compliance.tenant_trees (tenant_key, tree_size, tree_frontier)
SELECT 'tenant-' || i, 1, ARRAY[sha256(convert_to(i::text, 'UTF8'))] FROM generate_series(0, %s - 1) AS i
    ON CONFLICT (tenant_key) DO NOTHING"""


def _drain_rolled_back(ledger: Ledger, *, tenants: int, with_trees: bool) -> Timing:
    def setup() -> None:
        ledger.conn.execute(HEADS_SQL, (tenants,))
        # The statistics autovacuum keeps for a live table: after earlier rolled-back rounds it
        # may have recorded tenant_trees as empty but many pages long, and the planner then
        # joins every head of the batch against every stored head (minutes at 10,000 tenants).
        ledger.conn.execute("ANALYZE compliance.tenant_trees")
        if not with_trees:
            for statement in NO_TENANT_TREES_SQL:
                ledger.conn.execute(statement)

    def drain_all() -> None:
        while ledger.scalar("SELECT compliance.drain(%s)", (BATCH,)):
            pass

    return ledger.measure_rolled_back(drain_all, setup)


def run_drain(ledger: Ledger, *, log_size: int, backlog: int, tenants: int) -> Row:
    ledger.ensure_log(log_size)
    row = Row(
        case="tenant_drain",
        variant=f"tenants={human(tenants)} backlog={human(backlog)} log={human(log_size)}",
        unit="events/s",
        reference_name="the same drain without tenant trees (no tenant append, no (tenant_id, seq) index)",
        targets=[Target("ratio", ">=", 0.85)],
    )
    fresh_backlog(ledger, backlog)
    ledger.conn.execute(SPREAD_SQL, (tenants,))
    ledger.settle("compliance.audit_outbox")
    _drain_rolled_back(ledger, tenants=tenants, with_trees=False)  # warm the cache for both
    withouts, withs = [], []
    for _ in range(ROUNDS):
        withouts.append(_drain_rolled_back(ledger, tenants=tenants, with_trees=False))
        withs.append(_drain_rolled_back(ledger, tenants=tenants, with_trees=True))
    without, with_trees = median_timing(withouts), median_timing(withs)
    ledger.conn.execute("TRUNCATE compliance.audit_outbox")
    row.measured = backlog / with_trees.wall
    row.reference = backlog / without.wall
    row.metrics = {
        "events": backlog,
        "tenants": tenants,
        "log_size_before": log_size,
        "with_tenant_trees_seconds": with_trees.wall,
        "without_tenant_trees_seconds": without.wall,
        "rounds": ROUNDS,
        **cpu_metrics(with_trees, without, backlog),
    }
    return row
