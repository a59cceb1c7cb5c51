-- Erasure (docs/erasure.md): the one sanctioned change to an audit_events row. erase()
-- removes a v2 event's payload and/or actor with its salt, keeps the salted commitment the
-- record hashes, and records a compliance.erasure event in the chain, in one transaction;
-- the row guard below (attached in sql/60_protect.sql) refuses every other change, in
-- replica mode too.
SET LOCAL search_path = pg_catalog, pg_temp;

-- compliance._audit_events_guard(): the row guard of audit_events (trigger forbid_row_change,
-- BEFORE UPDATE OR DELETE, ENABLE ALWAYS, attached in sql/60_protect.sql). DELETE always
-- raises AC020, as _forbid_change does. An UPDATE passes only when (1) the
-- transaction-local setting auditchain.erasure_seq, which only erase() sets, names a
-- chained compliance.erasure event after the row, (2) the row is v2, (3) every column
-- other than a field's value, salt, commitment and erased_by is unchanged, and (4) each
-- field either stays exactly as it was or goes from present to erased: value and salt NULL,
-- erased_by the erasure event's seq, and the commitment exactly SHA-256(old salt || old
-- value), so that not even a session that sets the flag by hand can alter a value, a hash
-- or a commitment. Anything else raises AC020. Touches: audit_events (trigger; reads the
-- erasure event).
CREATE OR REPLACE FUNCTION compliance._audit_events_guard()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_erasure_seq bigint;
    v_erasure_columns constant text[] := ARRAY[
        'payload', 'payload_salt', 'payload_commitment', 'payload_erased_by',
        'actor', 'actor_salt', 'actor_commitment', 'actor_erased_by'
    ];
    v_payload_kept boolean;
    v_actor_kept boolean;
    v_refusal text;
BEGIN
    v_erasure_seq := NULLIF(pg_catalog.current_setting('auditchain.erasure_seq', true), '')::bigint;
    IF TG_OP <> 'UPDATE' OR v_erasure_seq IS NULL THEN
        RAISE EXCEPTION '%.% is append-only: % is not allowed', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
            USING ERRCODE = 'AC020',
                  HINT = 'Audit records are immutable; personal data is removed only by compliance.erase (docs/erasure.md).';
    END IF;
    v_payload_kept := (NEW.payload, NEW.payload_salt, NEW.payload_commitment, NEW.payload_erased_by)
        IS NOT DISTINCT FROM (OLD.payload, OLD.payload_salt, OLD.payload_commitment, OLD.payload_erased_by);
    v_actor_kept := (NEW.actor, NEW.actor_salt, NEW.actor_commitment, NEW.actor_erased_by)
        IS NOT DISTINCT FROM (OLD.actor, OLD.actor_salt, OLD.actor_commitment, OLD.actor_erased_by);
    v_refusal := CASE
        WHEN OLD.hash_version <> 2 THEN 'only a v2 event can be erased'
        WHEN NOT EXISTS (
            SELECT 1 FROM compliance.audit_events AS x
             WHERE x.seq = v_erasure_seq AND x.seq > OLD.seq AND x.event_type = 'compliance.erasure'
        ) THEN 'the erasure event is not in the chain after the event'
        WHEN (pg_catalog.to_jsonb(NEW) - v_erasure_columns) IS DISTINCT FROM (pg_catalog.to_jsonb(OLD) - v_erasure_columns)
            THEN 'an erasure changes only the erased fields'
        WHEN v_payload_kept AND v_actor_kept THEN 'an erasure must erase a field'
        WHEN NOT v_payload_kept AND NOT (
            OLD.payload_erased_by IS NULL AND NEW.payload IS NULL AND NEW.payload_salt IS NULL
            AND NEW.payload_erased_by = v_erasure_seq
            AND NEW.payload_commitment = compliance.commitment(OLD.payload_salt, OLD.payload::text)
        ) THEN 'the payload may only go from present to erased under its own commitment'
        WHEN NOT v_actor_kept AND NOT (
            OLD.actor_erased_by IS NULL AND NEW.actor IS NULL AND NEW.actor_salt IS NULL
            AND NEW.actor_erased_by = v_erasure_seq
            AND NEW.actor_commitment = compliance.commitment(OLD.actor_salt, OLD.actor)
        ) THEN 'the actor may only go from present to erased under its own commitment'
    END;
    IF v_refusal IS NOT NULL THEN
        RAISE EXCEPTION '%.% is append-only: UPDATE is not allowed: % (seq %)', TG_TABLE_SCHEMA, TG_TABLE_NAME,
            v_refusal, OLD.seq
            USING ERRCODE = 'AC020',
                  HINT = 'Audit records are immutable; personal data is removed only by compliance.erase (docs/erasure.md).';
    END IF;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION compliance._audit_events_guard() IS
'Internal: trigger: refuses (AC020) every DELETE and UPDATE of audit_events except the exact erasure shape compliance.erase writes.';

-- compliance._first_unrecorded_erasure(from_seq, to_seq): the first seq in the range with an
-- erased field that the compliance.erasure event it names does not list (seq in "seqs",
-- field in "fields"); NULL when every erasure is recorded. Set-based: each erasure event's
-- lists are expanded once. Touches: audit_events (read).
CREATE OR REPLACE FUNCTION compliance._first_unrecorded_erasure(from_seq bigint, to_seq bigint)
RETURNS bigint
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH erased AS (
        SELECT e.seq, f.field, f.erased_by
          FROM compliance.audit_events AS e
         CROSS JOIN LATERAL (VALUES ('payload', e.payload_erased_by), ('actor', e.actor_erased_by))
                   AS f (field, erased_by)
         WHERE e.seq BETWEEN _first_unrecorded_erasure.from_seq AND _first_unrecorded_erasure.to_seq
           AND (e.payload_erased_by IS NOT NULL OR e.actor_erased_by IS NOT NULL)
           AND f.erased_by IS NOT NULL
    ),
    -- Each erasure event's lists, read (and de-TOASTed) once.
    erasures AS MATERIALIZED (
        SELECT x.seq, x.payload -> 'seqs' AS seqs, x.payload -> 'fields' AS fields
          FROM compliance.audit_events AS x
         WHERE x.seq IN (SELECT d.erased_by FROM erased AS d)
           AND x.event_type = 'compliance.erasure'
    ),
    listed AS (
        SELECT s.value::bigint AS seq, f.value AS field, x.seq AS erased_by
          FROM erasures AS x
         CROSS JOIN LATERAL pg_catalog.jsonb_array_elements_text(x.fields) AS f (value)
         CROSS JOIN LATERAL pg_catalog.jsonb_array_elements_text(x.seqs) AS s (value)
         WHERE pg_catalog.jsonb_typeof(x.seqs) = 'array' AND pg_catalog.jsonb_typeof(x.fields) = 'array'
    )
    -- EXCEPT is a set difference by hashing or sorting, linear in the erased events.
    SELECT min(u.seq)
      FROM (
          SELECT d.seq, d.field, d.erased_by FROM erased AS d
          EXCEPT
          SELECT l.seq, l.field, l.erased_by FROM listed AS l
      ) AS u;
$$;
COMMENT ON FUNCTION compliance._first_unrecorded_erasure(bigint, bigint) IS
'Internal: first seq in [from, to] whose erased field is not listed by the compliance.erasure event it names; NULL if none.';

-- compliance.erase(seqs, fields, reason, legal_basis): remove the named fields ('payload',
-- 'actor') of the named v2 events, keeping their commitments, and record a
-- compliance.erasure event (actor: the session user; payload: seqs, fields, reason,
-- legal_basis, already_erased; never an erased value) in the chain, all in the caller's
-- transaction. The erasure event is chained synchronously (the drainer's lock is awaited,
-- then the outbox drained up to it) so that its seq can be returned and stored in the rows.
-- Returns that seq; NULL, with a NOTICE, when every named field is already erased.
-- SQLSTATEs (nothing is changed): AC081 seqs NULL, empty, holding NULL or more than 10,000;
-- AC082 fields NULL, empty or not among payload/actor; AC083 reason (1-2,000 characters) or
-- legal_basis (1-500) missing, blank or too long; AC084 a seq not chained; AC085 a v1 event
-- (its unsalted digest would still confirm a guess); AC086 an erasure event or a tenant heads
-- commitment; AC011 when the drainer is halted; 42501 for a caller without compliance_eraser.
-- Touches: audit_events (UPDATE through the guard; INSERT via drain), audit_outbox (via emit
-- and drain), drainer_state, merkle_nodes (via drain).
CREATE OR REPLACE FUNCTION compliance.erase(seqs bigint[], fields text[], reason text, legal_basis text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_seqs bigint[];
    v_fields text[];
    v_bad bigint[];
    v_todo bigint[];
    v_already bigint[];
    v_previous bigint[];
    v_tenants text[];
    v_event_id uuid;
    v_erasure_seq bigint;
BEGIN
    IF erase.seqs IS NULL OR pg_catalog.cardinality(erase.seqs) = 0 OR pg_catalog.array_position(erase.seqs, NULL) IS NOT NULL
       OR pg_catalog.cardinality(erase.seqs) > 10000 THEN
        RAISE EXCEPTION 'seqs must be a list of 1-10000 seqs without NULL' USING ERRCODE = 'AC081';
    END IF;
    IF erase.fields IS NULL OR pg_catalog.cardinality(erase.fields) = 0
       OR NOT erase.fields <@ ARRAY['payload', 'actor'] THEN
        RAISE EXCEPTION 'fields must name payload, actor or both, not %', coalesce(erase.fields::text, 'NULL')
            USING ERRCODE = 'AC082';
    END IF;
    IF coalesce(erase.reason, '') !~ '[^[:space:]]' OR pg_catalog.length(erase.reason) > 2000 THEN
        RAISE EXCEPTION 'a reason of 1-2000 characters is required' USING ERRCODE = 'AC083';
    END IF;
    IF coalesce(erase.legal_basis, '') !~ '[^[:space:]]' OR pg_catalog.length(erase.legal_basis) > 500 THEN
        RAISE EXCEPTION 'a legal basis of 1-500 characters is required (e.g. "GDPR Art. 17(1)(a)")'
            USING ERRCODE = 'AC083';
    END IF;
    SELECT pg_catalog.array_agg(DISTINCT s.seq ORDER BY s.seq) INTO v_seqs FROM unnest(erase.seqs) AS s (seq);
    SELECT pg_catalog.array_agg(DISTINCT f.field ORDER BY f.field) INTO v_fields FROM unnest(erase.fields) AS f (field);

    -- The drainer's lock first (waiting for a running batch): the erasure event is chained
    -- below, and no batch may chain between the checks and the update.
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('auditchain.drainer')::bigint);
    PERFORM 1 FROM compliance.audit_events AS e WHERE e.seq = ANY (v_seqs) ORDER BY e.seq FOR UPDATE;

    SELECT pg_catalog.array_agg(s.seq ORDER BY s.seq) INTO v_bad
      FROM unnest(v_seqs) AS s (seq)
     WHERE NOT EXISTS (SELECT 1 FROM compliance.audit_events AS e WHERE e.seq = s.seq);
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'no chained event has seq %', pg_catalog.array_to_string(v_bad[1:10], ', ')
            USING ERRCODE = 'AC084', DETAIL = pg_catalog.format('%s unknown seqs', pg_catalog.cardinality(v_bad));
    END IF;
    SELECT pg_catalog.array_agg(e.seq ORDER BY e.seq) INTO v_bad
      FROM compliance.audit_events AS e WHERE e.seq = ANY (v_seqs) AND e.hash_version = 1;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'seq % uses hash format v1, whose unsalted digest would still confirm a guessed value',
            pg_catalog.array_to_string(v_bad[1:10], ', ')
            USING ERRCODE = 'AC085', HINT = 'See docs/erasure.md "Events chained before hash format v2".';
    END IF;
    SELECT pg_catalog.array_agg(e.seq ORDER BY e.seq) INTO v_bad
      FROM compliance.audit_events AS e
     WHERE e.seq = ANY (v_seqs) AND e.event_type IN ('compliance.erasure', 'compliance.tenant_heads');
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'seq % is an erasure event or a tenant heads commitment, which proofs read',
            pg_catalog.array_to_string(v_bad[1:10], ', ')
            USING ERRCODE = 'AC086';
    END IF;

    SELECT pg_catalog.array_agg(e.seq ORDER BY e.seq) FILTER (
               WHERE ('payload' = ANY (v_fields) AND e.payload_erased_by IS NULL)
                  OR ('actor' = ANY (v_fields) AND e.actor_erased_by IS NULL)),
           pg_catalog.array_agg(e.seq ORDER BY e.seq) FILTER (
               WHERE NOT (('payload' = ANY (v_fields) AND e.payload_erased_by IS NULL)
                          OR ('actor' = ANY (v_fields) AND e.actor_erased_by IS NULL))),
           pg_catalog.array_agg(DISTINCT x.erased_by) FILTER (WHERE x.erased_by IS NOT NULL),
           pg_catalog.array_agg(DISTINCT coalesce(e.tenant_id, ''))
      INTO v_todo, v_already, v_previous, v_tenants
      FROM compliance.audit_events AS e
     CROSS JOIN LATERAL (VALUES (e.payload_erased_by), (e.actor_erased_by)) AS x (erased_by)
     WHERE e.seq = ANY (v_seqs);
    IF v_todo IS NULL THEN
        RAISE NOTICE 'nothing to erase: % of seq % already erased (by the erasure event at seq %)',
            pg_catalog.array_to_string(v_fields, ' and '), pg_catalog.array_to_string(v_seqs[1:10], ', '),
            pg_catalog.array_to_string(v_previous, ', ');
        RETURN NULL;
    END IF;

    v_event_id := compliance.emit(
        'compliance.erasure',
        SESSION_USER::text,
        pg_catalog.jsonb_build_object(
            'seqs', pg_catalog.to_jsonb(ARRAY(SELECT DISTINCT u.seq FROM unnest(v_todo) AS u (seq) ORDER BY u.seq)),
            'fields', pg_catalog.to_jsonb(v_fields),
            'reason', erase.reason,
            'legal_basis', erase.legal_basis,
            'already_erased', pg_catalog.to_jsonb(coalesce(
                ARRAY(SELECT DISTINCT u.seq FROM unnest(v_already) AS u (seq) ORDER BY u.seq), '{}'::bigint[]))
        ),
        -- A tenant's erasure belongs to that tenant's log (and its exports).
        CASE WHEN pg_catalog.cardinality(v_tenants) = 1 AND v_tenants[1] <> '' THEN v_tenants[1] END
    );
    LOOP
        SELECT e.seq INTO v_erasure_seq FROM compliance.audit_events AS e WHERE e.event_id = v_event_id;
        EXIT WHEN FOUND;
        PERFORM compliance.drain(10000);
    END LOOP;

    PERFORM pg_catalog.set_config('auditchain.erasure_seq', v_erasure_seq::text, true);
    UPDATE compliance.audit_events AS e
       SET payload = CASE WHEN p.erase_payload THEN NULL ELSE e.payload END,
           payload_salt = CASE WHEN p.erase_payload THEN NULL ELSE e.payload_salt END,
           payload_commitment = CASE
               WHEN p.erase_payload THEN compliance.commitment(e.payload_salt, e.payload::text)
               ELSE e.payload_commitment
           END,
           payload_erased_by = CASE WHEN p.erase_payload THEN v_erasure_seq ELSE e.payload_erased_by END,
           actor = CASE WHEN p.erase_actor THEN NULL ELSE e.actor END,
           actor_salt = CASE WHEN p.erase_actor THEN NULL ELSE e.actor_salt END,
           actor_commitment = CASE
               WHEN p.erase_actor THEN compliance.commitment(e.actor_salt, e.actor)
               ELSE e.actor_commitment
           END,
           actor_erased_by = CASE WHEN p.erase_actor THEN v_erasure_seq ELSE e.actor_erased_by END
      FROM compliance.audit_events AS o
     CROSS JOIN LATERAL (
           SELECT 'payload' = ANY (v_fields) AND o.payload_erased_by IS NULL AS erase_payload,
                  'actor' = ANY (v_fields) AND o.actor_erased_by IS NULL AS erase_actor
       ) AS p
     WHERE e.seq = o.seq AND o.seq = ANY (v_todo);
    -- The flag is for this statement only: nothing later in the transaction can use it.
    PERFORM pg_catalog.set_config('auditchain.erasure_seq', '', true);
    RETURN v_erasure_seq;
END;
$$;
COMMENT ON FUNCTION compliance.erase(bigint[], text[], text, text) IS
'Removes the payload and/or actor (and salt) of v2 events, keeping their commitments, and records a compliance.erasure '
'event in the chain; returns its seq (NULL if already erased). AC081-AC086 for bad input.';

-- compliance.find_subject_events(tenant_id, payload_contains): the seqs of a tenant's
-- chained events whose payload contains the given JSON object (jsonb @>), to assemble a data
-- subject's erasure request. AC087 unless tenant_id is 1-128 characters and payload_contains
-- a non-empty JSON object. Touches: audit_events (read).
CREATE OR REPLACE FUNCTION compliance.find_subject_events(tenant_id text, payload_contains jsonb)
RETURNS SETOF bigint
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF find_subject_events.tenant_id IS NULL OR pg_catalog.length(find_subject_events.tenant_id) NOT BETWEEN 1 AND 128 THEN
        RAISE EXCEPTION 'tenant_id must be 1-128 characters' USING ERRCODE = 'AC087';
    END IF;
    IF find_subject_events.payload_contains IS NULL
       OR pg_catalog.jsonb_typeof(find_subject_events.payload_contains) <> 'object'
       OR find_subject_events.payload_contains = '{}'::jsonb THEN
        RAISE EXCEPTION 'payload_contains must be a non-empty JSON object, such as {"email": "a@example.com"}'
            USING ERRCODE = 'AC087';
    END IF;
    RETURN QUERY
        SELECT e.seq
          FROM compliance.audit_events AS e
         WHERE e.tenant_id = find_subject_events.tenant_id
           AND e.payload @> find_subject_events.payload_contains
         ORDER BY e.seq;
END;
$$;
COMMENT ON FUNCTION compliance.find_subject_events(text, jsonb) IS
'Seqs of a tenant''s chained events whose payload contains the given JSON object (@>), for an erasure request; AC087 if invalid.';
