-- Every privilege on schema compliance, in one place. The file is re-applied (with all of
-- sql/) whenever any definition changes, so it first takes everything away from PUBLIC and
-- from the group roles, then grants each role exactly what its section lists: a function
-- added later is closed until a section here opens it, and a grant removed from this file
-- is really gone after the next migrate. Internal helpers get no grant (SECURITY DEFINER
-- callers reach them as the owner). One section per role below, what it may do first.
SET LOCAL search_path = pg_catalog, pg_temp;

REVOKE ALL ON SCHEMA compliance FROM PUBLIC, compliance_writer, compliance_drainer, compliance_anchor,
compliance_watchdog, compliance_exporter, compliance_auditor, compliance_eraser;
REVOKE ALL ON ALL TABLES IN SCHEMA compliance FROM PUBLIC, compliance_writer, compliance_drainer,
compliance_anchor, compliance_watchdog, compliance_exporter, compliance_auditor, compliance_eraser;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA compliance FROM PUBLIC, compliance_writer, compliance_drainer,
compliance_anchor, compliance_watchdog, compliance_exporter, compliance_auditor, compliance_eraser;
-- ROUTINES covers functions and procedures; both get EXECUTE for PUBLIC when created.
REVOKE ALL ON ALL ROUTINES IN SCHEMA compliance FROM PUBLIC, compliance_writer, compliance_drainer,
compliance_anchor, compliance_watchdog, compliance_exporter, compliance_auditor, compliance_eraser;

-- ==== compliance_writer: emit events and request exports (each request is itself an event).
GRANT USAGE ON SCHEMA compliance TO compliance_writer;
GRANT EXECUTE ON FUNCTION compliance.emit(text, text, jsonb, text, timestamptz) TO compliance_writer;
GRANT EXECUTE ON FUNCTION compliance.request_export(jsonb, text, text) TO compliance_writer;
GRANT EXECUTE ON FUNCTION compliance.emit_batch(jsonb) TO compliance_writer;
-- See a filter as its bundle's manifest will record it.
GRANT EXECUTE ON FUNCTION compliance.normalize_export_filter(jsonb) TO compliance_writer;

-- ==== compliance_drainer: drain batches and run the drainer loop.
-- run_drainer runs with the caller's rights (a procedure that COMMITs cannot be SECURITY
-- DEFINER), so it also needs record_halt, which records only a head-check failure it
-- observes itself.
GRANT USAGE ON SCHEMA compliance TO compliance_drainer;
GRANT EXECUTE ON FUNCTION compliance.drain(integer) TO compliance_drainer;
GRANT EXECUTE ON PROCEDURE compliance.run_drainer(interval, integer, double precision) TO compliance_drainer;
GRANT EXECUTE ON FUNCTION compliance.record_halt() TO compliance_drainer;

-- ==== compliance_anchor: lease pending anchors and record upload results, through these
-- functions only. No table privilege, so it can neither create, alter nor read anchors
-- beyond what claim_next_anchor (or the deprecated claim_pending_anchors) returns.
GRANT USAGE ON SCHEMA compliance TO compliance_anchor;
GRANT EXECUTE ON FUNCTION compliance.claim_next_anchor(text, interval),
compliance.anchor_heartbeat(bigint, uuid, interval), compliance.claim_pending_anchors(integer),
compliance.anchor_queue(),
compliance.record_anchor_upload(bigint, text, text, text, text, timestamptz, uuid, text, text, text),
compliance.record_anchor_error(bigint, text, uuid),
compliance.record_anchor_integrity_failure(bigint, text, text, text, text, uuid) TO compliance_anchor;
-- The root an anchor commits to and the consistency proof from the previous anchor's tree.
GRANT EXECUTE ON FUNCTION compliance.tree_root(bigint), compliance.consistency_proof(bigint, bigint)
TO compliance_anchor;

-- ==== compliance_watchdog: compliance.metrics() and nothing else.
-- It is SECURITY DEFINER and STABLE, so the watchdog reads every number without any table
-- privilege and can change nothing, not even through it.
GRANT USAGE ON SCHEMA compliance TO compliance_watchdog;
GRANT EXECUTE ON FUNCTION compliance.metrics() TO compliance_watchdog;
-- Every monitor's silence, published beside the metrics (expected-event monitors are declared,
-- paused and dropped by the owner, a DBA, like the acknowledge_* functions: no grant).
GRANT EXECUTE ON FUNCTION compliance.expectation_status() TO compliance_watchdog;

-- ==== compliance_exporter: claim export jobs, read a running job's plan and lines, report
-- progress and record the outcome. No table privilege: a runner sees only what export_plan
-- and export_lines (tenant_export_lines for a tenant bundle) return for a job it is running.
GRANT USAGE ON SCHEMA compliance TO compliance_exporter;
GRANT EXECUTE ON FUNCTION compliance.claim_export(uuid), compliance.claim_next_export(),
compliance.export_heartbeat(uuid), compliance.export_plan(uuid), compliance.export_lines(uuid, bigint, bigint),
compliance.tenant_export_lines(uuid, bigint, bigint),
compliance.complete_export(uuid, text, text, bigint, bigint, bytea, bigint, bigint, bigint),
compliance.fail_export(uuid, text) TO compliance_exporter;

-- ==== compliance_auditor: read the ledger, anchors and export jobs, verify the chain and the
-- Merkle tree, produce proofs, and see the health metrics.
GRANT USAGE ON SCHEMA compliance TO compliance_auditor;
GRANT SELECT ON compliance.audit_events, compliance.drainer_state, compliance.verification_state,
compliance.integrity_incidents TO compliance_auditor;
-- The same events with hex hashes (a security_invoker view: it needs audit_events above).
GRANT SELECT ON compliance.audit_events_hex TO compliance_auditor;
GRANT EXECUTE ON FUNCTION compliance.verify_chain(bigint, bigint) TO compliance_auditor;
-- The stored Merkle tree, roots, inclusion and consistency proofs, and the tree check.
GRANT SELECT ON compliance.merkle_nodes TO compliance_auditor;
GRANT EXECUTE ON FUNCTION compliance.tree_root(bigint), compliance.inclusion_proof(bigint, bigint),
compliance.consistency_proof(bigint, bigint), compliance.verify_tree() TO compliance_auditor;
-- The per-tenant trees: a tenant's root at any of its sizes, and its proofs.
GRANT EXECUTE ON FUNCTION compliance.tenant_tree_root(text, bigint), compliance.tenant_inclusion_proof(bigint, bigint),
compliance.tenant_consistency_proof(text, bigint, bigint), compliance.tenant_heads_root(bigint),
compliance.tenant_head_proof(text, bigint) TO compliance_auditor;
-- `auditchain prove`: an event's line, its newest signed checkpoint and the inclusion proof.
GRANT EXECUTE ON FUNCTION compliance.event_receipt(bigint, uuid) TO compliance_auditor;
-- `auditchain verify` compares the anchors with the bucket.
GRANT SELECT ON compliance.anchors TO compliance_auditor;
-- Follow export jobs (status, error, where the bundle is) and their filters.
GRANT SELECT ON compliance.export_jobs TO compliance_auditor;
GRANT EXECUTE ON FUNCTION compliance.normalize_export_filter(jsonb) TO compliance_auditor;
-- The watchdog's numbers, so that `auditchain status` works for on-call engineers who hold
-- auditor credentials (its details come from the tables auditors read), and the record of
-- reviewed anchor integrity alarms.
GRANT EXECUTE ON FUNCTION compliance.metrics() TO compliance_auditor;
GRANT SELECT ON compliance.anchor_failure_reviews TO compliance_auditor;
-- The monitors' state and the per-minute activity history behind the status sparklines.
GRANT EXECUTE ON FUNCTION compliance.expectation_status(), compliance.activity_history(integer)
TO compliance_auditor;

-- ==== compliance_eraser: a data controller's erasure of personal data (docs/erasure.md),
-- through erase() only, and finding a data subject's events. Granted to nobody by default:
-- an administrator grants it to a named person for the time of a request.
GRANT USAGE ON SCHEMA compliance TO compliance_eraser;
GRANT EXECUTE ON FUNCTION compliance.erase(bigint[], text[], text, text),
compliance.find_subject_events(text, jsonb) TO compliance_eraser;
