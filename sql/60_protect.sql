-- Immutability of the ledger tables (anchors and export_jobs add their own guards).
SET LOCAL search_path = pg_catalog, pg_temp;

SELECT compliance._protect_table('compliance.audit_events', true);
-- Its row guard is compliance._audit_events_guard (sql/58_erasure.sql): like _forbid_change,
-- except for the one UPDATE compliance.erase makes. Same trigger name, so whatever holds for
-- forbid_row_change (ENABLE ALWAYS; what disabling it means) holds for it.
CREATE OR REPLACE TRIGGER forbid_row_change
BEFORE UPDATE OR DELETE ON compliance.audit_events
FOR EACH ROW EXECUTE FUNCTION compliance._audit_events_guard();
ALTER TABLE compliance.audit_events ENABLE ALWAYS TRIGGER forbid_row_change;
SELECT compliance._protect_table('compliance.integrity_incidents', true);

-- The single-row state tables are updated in place but must never lose their row.
SELECT compliance._protect_table('compliance.drainer_state', false);
SELECT compliance._protect_table('compliance.verification_state', false);
