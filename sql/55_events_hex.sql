-- Read-only presentation of the ledger for people at a psql prompt: the hashes as hex text.
SET LOCAL search_path = pg_catalog, pg_temp;

-- compliance.audit_events_hex: every row of audit_events with prev_hash and event_hash as
-- lower-case hex text (64 characters), the form docs/hash-format.md, bundles and anchor
-- documents print; bytea shows as \x... in psql, which nobody compares by eye.
-- security_invoker: the view gives nobody more than they may already read in audit_events.
-- Touches (read only): audit_events.
CREATE OR REPLACE VIEW compliance.audit_events_hex WITH (security_invoker = true) AS
SELECT
    e.seq,
    e.event_id,
    e.occurred_at,
    e.recorded_at,
    e.tenant_id,
    e.event_type,
    e.actor,
    e.payload,
    e.hash_version,
    pg_catalog.encode(e.prev_hash, 'hex') AS prev_hash,
    pg_catalog.encode(e.event_hash, 'hex') AS event_hash
FROM compliance.audit_events AS e;
COMMENT ON VIEW compliance.audit_events_hex IS
'Read-only: compliance.audit_events with prev_hash and event_hash as lower-case hex text (for psql and auditchain events).';
COMMENT ON COLUMN compliance.audit_events_hex.seq IS 'Position in the chain (audit_events.seq).';
COMMENT ON COLUMN compliance.audit_events_hex.event_id IS 'UUIDv7 returned by compliance.emit.';
COMMENT ON COLUMN compliance.audit_events_hex.occurred_at IS 'When the audited action happened, as the producer says.';
COMMENT ON COLUMN compliance.audit_events_hex.recorded_at IS 'When the drainer chained the event.';
COMMENT ON COLUMN compliance.audit_events_hex.tenant_id IS 'Tenant the event belongs to; NULL for system-wide events.';
COMMENT ON COLUMN compliance.audit_events_hex.event_type IS 'Dotted lower-case name such as data.export_initiated.';
COMMENT ON COLUMN compliance.audit_events_hex.actor IS 'Who performed the action.';
COMMENT ON COLUMN compliance.audit_events_hex.payload IS 'Event details, a JSON object.';
COMMENT ON COLUMN compliance.audit_events_hex.hash_version IS 'Canonical record format used for event_hash (docs/hash-format.md).';
COMMENT ON COLUMN compliance.audit_events_hex.prev_hash IS 'event_hash of seq - 1 as 64 lower-case hex characters; 64 zeros for seq 1.';
COMMENT ON COLUMN compliance.audit_events_hex.event_hash IS 'SHA-256 of prev_hash and the canonical record, as 64 lower-case hex characters.';
