-- The drainer: moves outbox rows into the chain, one batch per transaction.
SET LOCAL search_path = pg_catalog, pg_temp;

-- compliance._check_chain_head(last_seq, last_hash): raises AC010 unless the chain ends
-- exactly where the drainer last left it, that head still hashes to what it wrote, and
-- the Merkle tree covers exactly the chain. Touches: audit_events, drainer_state (read).
CREATE OR REPLACE FUNCTION compliance._check_chain_head(last_seq bigint, last_hash bytea)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_max_seq bigint;
    v_tree_size bigint;
    v_head compliance.audit_events%ROWTYPE;
    v_problem text;
    v_bad_seq bigint := _check_chain_head.last_seq;
BEGIN
    SELECT max(e.seq) INTO v_max_seq FROM compliance.audit_events AS e;
    SELECT d.tree_size INTO v_tree_size FROM compliance.drainer_state AS d;
    IF v_tree_size IS DISTINCT FROM _check_chain_head.last_seq THEN
        v_problem := pg_catalog.format('the Merkle tree holds %s leaves, not one per chained event', v_tree_size);
    ELSIF coalesce(v_max_seq, 0) > _check_chain_head.last_seq THEN
        v_bad_seq := _check_chain_head.last_seq + 1;
        v_problem := pg_catalog.format('events up to seq %s exist beyond the head the drainer wrote', v_max_seq);
    ELSIF _check_chain_head.last_seq > 0 THEN
        SELECT * INTO v_head FROM compliance.audit_events AS e WHERE e.seq = _check_chain_head.last_seq;
        IF NOT FOUND THEN
            v_problem := 'the head event was removed';
        ELSIF v_head.event_hash <> _check_chain_head.last_hash THEN
            v_problem := 'the head event''s stored hash differs from the one the drainer wrote';
        ELSIF compliance.event_hash(v_head.prev_hash, compliance._row_record(v_head)) <> _check_chain_head.last_hash
              -- A head an operator accepted as it is (acknowledge_integrity_failure) stays
              -- altered; without this the drainer could never resume after such a halt.
              AND NOT EXISTS (
                  SELECT 1
                    FROM compliance.integrity_incidents AS i
                   WHERE i.resumed_from_seq = _check_chain_head.last_seq AND i.resumed_from_hash = _check_chain_head.last_hash
              ) THEN
            v_problem := 'the head event''s content no longer matches its hash';
        END IF;
    END IF;
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'chain head check failed at seq %: %', v_bad_seq, v_problem
            USING ERRCODE = 'AC010',
                  DETAIL = pg_catalog.format('seq=%s', v_bad_seq),
                  HINT = 'The drainer will not extend a tampered chain; see docs/runbook.md "Drainer halted".';
    END IF;
END;
$$;
COMMENT ON FUNCTION compliance._check_chain_head(bigint, bytea) IS
'Internal: raises AC010 naming the seq unless the chain head is exactly the event the drainer last wrote, unaltered.';

-- compliance.drain(max_rows): move up to max_rows outbox rows, in emit order, into
-- audit_events with their hashes, in the caller's transaction. Returns the rows moved;
-- 0 at once when another drainer holds the lock. The head is carried in a variable and
-- written to drainer_state once per batch.
-- Touches: audit_outbox (SELECT, DELETE), audit_events (INSERT),
-- drainer_state (UPDATE), merkle_nodes (INSERT, through compliance._tree_append),
-- tenant_tree_pending (INSERT),
-- event_expectations (UPDATE, through compliance._advance_expectations).
CREATE OR REPLACE FUNCTION compliance.drain(max_rows integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_state compliance.drainer_state%ROWTYPE;
    -- The wall clock, not now(): run_drainer's idle sleep shares a transaction with the next batch.
    v_recorded_at timestamptz := pg_catalog.clock_timestamp();
    v_ids bigint[];
    v_digests bytea[];
    -- Each event's key in the tenant trees ('' for no tenant) and its leaf hash, shared by
    -- the global tree and its tenant's tree.
    v_tenant_keys text[];
    v_leaves bytea[] := '{}';
    -- Hash format v2: the batch's secret for deriving each event's salts (compliance._salts).
    v_salt_key constant bytea := compliance._new_salt_key();
    v_payload_salts bytea[];
    v_actor_salts bytea[];
    v_digest bytea;
    v_prev_hashes bytea[] := '{}';
    v_hashes bytea[] := '{}';
    v_hash bytea;
    v_position integer := 0;
    v_moved integer;
BEGIN
    IF drain.max_rows IS NULL OR drain.max_rows < 1 THEN
        RAISE EXCEPTION 'max_rows must be a positive integer' USING ERRCODE = '22023';
    END IF;
    -- Exactly one drainer: a second caller gives way at once instead of queueing.
    IF NOT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('auditchain.drainer')::bigint) THEN
        RETURN 0;
    END IF;

    SELECT * INTO STRICT v_state FROM compliance.drainer_state;
    IF v_state.halted_at IS NOT NULL THEN
        RAISE EXCEPTION 'drainer halted since % at seq %: %', v_state.halted_at, v_state.halted_seq,
            v_state.halted_reason
            USING ERRCODE = 'AC011',
                  DETAIL = pg_catalog.format('seq=%s', v_state.halted_seq),
                  HINT = 'An operator must investigate and call compliance.acknowledge_integrity_failure.';
    END IF;
    PERFORM compliance._check_chain_head(v_state.last_seq, v_state.last_hash);

    -- Each record is hashed once, here: its digest is both the chain's input and the Merkle
    -- tree's leaf data. Hash format v2: each event gets a salt for its payload and one for its
    -- actor, derived once per row (in the subquery) and stored with it.
    SELECT pg_catalog.array_agg(b.outbox_id ORDER BY b.outbox_id),
           pg_catalog.array_agg(
               pg_catalog.sha256(compliance.event_record_v2(
                   v_state.last_seq + b.position, b.event_id, b.occurred_at, v_recorded_at, b.tenant_id,
                   b.event_type, compliance.commitment(pg_catalog.substr(b.salts, 17, 16), b.actor),
                   compliance.commitment(pg_catalog.substr(b.salts, 1, 16), b.payload::text)
               )) ORDER BY b.outbox_id
           ),
           pg_catalog.array_agg(pg_catalog.substr(b.salts, 1, 16) ORDER BY b.outbox_id),
           pg_catalog.array_agg(pg_catalog.substr(b.salts, 17, 16) ORDER BY b.outbox_id),
           pg_catalog.array_agg(coalesce(b.tenant_id, '') ORDER BY b.outbox_id)
      INTO v_ids, v_digests, v_payload_salts, v_actor_salts, v_tenant_keys
      FROM (
          SELECT o.*, pg_catalog.row_number() OVER (ORDER BY o.outbox_id) AS position,
                 compliance._salts(v_salt_key, o.outbox_id) AS salts
            FROM (
                -- No row lock: the advisory lock admits one drainer, and the count check
                -- after the DELETE fails the batch if a selected row vanished meanwhile.
                SELECT *
                  FROM compliance.audit_outbox
                 ORDER BY outbox_id
                 LIMIT drain.max_rows
            ) AS o
      ) AS b;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;

    -- The chain is inherently sequential: one hash per row, in a variable. Subscript
    -- assignment keeps the arrays expanded in place (appending with || copies them).
    v_hash := v_state.last_hash;
    FOREACH v_digest IN ARRAY v_digests LOOP
        v_position := v_position + 1;
        v_prev_hashes[v_position] := v_hash;
        v_hash := compliance._chain_link(v_hash, v_digest);
        v_hashes[v_position] := v_hash;
        v_leaves[v_position] := compliance._tree_leaf(v_digest);
    END LOOP;

    WITH moved AS (
        DELETE FROM compliance.audit_outbox AS o
         WHERE o.outbox_id = ANY (v_ids)
        RETURNING o.*
    )
    INSERT INTO compliance.audit_events (
        seq, event_id, occurred_at, recorded_at, tenant_id, event_type, actor, payload,
        hash_version, prev_hash, event_hash, payload_salt, actor_salt
    )
    SELECT v_state.last_seq + u.position, m.event_id, m.occurred_at, v_recorded_at, m.tenant_id,
           m.event_type, m.actor, m.payload, 2, u.prev_hash, u.event_hash, u.payload_salt, u.actor_salt
      FROM unnest(v_ids, v_prev_hashes, v_hashes, v_payload_salts, v_actor_salts) WITH ORDINALITY
               AS u (outbox_id, prev_hash, event_hash, payload_salt, actor_salt, position)
      JOIN moved AS m ON m.outbox_id = u.outbox_id;
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    IF v_moved <> pg_catalog.cardinality(v_ids) THEN
        RAISE EXCEPTION 'drain moved % rows but selected %', v_moved, pg_catalog.cardinality(v_ids)
            USING ERRCODE = 'XX000';
    END IF;

    -- The Merkle trees' leaf data are the record digests, appended in the same transaction so
    -- that the trees and the chain never disagree at a commit. The tenant trees get the batch's
    -- tenant keys and leaves as one pending row, folded into their heads per commitment
    -- (_tenant_trees_fold): writing each tenant's head per batch costs the drainer a row per
    -- tenant per batch.
    PERFORM compliance._tree_append(v_state.last_seq + 1, v_leaves);
    INSERT INTO compliance.tenant_tree_pending (first_seq, tenant_keys, leaf_hashes)
    VALUES (v_state.last_seq + 1, v_tenant_keys, v_leaves);
    PERFORM compliance._advance_expectations(v_state.last_seq + 1, v_state.last_seq + v_moved);
    UPDATE compliance.drainer_state
       SET last_seq = v_state.last_seq + v_moved,
           last_hash = v_hash,
           last_success_at = pg_catalog.clock_timestamp(),
           last_batch_rows = v_moved,
           total_drained = total_drained + v_moved;
    RETURN v_moved;
END;
$$;
COMMENT ON FUNCTION compliance.drain(integer) IS
'Chains up to max_rows outbox rows in emit order within the caller''s transaction; returns rows moved (0 if another drainer is active).';

-- compliance.record_halt(): re-run the head check and, when it fails, remember the halt
-- (seq and reason from the check itself) so metrics and status show it and later runs
-- refuse before touching anything. Returns whether the drainer is halted. It records only
-- a failure it sees itself, so the drainer role may call it without being able to forge
-- a halt. Touches: drainer_state (UPDATE), audit_events, integrity_incidents (read).
CREATE OR REPLACE FUNCTION compliance.record_halt()
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_state compliance.drainer_state%ROWTYPE;
    v_message text;
    v_detail text;
BEGIN
    SELECT * INTO STRICT v_state FROM compliance.drainer_state FOR UPDATE;
    IF v_state.halted_at IS NOT NULL THEN
        RETURN true;
    END IF;
    BEGIN
        PERFORM compliance._check_chain_head(v_state.last_seq, v_state.last_hash);
    EXCEPTION WHEN SQLSTATE 'AC010' THEN
        GET STACKED DIAGNOSTICS v_message = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL;
        UPDATE compliance.drainer_state
           SET halted_at = pg_catalog.now(),
               halted_seq = substring(v_detail FROM 'seq=(\d+)')::bigint,
               halted_reason = v_message;
        RETURN true;
    END;
    RETURN false;
END;
$$;
COMMENT ON FUNCTION compliance.record_halt() IS
'Re-runs the head check; when it fails, marks the drainer halted at that seq (kept until compliance.acknowledge_integrity_failure).';

-- compliance.run_drainer(max_runtime, batch_size, idle_sleep): what pg_cron calls every
-- minute. Loops drain + COMMIT until max_runtime is spent; slightly longer than the cron
-- interval so that pg_cron starts the next run straight after (continuous draining).
-- After a batch smaller than batch_size it sleeps idle_sleep: the outbox then holds about
-- rate x (idle_sleep + batch time) events; 0.02 s keeps it under 100 at 1,000 events/s for
-- about 7% of a core while idle (docs/benchmarks.md).
-- On AC010 it records the halt (compliance.record_halt), commits that, and fails the run.
-- A procedure that COMMITs cannot carry SET search_path, so every name, type and operator
-- below is schema-qualified instead.
-- Touches: as drain and record_halt.
CREATE OR REPLACE PROCEDURE compliance.run_drainer(
    max_runtime interval DEFAULT '65 seconds',
    batch_size integer DEFAULT 5000,
    idle_sleep double precision DEFAULT 0.02
)
LANGUAGE plpgsql
AS $$
DECLARE
    v_deadline pg_catalog.timestamptz := pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) run_drainer.max_runtime;
    v_moved pg_catalog.int4;
    v_error_state pg_catalog.text;
    v_error_message pg_catalog.text;
    v_error_detail pg_catalog.text;
BEGIN
    LOOP
        v_error_state := NULL;
        BEGIN
            v_moved := compliance.drain(run_drainer.batch_size);
        EXCEPTION WHEN SQLSTATE 'AC010' THEN
            GET STACKED DIAGNOSTICS v_error_state = RETURNED_SQLSTATE,
                                    v_error_message = MESSAGE_TEXT,
                                    v_error_detail = PG_EXCEPTION_DETAIL;
        END;
        IF v_error_state IS NOT NULL THEN
            PERFORM compliance.record_halt();
            COMMIT;
            RAISE EXCEPTION '%', v_error_message USING ERRCODE = v_error_state, DETAIL = v_error_detail;
        END IF;
        COMMIT;
        EXIT WHEN pg_catalog.clock_timestamp() OPERATOR(pg_catalog.>=) v_deadline;
        IF v_moved OPERATOR(pg_catalog.<) run_drainer.batch_size THEN
            PERFORM pg_catalog.pg_sleep(run_drainer.idle_sleep);
        END IF;
    END LOOP;
END;
$$;
COMMENT ON PROCEDURE compliance.run_drainer(interval, integer, double precision) IS  -- noqa: LT01
'pg_cron entry point: drains and commits batch by batch until max_runtime; records a halt on a failed head check.';

-- compliance._check_acknowledgement_note(note): the note rule shared by every
-- acknowledge_* function: 1-2,000 characters, not only whitespace; AC013 otherwise.
-- Touches no table.
CREATE OR REPLACE FUNCTION compliance._check_acknowledgement_note(note text)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF coalesce(_check_acknowledgement_note.note, '') !~ '[^[:space:]]'
       OR pg_catalog.length(_check_acknowledgement_note.note) > 2000 THEN
        RAISE EXCEPTION 'a note of 1-2000 characters describing the investigation is required'
            USING ERRCODE = 'AC013';
    END IF;
END;
$$;
COMMENT ON FUNCTION compliance._check_acknowledgement_note(text) IS
'Internal: AC013 unless an acknowledgement note is 1-2000 characters and not blank.';

-- compliance.acknowledge_integrity_failure(resume_from_seq, note): the documented way out
-- of a halt after investigation. The chain stays broken where it broke (verify_chain keeps
-- reporting it); this records the incident and lets the drainer extend from the current
-- last event, which the operator must name. Same contract as every acknowledge_*: true when
-- acknowledged now; false (no change, the first note kept) when this halt was already
-- acknowledged, i.e. the drainer is not halted and its last incident resumed from
-- resume_from_seq; AC013 for a NULL, blank or over-2,000-character note; AC012 when there is
-- nothing to acknowledge (not halted), resume_from_seq is not the last seq, or events the
-- Merkle tree covers were cut off the tail. Owner only.
-- Touches: integrity_incidents (INSERT), drainer_state (UPDATE), merkle_nodes (INSERT),
-- tenant_trees and tenant_tree_pending (through compliance._tenant_trees_catch_up).
CREATE OR REPLACE FUNCTION compliance.acknowledge_integrity_failure(resume_from_seq bigint, note text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_state compliance.drainer_state%ROWTYPE;
    v_max_seq bigint;
    v_head_hash bytea;
BEGIN
    PERFORM compliance._check_acknowledgement_note(acknowledge_integrity_failure.note);
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('auditchain.drainer')::bigint);
    SELECT * INTO STRICT v_state FROM compliance.drainer_state FOR UPDATE;
    IF v_state.halted_at IS NULL THEN
        -- The drainer's own incidents: the verifier's carry its prefix in halted_reason.
        IF (SELECT i.resumed_from_seq
              FROM compliance.integrity_incidents AS i
             WHERE i.halted_reason NOT LIKE 'incremental verification: %'
             ORDER BY i.incident_id DESC
             LIMIT 1) IS NOT DISTINCT FROM acknowledge_integrity_failure.resume_from_seq THEN
            RETURN false;
        END IF;
        RAISE EXCEPTION 'the drainer is not halted' USING ERRCODE = 'AC012';
    END IF;
    SELECT coalesce(max(e.seq), 0) INTO v_max_seq FROM compliance.audit_events AS e;
    IF acknowledge_integrity_failure.resume_from_seq IS DISTINCT FROM v_max_seq THEN
        RAISE EXCEPTION 'resume_from_seq must be the last seq in audit_events, which is %', v_max_seq
            USING ERRCODE = 'AC012';
    END IF;
    -- The Merkle tree (and every checkpoint signed over it) already commits to the removed
    -- events: new events under their seqs could never be proven against it.
    IF v_state.tree_size > v_max_seq THEN
        RAISE EXCEPTION 'the Merkle tree commits to % events but the chain ends at seq %: a removed tail cannot be resumed over',
            v_state.tree_size, v_max_seq
            USING ERRCODE = 'AC012', HINT = 'See docs/runbook.md "Drainer halted".';
    END IF;
    SELECT e.event_hash INTO v_head_hash FROM compliance.audit_events AS e WHERE e.seq = v_max_seq;
    v_head_hash := coalesce(v_head_hash, pg_catalog.decode(pg_catalog.repeat('00', 32), 'hex'));

    INSERT INTO compliance.integrity_incidents
        (halted_at, halted_seq, halted_reason, resumed_from_seq, resumed_from_hash, note)
    VALUES (v_state.halted_at, v_state.halted_seq, v_state.halted_reason, v_max_seq, v_head_hash,
            acknowledge_integrity_failure.note);
    UPDATE compliance.drainer_state
       SET last_seq = v_max_seq, last_hash = v_head_hash,
           halted_at = NULL, halted_seq = NULL, halted_reason = NULL;
    -- Events written outside the drainer and accepted here enter the tree as they stand.
    PERFORM compliance._tree_catch_up();
    PERFORM compliance._tenant_trees_catch_up();
    RETURN true;
END;
$$;
COMMENT ON FUNCTION compliance.acknowledge_integrity_failure(bigint, text) IS
'Operator action after a drainer halt: records an integrity incident and lets the drainer extend from the named last seq; '
'false if already acknowledged.';
