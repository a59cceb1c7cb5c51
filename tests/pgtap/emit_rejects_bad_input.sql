-- compliance.emit validates every argument, raises the documented SQLSTATE for each kind of
-- bad input, and writes nothing to the outbox when it refuses.
BEGIN;
SELECT plan(36);

-- event_type (AC001)
SELECT throws_ok($$SELECT compliance.emit(NULL, 'alice')$$, 'AC001', NULL, 'event_type NULL is AC001');
SELECT throws_ok($$SELECT compliance.emit('', 'alice')$$, 'AC001', NULL, 'empty event_type is AC001');
SELECT throws_ok($$SELECT compliance.emit('login', 'alice')$$, 'AC001', NULL, 'event_type without a dot is AC001');
SELECT throws_ok($$SELECT compliance.emit('Auth.Login', 'alice')$$, 'AC001', NULL, 'upper-case event_type is AC001');
SELECT throws_ok($$SELECT compliance.emit('auth..login', 'alice')$$, 'AC001', NULL, 'empty dotted word is AC001');
SELECT throws_ok($$SELECT compliance.emit('auth.login ', 'alice')$$, 'AC001', NULL, 'trailing space is AC001');
SELECT throws_ok($$SELECT compliance.emit('1auth.login', 'alice')$$, 'AC001', NULL,
                 'a word starting with a digit is AC001');
SELECT throws_ok(pg_catalog.format('SELECT compliance.emit(%L, %L)', 'a.' || repeat('b', 127), 'alice'), 'AC001', NULL,
                 'event_type of 129 characters is AC001');
SELECT lives_ok(pg_catalog.format('SELECT compliance.emit(%L, %L)', 'a.' || repeat('b', 126), 'alice'),
                'event_type of 128 characters is accepted');

-- actor (AC002)
SELECT throws_ok($$SELECT compliance.emit('auth.login', NULL)$$, 'AC002', NULL, 'actor NULL is AC002');
SELECT throws_ok($$SELECT compliance.emit('auth.login', '')$$, 'AC002', NULL, 'empty actor is AC002');
SELECT throws_ok($$SELECT compliance.emit('auth.login', E' \t ')$$, 'AC002', NULL, 'blank actor is AC002');
SELECT throws_ok(pg_catalog.format('SELECT compliance.emit(%L, %L)', 'auth.login', repeat('x', 257)), 'AC002', NULL,
                 'actor of 257 characters is AC002');

-- payload (AC003, AC004)
SELECT throws_ok($$SELECT compliance.emit('auth.login', 'alice', NULL)$$, 'AC003', NULL, 'payload NULL is AC003');
SELECT throws_ok($$SELECT compliance.emit('auth.login', 'alice', '[1, 2]')$$, 'AC003', NULL,
                 'array payload is AC003');
SELECT throws_ok($$SELECT compliance.emit('auth.login', 'alice', '"text"')$$, 'AC003', NULL,
                 'string payload is AC003');
SELECT throws_ok($$SELECT compliance.emit('auth.login', 'alice', '42')$$, 'AC003', NULL,
                 'number payload is AC003');
SELECT throws_ok($$SELECT compliance.emit('auth.login', 'alice', 'null')$$, 'AC003', NULL,
                 'JSON null payload is AC003');
SELECT throws_ok($$SELECT compliance.emit('auth.login', 'alice', jsonb_build_object('blob', repeat('x', 300000)))$$,
                 'AC004', NULL, 'payload above 256 KiB is AC004');
SELECT lives_ok($$SELECT compliance.emit('auth.login', 'alice', jsonb_build_object('blob', repeat('x', 200000)))$$,
                'payload below 256 KiB is accepted');

-- occurred_at (AC005)
SELECT throws_ok($$SELECT compliance.emit('auth.login', 'alice', '{}', NULL, now() + interval '6 minutes')$$,
                 'AC005', NULL, 'occurred_at six minutes ahead is AC005');
SELECT throws_ok($$SELECT compliance.emit('auth.login', 'alice', '{}', NULL, 'infinity')$$, 'AC005', NULL,
                 'occurred_at infinity is AC005');
SELECT throws_ok($$SELECT compliance.emit('auth.login', 'alice', '{}', NULL, '-infinity')$$, 'AC005', NULL,
                 'occurred_at -infinity is AC005');
SELECT throws_ok($$SELECT compliance.emit('auth.login', 'alice', '{}', NULL, '1969-12-31 23:59:59.999999+00')$$,
                 'AC005', NULL, 'occurred_at before 1970 is AC005');
SELECT lives_ok($$SELECT compliance.emit('auth.login', 'alice', '{}', NULL, now() + interval '5 minutes')$$,
                'occurred_at five minutes ahead (clock skew) is accepted');
SELECT lives_ok($$SELECT compliance.emit('auth.login', 'alice', '{}', NULL, '1970-01-01 00:00:00+00')$$,
                'occurred_at at the epoch is accepted');

-- tenant_id (AC006)
SELECT throws_ok($$SELECT compliance.emit('auth.login', 'alice', '{}', '')$$, 'AC006', NULL,
                 'empty tenant_id is AC006');
SELECT throws_ok(pg_catalog.format('SELECT compliance.emit(%L, %L, %L, %L)', 'auth.login', 'alice', '{}',
                                   repeat('t', 129)), 'AC006', NULL, 'tenant_id of 129 characters is AC006');
SELECT throws_ok($$SELECT compliance.emit('auth.login', 'alice', '{}', E'acme\nother')$$, 'AC006', NULL,
                 'tenant_id with a control character is AC006');

-- Only the accepted calls above wrote anything.
SELECT is((SELECT count(*) FROM compliance.audit_outbox), 4::bigint,
          'the outbox holds exactly the four accepted events: every refusal wrote nothing');
SELECT is((SELECT count(*) FROM compliance.audit_events), 0::bigint, 'emit never writes to audit_events');

-- A good call: its UUIDv7 and its row.
CREATE TEMP TABLE emitted AS
SELECT compliance.emit('data.export_initiated', 'bob', '{"rows": 3}', 'acme') AS event_id;
SELECT is((SELECT substr(event_id::text, 15, 1) FROM emitted), '7', 'emit returns a version-7 UUID');
SELECT ok((SELECT substr(event_id::text, 20, 1) IN ('8', '9', 'a', 'b') FROM emitted),
          'the UUID has the RFC 9562 variant');
SELECT row_eq(
    $$SELECT o.event_type, o.actor, o.payload, o.tenant_id, o.occurred_at
        FROM compliance.audit_outbox AS o JOIN emitted USING (event_id)$$,
    ROW('data.export_initiated'::text, 'bob'::text, '{"rows": 3}'::jsonb, 'acme'::text, now()),
    'the outbox row carries the arguments, occurred_at defaulting to now()'
);
INSERT INTO emitted SELECT compliance.emit('auth.logout', 'bob');
SELECT is((SELECT o.payload FROM compliance.audit_outbox AS o
            WHERE o.event_id = (SELECT e.event_id FROM emitted AS e ORDER BY e.event_id DESC LIMIT 1)),
          '{}'::jsonb, 'payload defaults to an empty object');
SELECT ok((SELECT abs(('x' || replace(left(e.event_id::text, 13), '-', ''))::bit(48)::bigint
                     - (extract(epoch FROM clock_timestamp()) * 1000)::bigint) < 60000
             FROM emitted AS e ORDER BY e.event_id DESC LIMIT 1),
          'the UUIDv7 starts with the current Unix time in milliseconds');

SELECT * FROM finish();
ROLLBACK;
