-- What compliance.metrics() needs to stay cheap as the history grows: the failed-anchor
-- count reads this (almost always empty) partial index instead of scanning every anchor.
-- creates: compliance.idx_anchors_failed

CREATE INDEX idx_anchors_failed ON compliance.anchors (anchor_id) WHERE status = 'failed';
COMMENT ON INDEX compliance.idx_anchors_failed IS
'Failed anchors (integrity alarms), counted by compliance.metrics() every watchdog cycle.';
