-- In-database verification: recompute every hash from the stored columns.
SET LOCAL search_path = pg_catalog, pg_temp;

-- compliance.verify_range(from, to, expected_prev): the set-based check behind
-- verify_chain and the incremental verifier. Re-hashes every event of [from, to] from its
-- columns, checks each prev_hash link (the first against expected_prev) and seq
-- continuity, and reports the first failure. Touches: audit_events (read).
CREATE OR REPLACE FUNCTION compliance.verify_range(p_from_seq bigint, p_to_seq bigint, p_expected_prev bytea)
RETURNS TABLE (
    ok boolean, events_checked bigint, first_bad_seq bigint, problem text, last_seq bigint, last_hash bytea
)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH checked AS (
        SELECT e.seq,
               e.event_hash,
               CASE
                   WHEN e.seq <> coalesce(pg_catalog.lag(e.seq) OVER w + 1, p_from_seq)
                       THEN pg_catalog.format('seq gap: expected seq %s, found seq %s',
                                              coalesce(pg_catalog.lag(e.seq) OVER w + 1, p_from_seq), e.seq)
                   WHEN e.hash_version <> 1
                       THEN pg_catalog.format('unknown hash_version %s', e.hash_version)
                   WHEN compliance.event_hash(
                            e.prev_hash,
                            compliance.event_record(e.seq, e.event_id, e.occurred_at, e.recorded_at, e.tenant_id,
                                                    e.event_type, e.actor, compliance.payload_digest(e.payload))
                        ) <> e.event_hash
                       THEN 'content changed: the event no longer matches its event_hash'
                   WHEN e.prev_hash <> coalesce(pg_catalog.lag(e.event_hash) OVER w, p_expected_prev)
                       THEN 'link broken: prev_hash differs from the previous event''s event_hash'
               END AS problem
          FROM compliance.audit_events AS e
         WHERE e.seq BETWEEN p_from_seq AND p_to_seq
        WINDOW w AS (ORDER BY e.seq)
    ),
    first_problem AS (
        SELECT c.seq, c.problem FROM checked AS c WHERE c.problem IS NOT NULL ORDER BY c.seq LIMIT 1
    ),
    summary AS (
        SELECT pg_catalog.count(*) AS n, max(c.seq) AS max_seq FROM checked AS c
    )
    SELECT fp.seq IS NULL,
           s.n,
           fp.seq,
           fp.problem,
           s.max_seq,
           (SELECT e.event_hash FROM compliance.audit_events AS e WHERE e.seq = s.max_seq)
      FROM summary AS s
      LEFT JOIN first_problem AS fp ON true;
$$;
COMMENT ON FUNCTION compliance.verify_range(bigint, bigint, bytea) IS
'Internal: set-based check of seq range [from, to] given the expected prev_hash of its first event.';

-- compliance.verify_chain(from_seq, to_seq): verify the whole chain or a part of it.
-- Exactly one row: ok, events_checked, first_bad_seq, problem. Also reports a chain that
-- ends before the head the drainer wrote (a cut-off tail). Touches: audit_events,
-- drainer_state (read).
CREATE OR REPLACE FUNCTION compliance.verify_chain(from_seq bigint DEFAULT NULL, to_seq bigint DEFAULT NULL)
RETURNS TABLE (ok boolean, events_checked bigint, first_bad_seq bigint, problem text)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_from bigint := coalesce(verify_chain.from_seq, 1);
    v_to bigint := coalesce(verify_chain.to_seq, 9223372036854775807);
    v_drained_to bigint;
    v_expected_prev bytea;
    v_result record;
BEGIN
    IF v_from < 1 OR v_to < v_from THEN
        RAISE EXCEPTION 'invalid range: from_seq % to_seq %', v_from, v_to USING ERRCODE = '22023';
    END IF;
    -- Read the drainer's head first: events only ever get added after it.
    SELECT d.last_seq INTO v_drained_to FROM compliance.drainer_state AS d;
    IF v_from = 1 THEN
        v_expected_prev := pg_catalog.decode(pg_catalog.repeat('00', 32), 'hex');
    ELSE
        SELECT e.event_hash INTO v_expected_prev FROM compliance.audit_events AS e WHERE e.seq = v_from - 1;
        IF NOT FOUND THEN
            RETURN QUERY SELECT false, 0::bigint, v_from - 1,
                pg_catalog.format('seq gap: seq %s, the link into the range, is missing', v_from - 1);
            RETURN;
        END IF;
    END IF;

    SELECT * INTO v_result FROM compliance.verify_range(v_from, v_to, v_expected_prev);
    IF v_result.ok AND verify_chain.to_seq IS NULL AND coalesce(v_result.last_seq, v_from - 1) < v_drained_to THEN
        RETURN QUERY SELECT false, v_result.events_checked, coalesce(v_result.last_seq, v_from - 1) + 1,
            pg_catalog.format('tail missing: the drainer wrote up to seq %s but the chain ends at seq %s',
                              v_drained_to, coalesce(v_result.last_seq, v_from - 1));
        RETURN;
    END IF;
    RETURN QUERY SELECT v_result.ok, v_result.events_checked, v_result.first_bad_seq, v_result.problem;
END;
$$;
COMMENT ON FUNCTION compliance.verify_chain(bigint, bigint) IS
'Recomputes every hash and link in [from_seq, to_seq] (default: all); one row naming the first bad seq and the problem.';

-- compliance.verify_new_events(max_rows): the incremental verifier pg_cron runs every
-- minute. Verifies the events after verification_state.verified_seq, at most max_rows at a
-- time, and records how far the chain is verified. A failure is recorded, not raised, so
-- the next run reports it again. Touches: audit_events (read), verification_state (UPDATE).
CREATE OR REPLACE FUNCTION compliance.verify_new_events(max_rows bigint DEFAULT 1000000)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_state compliance.verification_state%ROWTYPE;
    v_result record;
BEGIN
    SELECT * INTO STRICT v_state FROM compliance.verification_state FOR UPDATE;
    SELECT * INTO v_result
      FROM compliance.verify_range(v_state.verified_seq + 1, v_state.verified_seq + verify_new_events.max_rows,
                                   v_state.verified_hash);
    IF v_result.ok THEN
        UPDATE compliance.verification_state
           SET verified_seq = coalesce(v_result.last_seq, verified_seq),
               verified_hash = coalesce(v_result.last_hash, verified_hash),
               last_run_at = pg_catalog.now(), last_ok = true, first_bad_seq = NULL, problem = NULL;
    ELSE
        UPDATE compliance.verification_state
           SET last_run_at = pg_catalog.now(), last_ok = false,
               first_bad_seq = v_result.first_bad_seq, problem = v_result.problem;
    END IF;
    RETURN v_result.events_checked;
END;
$$;
COMMENT ON FUNCTION compliance.verify_new_events(bigint) IS
'Incremental verifier (pg_cron): checks events past verification_state.verified_seq and records progress or the failure.';
