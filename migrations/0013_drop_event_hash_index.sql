-- The unique B-tree on audit_events.event_hash goes: no lookup needs it (seq and event_id
-- find every event, anchors and proofs name a seq), and its random key order made it the
-- drain's largest cost and the only one that grew with the log: after each checkpoint every
-- insert wrote a full-page image of a random leaf (docs/benchmarks.md). Uniqueness of a
-- SHA-256 guarded only against a collision; each hash is bound to its seq by the chain.
-- drops: compliance.idx_audit_events_event_hash

DROP INDEX IF EXISTS compliance.idx_audit_events_event_hash;
