-- On-call support for compliance.metrics(): the partial index that keeps the failed-anchor
-- count cheap as anchors accumulate, and the record of integrity alarms an operator has
-- reviewed (compliance.acknowledge_anchor_failure in sql/75_metrics.sql), so that a
-- reviewed alarm stops counting while the failed anchor itself stays as it is forever.
-- The append-only guards are attached in sql/75_metrics.sql.
-- creates: compliance.idx_anchors_failed
-- creates: compliance.anchor_failure_reviews
-- creates: compliance.anchor_failure_reviews.forbid_row_change
-- creates: compliance.anchor_failure_reviews.forbid_truncate

CREATE INDEX idx_anchors_failed ON compliance.anchors (anchor_id) WHERE status = 'failed';
COMMENT ON INDEX compliance.idx_anchors_failed IS
'Failed anchors (integrity alarms), counted by compliance.metrics() every watchdog cycle.';

-- No foreign key to anchors: anchors are never deleted anyway, and a reference would make
-- TRUNCATE on anchors fail on the reference instead of on its append-only guard (AC020).
CREATE TABLE compliance.anchor_failure_reviews (
    anchor_id bigint PRIMARY KEY,
    reviewed_by text NOT NULL DEFAULT current_user,
    reviewed_at timestamptz NOT NULL DEFAULT now(),
    note text NOT NULL CHECK (btrim(note) <> '' AND length(note) <= 2000)
);
COMMENT ON TABLE compliance.anchor_failure_reviews IS
'Append-only: failed anchors (integrity alarms) an operator investigated; they no longer count in anchors_failed.';
COMMENT ON COLUMN compliance.anchor_failure_reviews.anchor_id IS
'The failed anchor (compliance.anchors.anchor_id) that was reviewed.';
COMMENT ON COLUMN compliance.anchor_failure_reviews.reviewed_by IS 'Role that recorded the review.';
COMMENT ON COLUMN compliance.anchor_failure_reviews.reviewed_at IS 'When the review was recorded.';
COMMENT ON COLUMN compliance.anchor_failure_reviews.note IS 'The finding: ticket, cause, decision.';
