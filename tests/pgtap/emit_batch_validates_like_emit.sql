-- compliance.emit_batch holds every element to emit's rules with emit's SQLSTATEs, refuses a
-- malformed array or element with AC007, names the lowest bad index, and writes nothing at
-- all when it refuses.
BEGIN;
SELECT plan(29);

CREATE TEMP TABLE outbox_before ON COMMIT DROP AS SELECT count(*) AS n FROM compliance.audit_outbox;
CREATE TEMP TABLE big ON COMMIT DROP AS SELECT repeat('x', 300000) AS blob;

-- Each bad event once as emit's arguments and once as the second element of a batch whose
-- first element is valid: both calls must fail with the same SQLSTATE.
CREATE TEMP TABLE bad_events (rule text, event jsonb) ON COMMIT DROP;
INSERT INTO bad_events VALUES
    ('event_type NULL', '{"actor": "alice"}'),
    ('event_type without a dot', '{"event_type": "login", "actor": "alice"}'),
    ('upper-case event_type', '{"event_type": "Auth.Login", "actor": "alice"}'),
    ('blank actor', '{"event_type": "auth.login", "actor": " \t "}'),
    ('actor of 257 characters', jsonb_build_object('event_type', 'auth.login', 'actor', repeat('x', 257))),
    ('array payload', '{"event_type": "auth.login", "actor": "alice", "payload": [1, 2]}'),
    ('JSON null payload', '{"event_type": "auth.login", "actor": "alice", "payload": null}'),
    ('payload above 256 KiB',
     jsonb_build_object('event_type', 'auth.login', 'actor', 'alice',
                        'payload', jsonb_build_object('blob', (SELECT blob FROM big)))),
    ('occurred_at in the future', jsonb_build_object('event_type', 'auth.login', 'actor', 'alice',
                                                     'occurred_at', now() + interval '1 hour')),
    ('occurred_at before 1970', '{"event_type": "auth.login", "actor": "alice", "occurred_at": "1969-12-31T23:59:59Z"}'),
    ('empty tenant_id', '{"event_type": "auth.login", "actor": "alice", "tenant_id": ""}'),
    ('tenant_id with a control character', '{"event_type": "auth.login", "actor": "alice", "tenant_id": "a\nb"}'),
    ('the reserved tenant heads commitment type', '{"event_type": "compliance.tenant_heads", "actor": "alice"}');

CREATE FUNCTION pg_temp.sqlstate_of(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END;
$$;

SELECT is(
    pg_temp.sqlstate_of(format(
        'SELECT compliance.emit_batch(%L)',
        jsonb_build_array('{"event_type": "auth.login", "actor": "bob"}'::jsonb, b.event))),
    pg_temp.sqlstate_of(format(
        'SELECT compliance.emit(%L, %L, %L, %L, %L)',
        b.event ->> 'event_type', b.event ->> 'actor',
        CASE WHEN b.event ? 'payload' THEN b.event -> 'payload' ELSE '{}' END,
        b.event ->> 'tenant_id', b.event ->> 'occurred_at')),
    'emit_batch fails with emit''s SQLSTATE for ' || b.rule)
  FROM bad_events AS b
 ORDER BY b.rule;

SELECT is(bool_and(pg_temp.sqlstate_of(format(
              'SELECT compliance.emit(%L, %L, %L, %L, %L)',
              b.event ->> 'event_type', b.event ->> 'actor',
              CASE WHEN b.event ? 'payload' THEN b.event -> 'payload' ELSE '{}' END,
              b.event ->> 'tenant_id', b.event ->> 'occurred_at')) LIKE 'AC00_'),
          true, 'emit itself refuses every listed event with an AC00x SQLSTATE')
  FROM bad_events AS b;

-- The message names the element (0-based) and DETAIL carries it for programs.
SELECT throws_ok($$SELECT compliance.emit_batch('[{"event_type": "a.b", "actor": "x"},
                                                  {"event_type": "a.b", "actor": "x"},
                                                  {"event_type": "Bad", "actor": "x"}]')$$,
                 'AC001', 'events[2]: invalid event_type ''Bad''', 'the message names the bad element''s index');
SELECT throws_ok($$SELECT compliance.emit_batch('[{"event_type": "a.b", "actor": "x"},
                                                  {"event_type": "a.b", "actor": ""},
                                                  {"event_type": "Bad", "actor": "x"}]')$$,
                 'AC002', NULL, 'with several bad elements the lowest index is reported');
SELECT throws_ok($$SELECT compliance.emit_batch('[{"event_type": "a.b", "actor": "x"},
                                                  {"event_type": "Bad", "actor": "x"},
                                                  {"event_type": "a.b", "actor": "x", "occurred_at": "soon"}]')$$,
                 'AC001', NULL, 'a bad element before an unparsable occurred_at is still the one reported');

-- Malformed arrays and elements: AC007.
SELECT throws_ok($$SELECT compliance.emit_batch(NULL)$$, 'AC007', NULL, 'NULL instead of an array is AC007');
SELECT throws_ok($$SELECT compliance.emit_batch('{"event_type": "a.b", "actor": "x"}')$$, 'AC007', NULL,
                 'an object instead of an array is AC007');
SELECT throws_ok($$SELECT compliance.emit_batch('[{"event_type": "a.b", "actor": "x"}, "a.b"]')$$, 'AC007',
                 'events[1]: not a JSON object but string', 'an element that is not an object is AC007');
SELECT throws_ok($$SELECT compliance.emit_batch('[{"event_type": "a.b", "actor": "x", "tenant": "t1"}]')$$, 'AC007',
                 NULL, 'an unknown key (a misspelt field) is AC007');
SELECT throws_ok($$SELECT compliance.emit_batch('[{"event_type": "a.b", "actor": 42}]')$$, 'AC007', NULL,
                 'a number where emit takes text is AC007');
SELECT throws_ok($$SELECT compliance.emit_batch('[{"event_type": "a.b", "actor": "x", "occurred_at": 20260101}]')$$,
                 'AC007', NULL, 'a number as occurred_at is AC007');
SELECT throws_ok($$SELECT compliance.emit_batch('[{"event_type": "a.b", "actor": "x"},
                                                  {"event_type": "a.b", "actor": "x", "occurred_at": "2026-02-30"}]')$$,
                 'AC007', 'events[1]: occurred_at ''2026-02-30'' is not a timestamp',
                 'an occurred_at that is not a timestamp is AC007 with its index');

SELECT is((SELECT count(*) FROM compliance.audit_outbox), (SELECT n FROM outbox_before),
          'no refused call wrote anything to the outbox');

-- A valid batch: every event queued once, in array order, with emit's defaults.
SELECT is(cardinality(compliance.emit_batch('[]')), 0, 'an empty array queues nothing and returns no ids');
SELECT lives_ok($$SELECT compliance.emit_batch('[{"event_type": "batch.first", "actor": "x"},
                   {"event_type": "batch.second", "actor": "y", "payload": {"k": 1}, "tenant_id": "t1",
                    "occurred_at": "2026-01-02T03:04:05.123456Z"}]')$$, 'a valid batch is accepted');
SELECT results_eq(
    $$SELECT event_type, actor, payload, tenant_id, occurred_at = now() FROM compliance.audit_outbox
       WHERE event_type LIKE 'batch.%' ORDER BY outbox_id$$,
    $$VALUES ('batch.first', 'x', '{}'::jsonb, NULL::text, true),
             ('batch.second', 'y', '{"k": 1}'::jsonb, 't1', false)$$,
    'events are queued in array order with emit''s defaults');
SELECT is((SELECT occurred_at FROM compliance.audit_outbox WHERE event_type = 'batch.second'),
          '2026-01-02T03:04:05.123456Z'::timestamptz, 'occurred_at is taken as given, to the microsecond');

SELECT * FROM finish();
ROLLBACK;
