-- Immutability of the ledger tables (anchors and export_jobs add their own guards).
SET LOCAL search_path = pg_catalog, pg_temp;

-- UPDATE has its own guard (sql/58_erasure.sql): only compliance.erase's shape passes.
SELECT compliance._protect_table('compliance.audit_events', false);
SELECT compliance._protect_table('compliance.integrity_incidents', true);

-- The single-row state tables are updated in place but must never lose their row.
SELECT compliance._protect_table('compliance.drainer_state', false);
SELECT compliance._protect_table('compliance.verification_state', false);
