-- Health metrics for the watchdog, `auditchain metrics` and `auditchain status`.
SET LOCAL search_path = pg_catalog, pg_temp;

-- compliance.age_seconds(now, since): seconds from since to now, never negative; NULL when
-- since is NULL. Touches no table.
CREATE OR REPLACE FUNCTION compliance.age_seconds(p_now timestamptz, p_since timestamptz)
RETURNS double precision
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN CASE WHEN p_since IS NOT NULL THEN GREATEST(EXTRACT(EPOCH FROM p_now - p_since)::double precision, 0) END;
COMMENT ON FUNCTION compliance.age_seconds(timestamptz, timestamptz) IS
'Internal: non-negative seconds elapsed from p_since to p_now (NULL when p_since is NULL).';

-- compliance.metrics(): one row per health metric (metric, value, unit), all measured
-- against one instant (now()). The names are stable (docs/api.md "Metrics"); a value is
-- NULL when it does not exist yet (no drain, no upload) or cannot be measured. Every read
-- is an index lookup or a count over a table that is small when the system is healthy:
-- never a scan of audit_events. SECURITY DEFINER so that compliance_watchdog needs EXECUTE
-- on this function and nothing else.
-- Touches (read only): audit_outbox, audit_events (one row by seq), drainer_state,
-- verification_state, anchors, anchor_failure_reviews, export_jobs; cron.job and cron.job_run_details through
-- compliance.cron_job_health().
CREATE OR REPLACE FUNCTION compliance.metrics()
RETURNS TABLE (metric text, value double precision, unit text)
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
    -- read (not installed, dblink missing, connection refused, no privilege) its values
    -- stay NULL, "unknown", and every other metric is still reported; auditchain status
    -- calls compliance.cron_job_health() itself to show why.
    -- A dead scheduler changes nothing in pg_cron's tables (jobs stay scheduled, no run
    -- fails): only the starts of the once-a-minute jobs stop. Their oldest last start is
    -- the sign; a job not scheduled, inactive or never started has no start to measure
    -- and counts as 0 (cron_jobs_unscheduled reports the first two).
    BEGIN
        SELECT pg_catalog.sum(h.failures_last_hour),
               pg_catalog.count(*) FILTER (WHERE NOT h.scheduled OR NOT h.active),
               coalesce(pg_catalog.max(compliance.age_seconds(v_now, h.last_started_at))
                            FILTER (WHERE h.scheduled AND h.active AND h.job IN (
                                        SELECT j.job FROM compliance.cron_jobs() AS j
                                         WHERE j.schedule = '* * * * *')),
                        0)
          INTO v_cron_failures, v_cron_unscheduled, v_cron_minutely_age
          FROM compliance.cron_job_health() AS h;
    EXCEPTION WHEN OTHERS THEN
        v_cron_failures := NULL;
        v_cron_unscheduled := NULL;
        v_cron_minutely_age := NULL;
    END;

    RETURN QUERY VALUES
        ('outbox_depth', v_outbox_depth::double precision, 'count'),
        ('outbox_oldest_age_seconds', compliance.age_seconds(v_now, coalesce(v_outbox_oldest, v_now)), 'seconds'),
        -- The age of the oldest event no uploaded anchor protects yet, queued or chained;
        -- 0 when every event is anchored (an idle ledger has nothing at risk).
        ('anchor_gap_seconds',
         compliance.age_seconds(v_now, coalesce(LEAST(v_outbox_oldest, v_first_unanchored), v_now)), 'seconds'),
        ('anchor_last_upload_age_seconds', compliance.age_seconds(v_now, v_last_upload), 'seconds'),
        ('anchors_pending',
         (SELECT pg_catalog.count(*) FROM compliance.anchors AS a WHERE a.status = 'pending')::double precision,
         'count'),
        -- Integrity alarms nobody has reviewed yet (compliance.acknowledge_anchor_failure).
        ('anchors_failed',
         (SELECT pg_catalog.count(*)
            FROM compliance.anchors AS a
           WHERE a.status = 'failed'
             AND NOT EXISTS (SELECT 1 FROM compliance.anchor_failure_reviews AS r
                              WHERE r.anchor_id = a.anchor_id))::double precision,
         'count'),
        ('chain_length', v_drainer.last_seq::double precision, 'count'),
        ('drainer_last_success_age_seconds', compliance.age_seconds(v_now, v_drainer.last_success_at), 'seconds'),
        ('drainer_halted', (v_drainer.halted_at IS NOT NULL)::integer::double precision, 'boolean'),
        ('verification_lag', GREATEST(v_drainer.last_seq - v_verification.verified_seq, 0)::double precision,
         'count'),
        ('verification_failed', (v_verification.last_ok IS FALSE)::integer::double precision, 'boolean'),
        ('verification_last_run_age_seconds', compliance.age_seconds(v_now, v_verification.last_run_at),
         'seconds'),
        -- Running jobs whose runner has shown no progress (heartbeat, else the claim) for
        -- 15 minutes: exactly what compliance.reconcile_exports() would fail now.
        ('exports_stuck',
         (SELECT pg_catalog.count(*)
            FROM compliance.export_jobs AS j
           WHERE j.status = 'running'
             AND coalesce(j.heartbeat_at, j.started_at) < v_now - interval '15 minutes')::double precision,
         'count'),
        ('cron_failed_runs_last_hour', v_cron_failures::double precision, 'count'),
        ('cron_jobs_unscheduled', v_cron_unscheduled::double precision, 'count'),
        ('cron_minutely_jobs_last_start_age_seconds', v_cron_minutely_age, 'seconds');
END;
$$;
COMMENT ON FUNCTION compliance.metrics() IS
'Health metrics (metric, value, unit) for the watchdog and auditchain status; cheap, read-only, names documented in docs/api.md.';

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

SELECT compliance.protect_table('compliance.anchor_failure_reviews', true);
