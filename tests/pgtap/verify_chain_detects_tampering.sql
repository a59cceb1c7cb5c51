-- compliance.verify_chain recomputes every hash and link and names the first bad seq and
-- the kind of damage. Each tampering is staged the way a superuser could (guard triggers
-- disabled), observed, and undone before the next one.
BEGIN;
SELECT plan(23);

SELECT compliance.emit('payment.captured', 'user-' || g, jsonb_build_object('n', g),
                       CASE WHEN g % 3 = 0 THEN NULL ELSE 'tenant-' || g % 2 END)
  FROM generate_series(1, 30) AS g;
SELECT compliance.drain();

-- verify_chain() after the given statements, which are then rolled back.
CREATE FUNCTION pg_temp.verify_after(p_statements text, p_from bigint DEFAULT NULL, p_to bigint DEFAULT NULL)
RETURNS TABLE (ok boolean, first_bad_seq bigint, problem text)
LANGUAGE plpgsql
AS $$
BEGIN
    BEGIN
        ALTER TABLE compliance.audit_events DISABLE TRIGGER forbid_row_change;
        EXECUTE p_statements;
        ALTER TABLE compliance.audit_events ENABLE ALWAYS TRIGGER forbid_row_change;
        SELECT v.ok, v.first_bad_seq, v.problem INTO ok, first_bad_seq, problem
          FROM compliance.verify_chain(p_from, p_to) AS v;
        RAISE EXCEPTION 'undo' USING ERRCODE = 'TT001';
    EXCEPTION WHEN SQLSTATE 'TT001' THEN
        RETURN NEXT;
    END;
END;
$$;

-- Recompute prev_hash and event_hash from seq p_from on, as an attacker who knows the format.
CREATE FUNCTION pg_temp.rehash_from(p_from bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_prev bytea := coalesce((SELECT event_hash FROM compliance.audit_events WHERE seq = p_from - 1),
                             decode(repeat('00', 32), 'hex'));
    v_seq bigint;
BEGIN
    FOR v_seq IN SELECT seq FROM compliance.audit_events WHERE seq >= p_from ORDER BY seq LOOP
        UPDATE compliance.audit_events AS e
           SET prev_hash = v_prev,
               event_hash = compliance.event_hash(v_prev, compliance._row_record(e))
         WHERE e.seq = v_seq
        RETURNING event_hash INTO v_prev;
    END LOOP;
END;
$$;

SELECT row_eq('SELECT ok, events_checked, first_bad_seq, problem FROM compliance.verify_chain()', ROW(true, 30::bigint, NULL::bigint, NULL::text),
              'an untouched chain verifies: 30 events, no problem');
SELECT row_eq('SELECT ok, events_checked, first_bad_seq, problem FROM compliance.verify_chain(5, 10)', ROW(true, 6::bigint, NULL::bigint, NULL::text),
              'a part of the chain verifies on its own');
SELECT throws_ok('SELECT ok, events_checked, first_bad_seq, problem FROM compliance.verify_chain(0)', '22023', NULL, 'from_seq 0 is refused');
SELECT throws_ok('SELECT ok, events_checked, first_bad_seq, problem FROM compliance.verify_chain(10, 5)', '22023', NULL, 'an inverted range is refused');

SELECT row_eq($$SELECT * FROM pg_temp.verify_after('UPDATE compliance.audit_events SET payload = payload || ''{"amount": 1000000}'' WHERE seq = 12')$$,
              ROW(false, 12::bigint, 'content changed: the event no longer matches its event_hash'::text),
              'a changed payload is found at its seq');
SELECT row_eq($$SELECT * FROM pg_temp.verify_after('UPDATE compliance.audit_events SET actor = ''mallory'' WHERE seq = 12')$$,
              ROW(false, 12::bigint, 'content changed: the event no longer matches its event_hash'::text),
              'a changed actor is found');
SELECT row_eq($$SELECT * FROM pg_temp.verify_after('UPDATE compliance.audit_events SET tenant_id = NULL WHERE seq = 13')$$,
              ROW(false, 13::bigint, 'content changed: the event no longer matches its event_hash'::text),
              'a removed tenant_id is found');
SELECT row_eq($$SELECT * FROM pg_temp.verify_after('UPDATE compliance.audit_events SET occurred_at = occurred_at + interval ''1 microsecond'' WHERE seq = 12')$$,
              ROW(false, 12::bigint, 'content changed: the event no longer matches its event_hash'::text),
              'occurred_at moved by one microsecond is found');
SELECT row_eq($$SELECT * FROM pg_temp.verify_after('UPDATE compliance.audit_events SET event_id = compliance._uuidv7() WHERE seq = 12')$$,
              ROW(false, 12::bigint, 'content changed: the event no longer matches its event_hash'::text),
              'a replaced event_id is found');
SELECT row_eq($$SELECT * FROM pg_temp.verify_after('UPDATE compliance.audit_events SET event_hash = sha256(''x'') WHERE seq = 12')$$,
              ROW(false, 12::bigint, 'content changed: the event no longer matches its event_hash'::text),
              'a replaced event_hash is found (stored hashes are never trusted)');
SELECT row_eq($$SELECT * FROM pg_temp.verify_after(
                  'UPDATE compliance.audit_events AS e SET prev_hash = sha256(''x''),
                          event_hash = compliance.event_hash(sha256(''x''), compliance._row_record(e))
                    WHERE e.seq = 12')$$,
              ROW(false, 12::bigint, 'link broken: prev_hash differs from the previous event''s event_hash'::text),
              'a self-consistent event that no longer links to its predecessor is found');
SELECT row_eq($$SELECT * FROM pg_temp.verify_after('UPDATE compliance.audit_events SET actor = ''mallory'' WHERE seq = 12;
                                                   SELECT pg_temp.rehash_from(12)')$$,
              ROW(false, 30::bigint,
                  'chain rewritten: event_hash of seq 30 differs from the one the drainer recorded; an earlier event was changed and the later hashes recomputed'::text),
              'a change with every later hash recomputed is found at the drainer''s head');
SELECT row_eq($$SELECT * FROM pg_temp.verify_after('SELECT compliance.verify_new_events(20);
                                                   UPDATE compliance.audit_events SET actor = ''mallory'' WHERE seq = 12;
                                                   SELECT pg_temp.rehash_from(12)')$$,
              ROW(false, 20::bigint,
                  'chain rewritten: event_hash of seq 20 differs from the one the incremental verifier recorded; an earlier event was changed and the later hashes recomputed'::text),
              'with the incremental verifier''s memory it is found closer to the change');
SELECT row_eq($$SELECT * FROM pg_temp.verify_after('DELETE FROM compliance.audit_events WHERE seq = 12')$$,
              ROW(false, 13::bigint, 'seq gap: expected seq 12, found seq 13'::text),
              'a deleted middle row is a seq gap');
SELECT row_eq($$SELECT * FROM pg_temp.verify_after('DELETE FROM compliance.audit_events WHERE seq = 9', 10, 20)$$,
              ROW(false, 9::bigint, 'seq gap: seq 9, the link into the range, is missing'::text),
              'a range whose predecessor was deleted is refused at that seq');
SELECT row_eq($$SELECT * FROM pg_temp.verify_after(
                  'UPDATE compliance.audit_events SET seq = 1000000 + (25 - seq) WHERE seq IN (12, 13);
                   UPDATE compliance.audit_events SET seq = seq - 1000000 WHERE seq > 1000000')$$,
              ROW(false, 12::bigint, 'content changed: the event no longer matches its event_hash'::text),
              'swapped rows are found at the first of them');
SELECT row_eq($$SELECT * FROM pg_temp.verify_after(
                  'UPDATE compliance.audit_events SET seq = 1000000 + seq + 1 WHERE seq >= 12;
                   UPDATE compliance.audit_events SET seq = seq - 1000000 WHERE seq > 1000000;
                   INSERT INTO compliance.audit_events SELECT 12, compliance._uuidv7(), now(), now(), NULL,
                       ''auth.login'', ''forger'', ''{}'', 1, p.event_hash,
                       compliance.event_hash(p.event_hash, compliance.event_record(12, compliance._uuidv7(), now(),
                           now(), NULL, ''auth.login'', ''forger'', compliance.payload_digest(''{}'')))
                     FROM compliance.audit_events AS p WHERE p.seq = 11')$$,
              ROW(false, 12::bigint, 'content changed: the event no longer matches its event_hash'::text),
              'a forged row inserted in the middle is found');
SELECT row_eq($$SELECT * FROM pg_temp.verify_after(
                  'UPDATE compliance.audit_events SET seq = 1000000 + seq + 1 WHERE seq >= 12;
                   UPDATE compliance.audit_events SET seq = seq - 1000000 WHERE seq > 1000000;
                   INSERT INTO compliance.audit_events SELECT 12, e.id, now(), now(), NULL, ''auth.login'', ''forger'',
                       ''{}'', 1, p.event_hash,
                       compliance.event_hash(p.event_hash, compliance.event_record(12, e.id, now(), now(), NULL,
                           ''auth.login'', ''forger'', compliance.payload_digest(''{}'')))
                     FROM compliance.audit_events AS p, (SELECT compliance._uuidv7() AS id) AS e WHERE p.seq = 11')$$,
              ROW(false, 13::bigint, 'content changed: the event no longer matches its event_hash'::text),
              'a correctly hashed forged row in the middle is found where the shifted events begin');
SELECT row_eq($$SELECT * FROM pg_temp.verify_after(
                  'INSERT INTO compliance.audit_events SELECT 31, e.id, now(), now(), NULL, ''auth.login'', ''forger'',
                       ''{}'', 1, p.event_hash,
                       compliance.event_hash(p.event_hash, compliance.event_record(31, e.id, now(), now(), NULL,
                           ''auth.login'', ''forger'', compliance.payload_digest(''{}'')))
                     FROM compliance.audit_events AS p, (SELECT compliance._uuidv7() AS id) AS e WHERE p.seq = 30')$$,
              ROW(false, 31::bigint,
                  'unexpected events: the chain goes on to seq 31 but the drainer wrote only up to seq 30'::text),
              'a correctly hashed row appended outside the drainer is found');
SELECT row_eq($$SELECT * FROM pg_temp.verify_after('DELETE FROM compliance.audit_events WHERE seq > 27')$$,
              ROW(false, 28::bigint, 'tail missing: events up to seq 30 were chained but the chain ends at seq 27'::text),
              'a cut-off tail (drainer_state ahead of the chain) is found');
SELECT row_eq($$SELECT * FROM pg_temp.verify_after('DELETE FROM compliance.audit_events WHERE seq > 27', 20, 29)$$,
              ROW(false, 28::bigint, 'tail missing: events up to seq 30 were chained but the chain ends at seq 27'::text),
              'a cut-off tail is found by a range that reaches into it');
SELECT row_eq($$SELECT * FROM pg_temp.verify_after('DELETE FROM compliance.audit_events')$$,
              ROW(false, 1::bigint, 'tail missing: events up to seq 30 were chained but the chain ends at seq 0'::text),
              'an emptied table is found');

SELECT row_eq('SELECT ok, events_checked, first_bad_seq, problem FROM compliance.verify_chain()', ROW(true, 30::bigint, NULL::bigint, NULL::text),
              'after all the staged damage was undone the chain verifies again');

SELECT * FROM finish();
ROLLBACK;
