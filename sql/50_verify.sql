-- In-database verification: recompute every hash from the stored columns.
SET LOCAL search_path = pg_catalog, pg_temp;

-- compliance._event_problem(event, expected_seq, expected_prev): what is wrong with one
-- stored event, given the seq it should have and the event_hash its prev_hash should
-- repeat (the previous event's, or the range's expected_prev for its first event); NULL
-- when nothing is. The checks of one link need nothing else, so a range can be checked in
-- any order and in parallel. PARALLEL SAFE and inlinable (LANGUAGE sql, no SET).
-- Touches no table.
CREATE OR REPLACE FUNCTION compliance._event_problem(
    event compliance.audit_events, expected_seq bigint, expected_prev bytea
)
RETURNS text
LANGUAGE sql
STABLE
PARALLEL SAFE
RETURN CASE
    WHEN event.seq <> expected_seq
        THEN pg_catalog.format('seq gap: expected seq %s, found seq %s', expected_seq, event.seq)
    WHEN event.hash_version NOT IN (1, 2)
        THEN pg_catalog.format('unknown hash_version %s', event.hash_version)
    WHEN compliance._row_record(event) IS NULL
        THEN 'value removed: a payload or actor is missing without a recorded erasure'
    WHEN compliance.event_hash(event.prev_hash, compliance._row_record(event)) <> event.event_hash
        THEN 'content changed: the event no longer matches its event_hash'
    WHEN event.prev_hash <> expected_prev
        THEN 'link broken: prev_hash differs from the previous event''s event_hash'
END;
COMMENT ON FUNCTION compliance._event_problem(compliance.audit_events, bigint, bytea) IS
'Internal: what is wrong with one stored event given its expected seq and prev_hash, or NULL.';

-- compliance._verify_range(from, to, expected_prev): the check behind verify_chain and the
-- incremental verifier. Re-hashes every event of [from, to] from its columns, checks each
-- prev_hash link (the first against expected_prev) and seq continuity, and reports the
-- first failure, i.e. the lowest bad seq. Each event is joined with its predecessor's stored
-- hash and checked on its own, in one aggregate the planner may spread over parallel
-- workers (max_parallel_workers_per_gather); only the lowest bad event is then looked at
-- again for its message. Touches: audit_events (read).
CREATE OR REPLACE FUNCTION compliance._verify_range(from_seq bigint, to_seq bigint, expected_prev bytea)
RETURNS TABLE (
    ok boolean, events_checked bigint, first_bad_seq bigint, problem text, last_seq bigint, last_hash bytea
)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
-- Planned for the actual range at every call: a generic plan (PL/pgSQL's choice after five
-- calls in a session) assumes a tiny range and never runs in parallel.
SET plan_cache_mode = force_custom_plan
AS $$
BEGIN
    -- One statement under RETURN QUERY, the PL/pgSQL form that may run in parallel (SELECT
    -- INTO never does). An event without a predecessor in the range (other than the first)
    -- follows a gap: expected seq -1 makes the seq check fail for it. Only the lowest bad
    -- event is looked at again, against the event before it as a walk in seq order sees it,
    -- for its message.
    RETURN QUERY
        SELECT s.bad_seq IS NULL, s.checked, s.bad_seq, bad.problem, s.last_seq,
               (SELECT l.event_hash FROM compliance.audit_events AS l WHERE l.seq = s.last_seq)
          FROM (
              SELECT pg_catalog.count(*) AS checked,
                     max(e.seq) AS last_seq,
                     min(e.seq) FILTER (
                         WHERE compliance._event_problem(
                             e,
                             CASE WHEN e.seq = _verify_range.from_seq OR p.seq IS NOT NULL THEN e.seq ELSE -1 END,
                             CASE WHEN e.seq = _verify_range.from_seq THEN _verify_range.expected_prev ELSE p.event_hash END
                         ) IS NOT NULL
                     ) AS bad_seq
                FROM compliance.audit_events AS e
                LEFT JOIN compliance.audit_events AS p
                       ON p.seq = e.seq - 1 AND p.seq >= _verify_range.from_seq AND p.seq < _verify_range.to_seq
               WHERE e.seq BETWEEN _verify_range.from_seq AND _verify_range.to_seq
          ) AS s
          LEFT JOIN LATERAL (
              SELECT compliance._event_problem(
                         e, coalesce(b.seq + 1, _verify_range.from_seq), coalesce(b.event_hash, _verify_range.expected_prev)
                     ) AS problem
                FROM compliance.audit_events AS e
                LEFT JOIN LATERAL (
                    SELECT x.seq, x.event_hash
                      FROM compliance.audit_events AS x
                     WHERE x.seq >= _verify_range.from_seq AND x.seq < e.seq
                     ORDER BY x.seq DESC
                     LIMIT 1
                ) AS b ON true
               WHERE e.seq = s.bad_seq
          ) AS bad ON true;
END;
$$;
COMMENT ON FUNCTION compliance._verify_range(bigint, bigint, bytea) IS
'Internal: check of seq range [from, to] given the expected prev_hash of its first event; parallel-safe per event.';

-- compliance.verify_chain(from_seq, to_seq): verify the whole chain or a part of it.
-- Exactly one row: ok, events_checked, first_bad_seq, problem, erased_events. Besides every hash, link and
-- seq of the range, it compares the chain with what the drainer and the incremental
-- verifier remember having seen (drainer_state, verification_state), which catches a chain
-- re-hashed after a change, a cut-off tail and events appended outside the drainer.
-- Touches: audit_events, drainer_state, verification_state (read).
CREATE OR REPLACE FUNCTION compliance.verify_chain(from_seq bigint DEFAULT NULL, to_seq bigint DEFAULT NULL)
RETURNS TABLE (ok boolean, events_checked bigint, first_bad_seq bigint, problem text, erased_events bigint)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_from bigint := coalesce(verify_chain.from_seq, 1);
    v_to bigint := coalesce(verify_chain.to_seq, 9223372036854775807);
    v_drainer compliance.drainer_state%ROWTYPE;
    v_verifier compliance.verification_state%ROWTYPE;
    v_expected_prev bytea;
    v_result record;
    v_chain_end bigint;
    v_memory record;
    v_stored_hash bytea;
    v_erased bigint;
    v_unrecorded_seq bigint;
BEGIN
    IF v_from < 1 OR v_to < v_from THEN
        RAISE EXCEPTION 'invalid range: from_seq % to_seq %', v_from, v_to USING ERRCODE = '22023';
    END IF;
    -- A STABLE function reads one snapshot, so these agree with the events read below.
    SELECT * INTO STRICT v_drainer FROM compliance.drainer_state;
    SELECT * INTO STRICT v_verifier FROM compliance.verification_state;
    IF v_from = 1 THEN
        v_expected_prev := pg_catalog.decode(pg_catalog.repeat('00', 32), 'hex');
    ELSE
        SELECT e.event_hash INTO v_expected_prev FROM compliance.audit_events AS e WHERE e.seq = v_from - 1;
        IF NOT FOUND THEN
            RETURN QUERY SELECT false, 0::bigint, v_from - 1,
                pg_catalog.format('seq gap: seq %s, the link into the range, is missing', v_from - 1), 0::bigint;
            RETURN;
        END IF;
    END IF;

    SELECT * INTO v_result FROM compliance._verify_range(v_from, v_to, v_expected_prev);
    -- Events whose payload or actor compliance.erase removed (they verify by their commitments).
    SELECT pg_catalog.count(*) INTO v_erased
      FROM compliance.audit_events AS e
     WHERE e.seq BETWEEN v_from AND v_to
       AND (e.payload_erased_by IS NOT NULL OR e.actor_erased_by IS NOT NULL);
    IF NOT v_result.ok THEN
        RETURN QUERY SELECT v_result.ok, v_result.events_checked, v_result.first_bad_seq, v_result.problem, v_erased;
        RETURN;
    END IF;
    -- An erased value must have been removed by compliance.erase, whose erasure event (in the
    -- chain, so itself verified above) lists the seq and the field.
    IF v_erased > 0 THEN
        SELECT compliance._first_unrecorded_erasure(v_from, v_to) INTO v_unrecorded_seq;
        IF v_unrecorded_seq IS NOT NULL THEN
            RETURN QUERY SELECT false, v_result.events_checked, v_unrecorded_seq,
                'erasure not recorded: the compliance.erasure event the row names does not list this seq and field',
                v_erased;
            RETURN;
        END IF;
    END IF;
    v_chain_end := coalesce(v_result.last_seq, v_from - 1);

    -- Hashes remembered by the verifier and the drainer must still be in the chain: a
    -- change followed by re-hashing every later event passes every link check above.
    FOR v_memory IN
        SELECT m.seq, m.hash, m.who
          FROM (VALUES (v_verifier.verified_seq, v_verifier.verified_hash, 'the incremental verifier'),
                       (v_drainer.last_seq, v_drainer.last_hash, 'the drainer')) AS m (seq, hash, who)
         WHERE m.seq BETWEEN v_from AND least(v_to, v_chain_end)
         ORDER BY m.seq
    LOOP
        SELECT e.event_hash INTO v_stored_hash FROM compliance.audit_events AS e WHERE e.seq = v_memory.seq;
        IF v_stored_hash <> v_memory.hash THEN
            RETURN QUERY SELECT false, v_result.events_checked, v_memory.seq,
                pg_catalog.format('chain rewritten: event_hash of seq %s differs from the one %s recorded; '
                                  'an earlier event was changed and the later hashes recomputed',
                                  v_memory.seq, v_memory.who), v_erased;
            RETURN;
        END IF;
    END LOOP;

    IF v_chain_end < least(v_to, greatest(v_drainer.last_seq, v_verifier.verified_seq)) THEN
        RETURN QUERY SELECT false, v_result.events_checked, v_chain_end + 1,
            pg_catalog.format('tail missing: events up to seq %s were chained but the chain ends at seq %s',
                              greatest(v_drainer.last_seq, v_verifier.verified_seq), v_chain_end), v_erased;
        RETURN;
    END IF;
    IF v_chain_end > v_drainer.last_seq THEN
        RETURN QUERY SELECT false, v_result.events_checked, greatest(v_from, v_drainer.last_seq + 1),
            pg_catalog.format('unexpected events: the chain goes on to seq %s but the drainer wrote only up to seq %s',
                              v_chain_end, v_drainer.last_seq), v_erased;
        RETURN;
    END IF;
    RETURN QUERY SELECT true, v_result.events_checked, NULL::bigint, NULL::text, v_erased;
END;
$$;
COMMENT ON FUNCTION compliance.verify_chain(bigint, bigint) IS
'Recomputes every hash and link in [from_seq, to_seq] (default: all) and compares with the drainer''s and verifier''s memory; one row naming the first bad seq and the problem, and counting erased events.';

-- compliance.verify_new_events(max_rows): the incremental verifier pg_cron runs every
-- minute. Verifies the events after verification_state.verified_seq, at most max_rows at a
-- time, and the stored Merkle nodes they completed, and records how far the chain is
-- verified. A failure is recorded, not raised, so the next run reports it again.
-- Touches: audit_events, merkle_nodes, drainer_state (read), verification_state (UPDATE).
CREATE OR REPLACE FUNCTION compliance.verify_new_events(max_rows bigint DEFAULT 1000000)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_state compliance.verification_state%ROWTYPE;
    v_result record;
    v_tree_size bigint;
    v_bad record;
BEGIN
    SELECT * INTO STRICT v_state FROM compliance.verification_state FOR UPDATE;
    SELECT * INTO v_result
      FROM compliance._verify_range(v_state.verified_seq + 1, v_state.verified_seq + verify_new_events.max_rows,
                                   v_state.verified_hash);
    -- The Merkle nodes the newly verified events completed (chunk k completes at seq
    -- 256k + 256): a bad node counts as a failure at that seq, so acknowledging it moves
    -- past exactly that node.
    IF v_result.ok AND v_result.last_seq IS NOT NULL THEN
        SELECT d.tree_size INTO STRICT v_tree_size FROM compliance.drainer_state AS d;
        SELECT * INTO v_bad
          FROM compliance._tree_check_chunks(v_state.verified_seq / 256,
                                             least(v_result.last_seq, v_tree_size) / 256 - 1)
         LIMIT 1;
        IF FOUND THEN
            v_result.ok := false;
            v_result.first_bad_seq := v_bad.chunk * 256 + 256;
            v_result.problem := 'Merkle tree: ' || v_bad.problem;
        END IF;
    END IF;
    IF v_result.ok THEN
        UPDATE compliance.verification_state
           SET verified_seq = coalesce(v_result.last_seq, verified_seq),
               verified_hash = coalesce(v_result.last_hash, verified_hash),
               last_run_at = pg_catalog.now(), last_ok = true, first_bad_seq = NULL, problem = NULL;
    ELSE
        -- Everything before the first bad event did verify: keep that progress.
        UPDATE compliance.verification_state AS v
           SET verified_seq = e.seq, verified_hash = e.event_hash
          FROM compliance.audit_events AS e
         WHERE e.seq = v_result.first_bad_seq - 1 AND e.seq > v.verified_seq;
        UPDATE compliance.verification_state
           SET last_run_at = pg_catalog.now(), last_ok = false,
               first_bad_seq = v_result.first_bad_seq, problem = v_result.problem;
    END IF;
    RETURN v_result.events_checked;
END;
$$;
COMMENT ON FUNCTION compliance.verify_new_events(bigint) IS
'Incremental verifier (pg_cron): checks events past verification_state.verified_seq and the Merkle nodes they completed; records progress or the failure.';

-- compliance.acknowledge_verification_failure(bad_seq, note): the documented way past a
-- failure the incremental verifier found, after investigation. The break stays in the
-- chain (verify_chain keeps reporting it); this records the incident and lets the verifier
-- continue from the named event, taking its stored hash as given. Same contract as every
-- acknowledge_*: true when acknowledged now; false (no change, the first note kept) when the
-- failure at bad_seq was already acknowledged; AC013 for a NULL, blank or
-- over-2,000-character note; AC012 when the verifier is not failing at bad_seq. Owner only.
-- Touches: verification_state (UPDATE), integrity_incidents (INSERT), audit_events (read).
CREATE OR REPLACE FUNCTION compliance.acknowledge_verification_failure(bad_seq bigint, note text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_state compliance.verification_state%ROWTYPE;
    v_hash bytea;
BEGIN
    PERFORM compliance._check_acknowledgement_note(acknowledge_verification_failure.note);
    SELECT * INTO STRICT v_state FROM compliance.verification_state FOR UPDATE;
    IF v_state.last_ok IS DISTINCT FROM false
       OR v_state.first_bad_seq IS DISTINCT FROM acknowledge_verification_failure.bad_seq THEN
        IF EXISTS (
            SELECT 1
              FROM compliance.integrity_incidents AS i
             WHERE i.halted_seq = acknowledge_verification_failure.bad_seq
               AND i.resumed_from_seq = acknowledge_verification_failure.bad_seq
               AND i.halted_reason LIKE 'incremental verification: %'
        ) THEN
            RETURN false;
        END IF;
        RAISE EXCEPTION 'the incremental verifier is not failing at seq % (its first bad seq is %)',
            acknowledge_verification_failure.bad_seq, coalesce(v_state.first_bad_seq::text, 'none')
            USING ERRCODE = 'AC012';
    END IF;
    SELECT e.event_hash INTO STRICT v_hash
      FROM compliance.audit_events AS e
     WHERE e.seq = acknowledge_verification_failure.bad_seq;

    INSERT INTO compliance.integrity_incidents
        (halted_at, halted_seq, halted_reason, resumed_from_seq, resumed_from_hash, note)
    VALUES (coalesce(v_state.last_run_at, pg_catalog.now()), acknowledge_verification_failure.bad_seq,
            'incremental verification: ' || v_state.problem, acknowledge_verification_failure.bad_seq, v_hash,
            acknowledge_verification_failure.note);
    UPDATE compliance.verification_state
       SET verified_seq = acknowledge_verification_failure.bad_seq, verified_hash = v_hash,
           last_ok = NULL, first_bad_seq = NULL, problem = NULL;
    RETURN true;
END;
$$;
COMMENT ON FUNCTION compliance.acknowledge_verification_failure(bigint, text) IS
'Operator action after investigating a verifier failure: records an integrity incident and resumes verification '
'after the named seq; false if already acknowledged.';
