-- Before extending the chain the drainer checks its head. A head that was altered, removed or
-- overtaken by rows written outside the drainer makes drain raise AC010 naming the seq;
-- once record_halt has recorded that, drain refuses with AC011 until an operator calls
-- acknowledge_integrity_failure, which resumes from the chain as it stands.
BEGIN;
SELECT plan(27);

SELECT compliance.emit('auth.login', 'user-' || g) FROM generate_series(1, 5) AS g;
SELECT compliance.drain();
SELECT compliance.emit('auth.login', 'waiting');

-- The SQLSTATE and message of drain() after the given statements, which are then rolled back.
CREATE FUNCTION pg_temp.drain_error_after(p_statements text)
RETURNS TABLE (error_state text, message text)
LANGUAGE plpgsql
AS $$
BEGIN
    BEGIN
        ALTER TABLE compliance.audit_events DISABLE TRIGGER forbid_row_change;
        EXECUTE p_statements;
        ALTER TABLE compliance.audit_events ENABLE ALWAYS TRIGGER forbid_row_change;
        BEGIN
            PERFORM compliance.drain();
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS error_state = RETURNED_SQLSTATE, message = MESSAGE_TEXT;
        END;
        RAISE EXCEPTION 'undo' USING ERRCODE = 'TT001';
    EXCEPTION WHEN SQLSTATE 'TT001' THEN
        RETURN NEXT;
    END;
END;
$$;

SELECT ok(NOT compliance.record_halt(), 'record_halt on an intact chain records nothing and says so');
SELECT is((SELECT halted_at FROM compliance.drainer_state), NULL, 'the drainer is not halted');

SELECT row_eq($$SELECT * FROM pg_temp.drain_error_after('UPDATE compliance.audit_events SET actor = ''mallory'' WHERE seq = 5')$$,
              ROW('AC010'::text, 'chain head check failed at seq 5: the head event''s content no longer matches its hash'::text),
              'an altered head is refused with AC010 naming seq 5');
SELECT row_eq($$SELECT * FROM pg_temp.drain_error_after('UPDATE compliance.audit_events SET event_hash = sha256(''x'') WHERE seq = 5')$$,
              ROW('AC010'::text, 'chain head check failed at seq 5: the head event''s stored hash differs from the one the drainer wrote'::text),
              'a replaced head hash is refused');
SELECT row_eq($$SELECT * FROM pg_temp.drain_error_after('DELETE FROM compliance.audit_events WHERE seq = 5')$$,
              ROW('AC010'::text, 'chain head check failed at seq 5: the head event was removed'::text),
              'a removed head is refused');
SELECT row_eq($$SELECT * FROM pg_temp.drain_error_after('DELETE FROM compliance.audit_events WHERE seq >= 3')$$,
              ROW('AC010'::text, 'chain head check failed at seq 5: the head event was removed'::text),
              'a cut-off tail is refused');
SELECT row_eq($$SELECT * FROM pg_temp.drain_error_after(
                  'INSERT INTO compliance.audit_events SELECT 6, e.id, now(), now(), NULL, ''auth.login'', ''forger'',
                       ''{}'', 1, p.event_hash,
                       compliance.event_hash(p.event_hash, compliance.event_record(6, e.id, now(), now(), NULL,
                           ''auth.login'', ''forger'', compliance.payload_digest(''{}'')))
                     FROM compliance.audit_events AS p, (SELECT compliance._uuidv7() AS id) AS e WHERE p.seq = 5')$$,
              ROW('AC010'::text, 'chain head check failed at seq 6: events up to seq 6 exist beyond the head the drainer wrote'::text),
              'a correctly hashed row appended outside the drainer is refused at its seq');
SELECT row_eq($$SELECT * FROM pg_temp.drain_error_after('UPDATE compliance.audit_events SET actor = ''mallory'' WHERE seq = 2')$$,
              ROW(NULL::text, NULL::text),
              'a change below the head is not the head check''s business (verify_chain finds it)');
SELECT is((SELECT count(*) FROM compliance.audit_events), 5::bigint, 'no refused drain wrote an event');

-- Now for real: alter the head and leave it so.
ALTER TABLE compliance.audit_events DISABLE TRIGGER forbid_row_change;
UPDATE compliance.audit_events SET actor = 'mallory' WHERE seq = 5;
ALTER TABLE compliance.audit_events ENABLE ALWAYS TRIGGER forbid_row_change;

SELECT throws_ok('SELECT compliance.drain()', 'AC010',
                 'chain head check failed at seq 5: the head event''s content no longer matches its hash',
                 'drain refuses the altered head');
SELECT ok(compliance.record_halt(), 'record_halt sees the failure and records it');
SELECT row_eq('SELECT halted_seq, halted_reason FROM compliance.drainer_state',
              ROW(5::bigint, 'chain head check failed at seq 5: the head event''s content no longer matches its hash'::text),
              'drainer_state names the seq and the reason');
SELECT ok((SELECT halted_at IS NOT NULL FROM compliance.drainer_state), 'and when it halted');
SELECT ok(compliance.record_halt(), 'record_halt again keeps the first halt');
SELECT throws_ok('SELECT compliance.drain()', 'AC011', NULL, 'a halted drainer refuses with AC011');
SELECT is((SELECT count(*) FROM compliance.audit_outbox), 1::bigint, 'the waiting event stays in the outbox');

SELECT throws_ok($$SELECT compliance.acknowledge_integrity_failure(4, 'wrong head')$$, 'AC012', NULL,
                 'acknowledging from a seq that is not the last one is refused');
SELECT throws_ok($$SELECT compliance.acknowledge_integrity_failure(5, '   ')$$, 'AC013', NULL,
                 'acknowledging without a note is refused');
SELECT throws_ok($$SELECT compliance.acknowledge_integrity_failure(5, NULL)$$, 'AC013', NULL,
                 'acknowledging with a NULL note is refused');
SELECT is(compliance.acknowledge_integrity_failure(5, 'INC-1: test staged the change'), true,
          'acknowledging from the last seq with a note returns true');
SELECT row_eq($$SELECT halted_seq, resumed_from_seq, resumed_from_hash, note FROM compliance.integrity_incidents$$,
              ROW(5::bigint, 5::bigint, (SELECT event_hash FROM compliance.audit_events WHERE seq = 5),
                  'INC-1: test staged the change'::text),
              'the incident records the halt and the head the drainer resumes from');
SELECT is((SELECT halted_at FROM compliance.drainer_state), NULL, 'the halt is cleared');
SELECT is(compliance.drain(), 1, 'the drainer resumes and chains the waiting event');
SELECT row_eq('SELECT seq, prev_hash FROM compliance.audit_events WHERE seq = 6',
              ROW(6::bigint, (SELECT event_hash FROM compliance.audit_events WHERE seq = 5)),
              'it links to the stored hash of the acknowledged head');
SELECT row_eq('SELECT ok, first_bad_seq FROM compliance.verify_chain()', ROW(false, 5::bigint),
              'verify_chain still reports the damage where it happened');
SELECT throws_ok($$SELECT compliance.acknowledge_integrity_failure(6, 'nothing to acknowledge')$$, 'AC012',
                 'the drainer is not halted', 'acknowledging when not halted is refused');
SELECT compliance.emit('auth.login', 'later');
SELECT is(compliance.drain(), 1, 'later batches pass the head check again');

SELECT * FROM finish();
ROLLBACK;
