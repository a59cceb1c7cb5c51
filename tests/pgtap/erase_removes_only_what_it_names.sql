-- compliance.erase removes the named fields of the named v2 events, keeps their commitments
-- so that the chain and the tree still verify, records one compliance.erasure event in the
-- chain, refuses bad input with AC081-AC086 changing nothing, and is the only way an
-- audit_events row may change: the row guard refuses everything else, a hand-set flag and
-- replica mode included.
BEGIN;
SELECT plan(45);

-- An event chained before hash format v2, as the drainer wrote them then.
CREATE FUNCTION pg_temp.append_v1(p_actor text, p_payload jsonb, p_tenant text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_state compliance.drainer_state%ROWTYPE;
    v_id uuid := compliance._uuidv7();
    v_hash bytea;
BEGIN
    SELECT * INTO v_state FROM compliance.drainer_state;
    v_hash := compliance.event_hash(v_state.last_hash, compliance.event_record(
        v_state.last_seq + 1, v_id, now(), now(), p_tenant, 'user.login', p_actor, compliance.payload_digest(p_payload)));
    INSERT INTO compliance.audit_events (seq, event_id, occurred_at, recorded_at, tenant_id, event_type, actor, payload,
                                         hash_version, prev_hash, event_hash)
    VALUES (v_state.last_seq + 1, v_id, now(), now(), p_tenant, 'user.login', p_actor, p_payload, 1,
            v_state.last_hash, v_hash);
    UPDATE compliance.drainer_state SET last_seq = v_state.last_seq + 1, last_hash = v_hash;
    PERFORM compliance._tree_catch_up();
    PERFORM compliance._tenant_trees_catch_up();
END;
$$;

-- seq 1 (v1) t1 alice; 2 t1 alice; 3 t1 bob; 4 t2 alice's address under another tenant; 5 t1 alice.
SELECT pg_temp.append_v1('alice@example.com', '{"email": "alice@example.com"}', 't1');
SELECT compliance.emit('user.login', v.actor, v.payload::jsonb, v.tenant)
  FROM (VALUES (2, 'alice@example.com', '{"email": "alice@example.com", "ip": "203.0.113.7"}', 't1'),
               (3, 'bob', '{"email": "bob@example.com"}', 't1'),
               (4, 'carol', '{"email": "alice@example.com"}', 't2'),
               (5, 'alice@example.com', '{"email": "alice@example.com", "n": 2}', 't1')) AS v (n, actor, payload, tenant)
 ORDER BY v.n;
SELECT compliance.drain();
CREATE TEMP TABLE before_erasure AS SELECT * FROM compliance.audit_events;

SELECT results_eq($$SELECT * FROM compliance.find_subject_events('t1', '{"email": "alice@example.com"}')$$,
                  $$VALUES (1::bigint), (2), (5)$$,
                  'find_subject_events: the tenant''s events whose payload contains the fragment, in seq order');
SELECT throws_ok($$SELECT * FROM compliance.find_subject_events(NULL, '{"email": "a"}')$$, 'AC087', NULL,
                 'find_subject_events refuses a missing tenant');
SELECT throws_ok($$SELECT * FROM compliance.find_subject_events('t1', '{}')$$, 'AC087', NULL,
                 'find_subject_events refuses an empty fragment (it would select every event)');
SELECT throws_ok($$SELECT * FROM compliance.find_subject_events('t1', '["a"]')$$, 'AC087', NULL,
                 'find_subject_events refuses a fragment that is not an object');

-- Bad input: a specific SQLSTATE each, and nothing written.
SELECT throws_ok($$SELECT compliance.erase(NULL, '{payload}', 'r', 'GDPR Art. 17')$$, 'AC081', NULL, 'NULL seqs');
SELECT throws_ok($$SELECT compliance.erase('{}', '{payload}', 'r', 'GDPR Art. 17')$$, 'AC081', NULL, 'an empty list');
SELECT throws_ok($$SELECT compliance.erase('{2,NULL}', '{payload}', 'r', 'GDPR Art. 17')$$, 'AC081', NULL, 'a NULL seq');
SELECT throws_ok($$SELECT compliance.erase(ARRAY(SELECT generate_series(1, 10001)::bigint), '{payload}', 'r', 'GDPR')$$,
                 'AC081', NULL, 'more than 10,000 seqs');
SELECT throws_ok($$SELECT compliance.erase('{2}', '{}', 'r', 'GDPR Art. 17')$$, 'AC082', NULL, 'no field');
SELECT throws_ok($$SELECT compliance.erase('{2}', '{email}', 'r', 'GDPR Art. 17')$$, 'AC082', NULL, 'an unknown field');
SELECT throws_ok($$SELECT compliance.erase('{2}', NULL, 'r', 'GDPR Art. 17')$$, 'AC082', NULL, 'NULL fields');
SELECT throws_ok($$SELECT compliance.erase('{2}', '{payload}', NULL, 'GDPR Art. 17')$$, 'AC083', NULL, 'a missing reason');
SELECT throws_ok($$SELECT compliance.erase('{2}', '{payload}', '   ', 'GDPR Art. 17')$$, 'AC083', NULL, 'a blank reason');
SELECT throws_ok($$SELECT compliance.erase('{2}', '{payload}', repeat('r', 2001), 'GDPR Art. 17')$$, 'AC083', NULL,
                 'a reason over 2,000 characters');
SELECT throws_ok($$SELECT compliance.erase('{2}', '{payload}', 'r', NULL)$$, 'AC083', NULL, 'a missing legal basis');
SELECT throws_ok($$SELECT compliance.erase('{2}', '{payload}', 'r', repeat('b', 501))$$, 'AC083', NULL,
                 'a legal basis over 500 characters');
SELECT throws_ok($$SELECT compliance.erase('{2,99}', '{payload}', 'r', 'GDPR Art. 17')$$, 'AC084',
                 'no chained event has seq 99', 'an unknown seq, named');
SELECT throws_ok($$SELECT compliance.erase('{1,2}', '{payload}', 'r', 'GDPR Art. 17')$$, 'AC085', NULL,
                 'a v1 event: its unsalted digest would still confirm a guess');
SET LOCAL ROLE compliance_writer;
SELECT throws_ok($$SELECT compliance.erase('{2}', '{payload}', 'r', 'GDPR Art. 17')$$, '42501', NULL,
                 'a caller without compliance_eraser cannot erase');
SELECT throws_ok($$SELECT * FROM compliance.find_subject_events('t1', '{"email": "a"}')$$, '42501', NULL,
                 'nor search a subject''s events');
RESET ROLE;
SELECT is_empty($$SELECT * FROM compliance.audit_events EXCEPT SELECT * FROM before_erasure$$,
                'no refused call changed an event');
SELECT is((SELECT count(*) FROM compliance.audit_events), 5::bigint, 'no refused call wrote an erasure event');

-- The sanctioned path, as the eraser role.
SET LOCAL ROLE compliance_eraser;
SELECT is(compliance.erase('{5,2,2}', '{payload,actor}', 'subject request 42', 'GDPR Art. 17(1)(a)'), 6::bigint,
          'erase returns the seq of its erasure event, chained at once');
RESET ROLE;
SELECT is(current_setting('auditchain.erasure_seq', true), '', 'the guard''s flag does not outlive erase');
SELECT results_eq(
    $$SELECT e.seq, e.payload, e.payload_salt, e.actor, e.actor_salt, e.payload_erased_by, e.actor_erased_by,
             e.payload_commitment = sha256(b.payload_salt || convert_to(b.payload::text, 'UTF8')),
             e.actor_commitment = sha256(b.actor_salt || convert_to(b.actor, 'UTF8'))
        FROM compliance.audit_events AS e JOIN before_erasure AS b USING (seq) WHERE e.seq IN (2, 5) ORDER BY e.seq$$,
    $$VALUES (2::bigint, NULL::jsonb, NULL::bytea, NULL::text, NULL::bytea, 6::bigint, 6::bigint, true, true),
             (5, NULL, NULL, NULL, NULL, 6, 6, true, true)$$,
    'values and salts are gone; the commitments kept are SHA-256(salt || value) of what was there'
);
SELECT is_empty(
    $$SELECT seq, event_id, occurred_at, recorded_at, tenant_id, event_type, hash_version, prev_hash, event_hash
        FROM compliance.audit_events WHERE seq <= 5
      EXCEPT SELECT seq, event_id, occurred_at, recorded_at, tenant_id, event_type, hash_version, prev_hash, event_hash
        FROM before_erasure$$,
    'every other column of every event is unchanged'
);
SELECT is_empty($$SELECT * FROM compliance.audit_events WHERE seq IN (1, 3, 4)
                  EXCEPT SELECT * FROM before_erasure$$, 'events not named are untouched');
SELECT results_eq(
    $$SELECT event_type, tenant_id, payload FROM compliance.audit_events WHERE seq = 6$$,
    $$VALUES ('compliance.erasure'::text, 't1'::text,
              '{"seqs": [2, 5], "fields": ["actor", "payload"], "reason": "subject request 42",
                "legal_basis": "GDPR Art. 17(1)(a)", "already_erased": []}'::jsonb)$$,
    'the erasure event: which seqs and fields, reason, legal basis, in the tenant''s log'
);
SELECT is((SELECT actor FROM compliance.audit_events WHERE seq = 6), session_user::text,
          'the erasure event''s actor is the session user who called erase');
SELECT ok((SELECT payload::text || actor NOT LIKE '%alice%' FROM compliance.audit_events WHERE seq = 6),
              'the erasure event holds no erased value');
SELECT is_empty($$SELECT 1 FROM compliance.audit_outbox$$, 'nothing waits in the outbox');
SELECT results_eq($$SELECT ok, events_checked, first_bad_seq, problem, erased_events FROM compliance.verify_chain()$$,
                  $$VALUES (true, 6::bigint, NULL::bigint, NULL::text, 2::bigint)$$,
                  'the chain verifies by the commitments, a v1 event included, and counts the erased events');
SELECT is((SELECT ok FROM compliance.verify_tree()), true, 'the Merkle tree verifies');
SELECT results_eq($$SELECT value, verdict FROM compliance.metrics() WHERE metric = 'erased_events'$$,
                  $$VALUES (2::double precision, 'ok'::text)$$, 'metrics() counts erased events, verdict ok');

SELECT is(compliance.erase('{2}', '{payload}', 'again', 'GDPR Art. 17'), NULL::bigint,
          'erasing an erased field is a no-op (a NOTICE says so) and returns NULL');
SELECT is((SELECT count(*) FROM compliance.audit_events), 6::bigint, 'the no-op records no erasure event');
SELECT is(compliance.erase('{3}', '{actor}', 'actor only', 'GDPR Art. 17'), 7::bigint, 'one field alone can be erased');
SELECT results_eq($$SELECT actor IS NULL, payload IS NOT NULL FROM compliance.audit_events WHERE seq = 3$$,
                  $$VALUES (true, true)$$, 'the actor is gone, the payload stays');
SELECT throws_ok($$SELECT compliance.erase('{6}', '{payload}', 'r', 'GDPR Art. 17')$$, 'AC086', NULL,
                 'an erasure event cannot be erased');

-- The guard: nothing but erase's exact change passes.
SELECT throws_ok($$UPDATE compliance.audit_events SET payload = NULL WHERE seq = 4$$, 'AC020',
                 'compliance.audit_events is append-only: UPDATE is not allowed', 'an UPDATE without erase is refused');
SELECT throws_ok($$SELECT set_config('auditchain.erasure_seq', '6', true);
                   UPDATE compliance.audit_events SET tenant_id = 't9' WHERE seq = 4$$, 'AC020', NULL,
                 'a hand-set flag does not let another column change');
SELECT throws_ok($$SELECT set_config('auditchain.erasure_seq', '6', true);
                   UPDATE compliance.audit_events
                      SET payload = NULL, payload_salt = NULL, payload_erased_by = 6, payload_commitment = sha256('x')
                    WHERE seq = 4$$, 'AC020', NULL,
                 'a hand-set flag does not let a commitment other than the value''s own be stored');
SELECT throws_ok($$SELECT set_config('auditchain.erasure_seq', '6', true);
                   DELETE FROM compliance.audit_events WHERE seq = 4$$, 'AC020', NULL, 'DELETE is refused, flag or not');
SELECT throws_ok($$SET LOCAL session_replication_role = replica;
                   UPDATE compliance.audit_events SET actor = 'x' WHERE seq = 4$$, 'AC020', NULL,
                 'replica mode does not silence the guard');
-- A well-formed change by hand, naming an erasure event that does not list the seq: the
-- guard lets the shape pass, verify_chain reports it as tampering.
SELECT set_config('auditchain.erasure_seq', '6', true);
UPDATE compliance.audit_events
   SET payload = NULL, payload_salt = NULL, payload_erased_by = 6,
       payload_commitment = compliance.commitment(payload_salt, payload::text)
 WHERE seq = 4;
SELECT set_config('auditchain.erasure_seq', '', true);
SELECT results_eq($$SELECT ok, first_bad_seq, problem FROM compliance.verify_chain()$$,
                  $$VALUES (false, 4::bigint,
                            'erasure not recorded: the compliance.erasure event the row names does not list this seq and field'::text)$$,
                  'an erasure not recorded by erase() is tampering');

SELECT * FROM finish();
ROLLBACK;
