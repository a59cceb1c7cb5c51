-- Health metrics for the watchdog, `auditchain metrics` and `auditchain status`.
SET LOCAL search_path = pg_catalog, pg_temp;

-- compliance._age_seconds(now, since): seconds from since to now, never negative; NULL when
-- since is NULL. Touches no table.
CREATE OR REPLACE FUNCTION compliance._age_seconds(now timestamptz, since timestamptz)
RETURNS double precision
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN CASE WHEN _age_seconds.since IS NOT NULL THEN GREATEST(EXTRACT(EPOCH FROM _age_seconds.now - _age_seconds.since)::double precision, 0) END;
COMMENT ON FUNCTION compliance._age_seconds(timestamptz, timestamptz) IS
'Internal: non-negative seconds elapsed from since to now (NULL when since is NULL).';

-- compliance._metric_thresholds(): every rule that turns a metric into a verdict, in one
-- place. Per metric: the value above which it is a warning, critical, and the value above
-- which its CloudWatch alarm fires (`auditchain alarms install`, whose table a test keeps
-- equal to this one); the verdict when the value is NULL (not measurable now); and the name
-- of another metric while whose value is 0 this one is ok whatever its value. A metric
-- without a row, or a NULL threshold, never reaches that level. Touches no table.
CREATE OR REPLACE FUNCTION compliance._metric_thresholds()
RETURNS TABLE (
    metric text,
    warning_above double precision,
    critical_above double precision,
    alarm_above double precision,
    verdict_when_null text,
    ok_while_zero text
)
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.metric, t.warning_above, t.critical_above, t.alarm_above, t.verdict_when_null, t.ok_while_zero
      FROM (
          VALUES
              -- A live drainer keeps the outbox near zero: 100 rows is already a warning
              -- (elevated), the alarm fires above 10,000 (concerning), above 100,000 emit slows
              -- down (critical). Rows waiting 5 minutes: the drainer is not draining.
              ('outbox_depth', 99, 100000, 10000, 'ok', NULL),
              ('outbox_oldest_age_seconds', 300, NULL, NULL, 'ok', NULL),
              -- One 15-minute anchor cadence missed with margin; two missed is the alarm.
              ('anchor_gap_seconds', 1200, 1800, 1800, 'ok', NULL),
              ('anchors_retrying', 0, NULL, NULL, 'ok', NULL),
              ('anchors_failed', NULL, 0, 0, 'ok', NULL),
              ('drainer_halted', NULL, 0, 0, 'ok', NULL),
              ('verification_failed', NULL, 0, 0, 'ok', NULL),
              -- Only events waiting for it make an idle or never-run verifier a problem.
              ('verification_last_run_age_seconds', 600, NULL, NULL, 'warning', 'verification_lag'),
              ('exports_stuck', 0, NULL, 0, 'ok', NULL),
              ('cron_failed_runs_last_hour', 0, NULL, 0, 'unknown', NULL),
              ('cron_jobs_unscheduled', 0, NULL, 0, 'unknown', NULL),
              -- The drain and verify jobs are due every minute; a drain run lasts 65 s and the
              -- next starts when it ends, so a healthy last start stays under two minutes old.
              -- Three minutes: pg_cron has stopped starting them. Ten: its scheduler is not
              -- coming back (pg_cron 1.4 does not restart it after a terminate).
              ('cron_minutely_jobs_last_start_age_seconds', 180, 600, 180, 'unknown', NULL),
              -- A silent producer is a warning (its events are missing, nothing is lost
              -- from the chain) and its own alarm.
              ('silent_producers', 0, NULL, 0, 'ok', NULL)
      ) AS t (metric, warning_above, critical_above, alarm_above, verdict_when_null, ok_while_zero);
$$;
COMMENT ON FUNCTION compliance._metric_thresholds() IS
'Internal: per metric, the warning, critical and alarm thresholds (value above them), the verdict when NULL, and the metric whose 0 makes it ok; compliance.metrics() applies them.';

-- The result type of metrics() grew from (metric, value, unit); CREATE OR REPLACE cannot
-- change it, so a database still holding the three-column function drops it first (its
-- grants come back with sql/90_grants.sql).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_proc AS p
                WHERE p.oid = pg_catalog.to_regprocedure('compliance.metrics()')
                  AND NOT 'verdict' = ANY(p.proargnames)) THEN
        DROP FUNCTION compliance.metrics();
    END IF;
END;
$$;

-- compliance.metrics(): one row per health metric (metric, value, unit), all measured
-- against one instant (now()), with its thresholds and the verdict they give (ok, warning,
-- critical, unknown), from compliance._metric_thresholds(). The names are stable (docs/api.md
-- "Metrics"); a value is NULL when it does not exist yet (no drain, no upload) or cannot be
-- measured. Every read is an index lookup or a count over a table that is small when the
-- system is healthy: never a scan of audit_events. SECURITY DEFINER so that
-- compliance_watchdog needs EXECUTE on this function and nothing else.
-- Touches (read only): audit_outbox, audit_events (one row by seq; erased rows by their
-- partial index), drainer_state, verification_state, anchors, anchor_failure_reviews,
-- export_jobs; event_expectations through compliance.expectation_status(); cron.job and cron.job_run_details through
-- compliance.cron_job_health().
CREATE OR REPLACE FUNCTION compliance.metrics()
RETURNS TABLE (
    metric text,
    value double precision,
    unit text,
    warning_above double precision,
    critical_above double precision,
    alarm_above double precision,
    verdict text
)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now timestamptz := pg_catalog.now();
    v_drainer compliance.drainer_state%ROWTYPE;
    v_verification compliance.verification_state%ROWTYPE;
    v_outbox_depth bigint;
    v_outbox_oldest timestamptz;
    v_anchored_to bigint;
    v_last_upload timestamptz;
    v_first_unanchored timestamptz;
    v_cron_failures bigint;
    v_cron_unscheduled bigint;
    v_cron_minutely_age double precision;
BEGIN
    SELECT * INTO STRICT v_drainer FROM compliance.drainer_state;
    SELECT * INTO STRICT v_verification FROM compliance.verification_state;
    SELECT pg_catalog.count(*) INTO v_outbox_depth FROM compliance.audit_outbox;
    -- outbox_id follows emit order, so the primary key finds the oldest row.
    SELECT o.emitted_at INTO v_outbox_oldest FROM compliance.audit_outbox AS o ORDER BY o.outbox_id LIMIT 1;
    -- The newest uploaded anchor protects every event up to its seq_to (its head hash
    -- commits to the whole prefix). Walks anchors_seq_to_key down past the few pending ones.
    SELECT a.seq_to, a.anchored_at INTO v_anchored_to, v_last_upload
      FROM compliance.anchors AS a
     WHERE a.status = 'uploaded'
     ORDER BY a.seq_to DESC
     LIMIT 1;
    SELECT e.recorded_at INTO v_first_unanchored
      FROM compliance.audit_events AS e
     WHERE e.seq = coalesce(v_anchored_to, 0) + 1;
    -- pg_cron usually lives in another database, reached through dblink. When it cannot be
    -- reached its values stay NULL, "unknown", and every other metric is still reported;
    -- auditchain status calls compliance.cron_job_health() itself to show why.
    -- A dead scheduler changes nothing in pg_cron's tables (jobs stay scheduled, no run
    -- fails): only the starts of the once-a-minute jobs stop. Their oldest last start is
    -- the sign; a job not scheduled, inactive or never started has no start to measure
    -- and counts as 0 (cron_jobs_unscheduled reports the first two).
    BEGIN
        SELECT pg_catalog.sum(h.failures_last_hour),
               pg_catalog.count(*) FILTER (WHERE NOT h.scheduled OR NOT h.active),
               coalesce(pg_catalog.max(compliance._age_seconds(v_now, h.last_started_at))
                            FILTER (WHERE h.scheduled AND h.active AND h.job IN (
                                        SELECT j.job FROM compliance.cron_jobs() AS j
                                         WHERE j.schedule = '* * * * *')),
                        0)
          INTO v_cron_failures, v_cron_unscheduled, v_cron_minutely_age
          FROM compliance.cron_job_health() AS h;
    EXCEPTION
        -- Only what means "pg_cron cannot be reached": not loaded or installed (AC050, or
        -- its tables missing), dblink missing (AC051), its database unreachable (AC052, a
        -- broken connection), dblink refusing a password-less connection for a role that is
        -- not superuser (2F003), or no privilege on pg_cron's tables or dblink. Any other
        -- error is a bug in this code and raises, rather than hiding as "unknown".
        WHEN SQLSTATE 'AC050' OR SQLSTATE 'AC051' OR SQLSTATE 'AC052' OR SQLSTATE '2F003'
             OR connection_exception OR insufficient_privilege OR undefined_table OR undefined_function
             OR invalid_schema_name THEN
            v_cron_failures := NULL;
            v_cron_unscheduled := NULL;
            v_cron_minutely_age := NULL;
    END;

    RETURN QUERY
    WITH measured (position, metric, value, unit) AS (
        VALUES
            (1, 'outbox_depth', v_outbox_depth::double precision, 'count'),
            (2, 'outbox_oldest_age_seconds', compliance._age_seconds(v_now, coalesce(v_outbox_oldest, v_now)),
             'seconds'),
            -- The age of the oldest event no uploaded anchor protects yet, queued or chained;
            -- 0 when every event is anchored (an idle ledger has nothing at risk).
            (3, 'anchor_gap_seconds',
             compliance._age_seconds(v_now, coalesce(LEAST(v_outbox_oldest, v_first_unanchored), v_now)), 'seconds'),
            (4, 'anchor_last_upload_age_seconds', compliance._age_seconds(v_now, v_last_upload), 'seconds'),
            (5, 'anchors_pending',
             (SELECT pg_catalog.count(*) FROM compliance.anchors AS a WHERE a.status = 'pending')::double precision,
             'count'),
            -- Pending anchors whose last upload attempt failed: the uploader is retrying them.
            (6, 'anchors_retrying',
             (SELECT pg_catalog.count(*)
                FROM compliance.anchors AS a
               WHERE a.status = 'pending' AND a.last_error IS NOT NULL)::double precision,
             'count'),
            -- Integrity alarms nobody has reviewed yet (compliance.acknowledge_anchor_failure).
            (7, 'anchors_failed',
             (SELECT pg_catalog.count(*)
                FROM compliance.anchors AS a
               WHERE a.status = 'failed'
                 AND NOT EXISTS (SELECT 1 FROM compliance.anchor_failure_reviews AS r
                                  WHERE r.anchor_id = a.anchor_id))::double precision,
             'count'),
            (8, 'chain_length', v_drainer.last_seq::double precision, 'count'),
            (9, 'drainer_last_success_age_seconds', compliance._age_seconds(v_now, v_drainer.last_success_at),
             'seconds'),
            (10, 'drainer_halted', (v_drainer.halted_at IS NOT NULL)::integer::double precision, 'boolean'),
            (11, 'verification_lag',
             GREATEST(v_drainer.last_seq - v_verification.verified_seq, 0)::double precision, 'count'),
            (12, 'verification_failed', (v_verification.last_ok IS FALSE)::integer::double precision, 'boolean'),
            (13, 'verification_last_run_age_seconds', compliance._age_seconds(v_now, v_verification.last_run_at),
             'seconds'),
            -- Running jobs whose runner has shown no progress (heartbeat, else the claim) for
            -- _export_stuck_after(): exactly what compliance.reconcile_exports() would fail now.
            (14, 'exports_stuck',
             (SELECT pg_catalog.count(*)
                FROM compliance.export_jobs AS j
               WHERE j.status = 'running'
                 AND coalesce(j.heartbeat_at, j.started_at) < v_now - compliance._export_stuck_after())::double precision,
             'count'),
            (15, 'cron_failed_runs_last_hour', v_cron_failures::double precision, 'count'),
            (16, 'cron_jobs_unscheduled', v_cron_unscheduled::double precision, 'count'),
            (17, 'cron_minutely_jobs_last_start_age_seconds', v_cron_minutely_age, 'seconds'),
            -- Expected-event monitors silent for longer than their max_silence, not paused.
            (18, 'silent_producers',
             (SELECT pg_catalog.count(*) FROM compliance.expectation_status() AS x WHERE x.silent)::double precision,
             'count'),
            -- Events whose payload or actor compliance.erase removed (idx_audit_events_erased).
            -- Erasure is sanctioned, so no threshold row: always ok, a count to follow.
            (19, 'erased_events',
             (SELECT pg_catalog.count(*)
                FROM compliance.audit_events AS e
               WHERE e.payload_erased_by IS NOT NULL OR e.actor_erased_by IS NOT NULL)::double precision,
             'count')
    )
    SELECT m.metric, m.value, m.unit, t.warning_above, t.critical_above, t.alarm_above,
           CASE
               WHEN t.ok_while_zero IS NOT NULL
                    AND (SELECT g.value FROM measured AS g WHERE g.metric = t.ok_while_zero) = 0 THEN 'ok'
               WHEN m.value IS NULL THEN coalesce(t.verdict_when_null, 'ok')
               WHEN m.value > t.critical_above THEN 'critical'
               WHEN m.value > t.warning_above THEN 'warning'
               ELSE 'ok'
           END
      FROM measured AS m
      LEFT JOIN compliance._metric_thresholds() AS t ON t.metric = m.metric
     ORDER BY m.position;
END;
$$;
COMMENT ON FUNCTION compliance.metrics() IS
'Health metrics (metric, value, unit) with their warning/critical/alarm thresholds and verdict (ok, warning, critical, unknown); cheap, read-only, names documented in docs/api.md.';

-- compliance.acknowledge_anchor_failure(anchor_id, note): an operator's record that a
-- failed anchor (integrity alarm) was investigated, so that it stops counting in
-- anchors_failed and the anchor-failed alarm can clear. The anchor itself stays failed and
-- `auditchain verify` keeps reporting it. Same contract as every acknowledge_*: true when
-- acknowledged now; false (no change, the first note kept) when the anchor was already
-- reviewed; AC013 for a NULL, blank or over-2,000-character note; AC060 for an anchor that
-- does not exist or is not failed. Owner only, like acknowledge_integrity_failure.
-- Touches: anchors (read), anchor_failure_reviews (INSERT).
CREATE OR REPLACE FUNCTION compliance.acknowledge_anchor_failure(anchor_id bigint, note text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_status compliance.anchor_status;
BEGIN
    PERFORM compliance._check_acknowledgement_note(acknowledge_anchor_failure.note);
    SELECT a.status INTO v_status FROM compliance.anchors AS a WHERE a.anchor_id = acknowledge_anchor_failure.anchor_id;
    IF v_status IS DISTINCT FROM 'failed' THEN
        RAISE EXCEPTION 'anchor % is %, not failed: there is no integrity alarm to acknowledge',
            acknowledge_anchor_failure.anchor_id, coalesce(v_status::text, 'missing')
            USING ERRCODE = 'AC060';
    END IF;
    INSERT INTO compliance.anchor_failure_reviews (anchor_id, note)
    VALUES (acknowledge_anchor_failure.anchor_id, acknowledge_anchor_failure.note)
    ON CONFLICT ON CONSTRAINT anchor_failure_reviews_pkey DO NOTHING;
    RETURN FOUND;
END;
$$;
COMMENT ON FUNCTION compliance.acknowledge_anchor_failure(bigint, text) IS
'Operator action after investigating a failed anchor: records the review so anchors_failed stops counting it '
'(AC060 if not failed); false if already reviewed.';

SELECT compliance._protect_table('compliance.anchor_failure_reviews', true);
