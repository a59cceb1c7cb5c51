-- compliance.drain moves outbox rows into audit_events in emit order, numbers them from 1
-- without gaps, links each to the previous one's hash, and remembers the head.
BEGIN;
SELECT plan(22);

CREATE TEMP TABLE emitted (n integer PRIMARY KEY, event_id uuid NOT NULL);
INSERT INTO emitted
SELECT g, compliance.emit(
    'payment.captured', 'user-' || g, jsonb_build_object('n', g, 'note', 'naïve ' || g),
    CASE WHEN g % 3 = 0 THEN NULL ELSE 'tenant-' || g % 2 END,
    '2024-05-01 12:00:00+00'::timestamptz + g * interval '1.000001 seconds')
  FROM generate_series(1, 7) AS g;
CREATE TEMP TABLE outbox_before AS SELECT * FROM compliance.audit_outbox;

SELECT throws_ok('SELECT compliance.drain(0)', '22023', 'max_rows must be a positive integer', 'drain(0) is refused');
SELECT throws_ok('SELECT compliance.drain(NULL)', '22023', 'max_rows must be a positive integer',
                 'drain(NULL) is refused');

SELECT is(compliance.drain(3), 3, 'drain(3) moves three rows');
SELECT results_eq(
    'SELECT a.event_id FROM compliance.audit_events AS a ORDER BY a.seq',
    'SELECT e.event_id FROM emitted AS e WHERE e.n <= 3 ORDER BY e.n',
    'the first batch holds the three oldest events, in emit order'
);
SELECT results_eq(
    'SELECT o.event_id FROM compliance.audit_outbox AS o ORDER BY o.outbox_id',
    'SELECT e.event_id FROM emitted AS e WHERE e.n > 3 ORDER BY e.n',
    'the moved rows left the outbox; the rest wait in order'
);
SELECT is(compliance.drain(), 4, 'drain() moves the remaining four');
SELECT is(compliance.drain(), 0, 'an empty outbox drains nothing');
SELECT is((SELECT count(*) FROM compliance.audit_outbox), 0::bigint, 'the outbox is empty');

SELECT results_eq(
    'SELECT a.seq, a.event_id FROM compliance.audit_events AS a ORDER BY a.seq',
    'SELECT e.n::bigint, e.event_id FROM emitted AS e ORDER BY e.n',
    'seq runs 1..7 without gaps, in emit order'
);
SELECT is_empty(
    $$SELECT a.seq FROM compliance.audit_events AS a JOIN outbox_before AS o USING (event_id)
       WHERE (a.occurred_at, a.tenant_id, a.event_type, a.actor, a.payload)
             IS DISTINCT FROM (o.occurred_at, o.tenant_id, o.event_type, o.actor, o.payload)$$,
    'every event carries its outbox row''s fields unchanged'
);
SELECT is_empty(
    $$SELECT a.seq FROM compliance.audit_events AS a
       WHERE a.recorded_at NOT BETWEEN now() AND clock_timestamp() OR a.hash_version <> 2$$,
    'recorded_at is the time of the drain and hash_version is 2'
);
SELECT is((SELECT count(DISTINCT recorded_at) FROM compliance.audit_events WHERE seq <= 3), 1::bigint,
          'the events of one batch share one recorded_at');
SELECT is((SELECT prev_hash FROM compliance.audit_events WHERE seq = 1), decode(repeat('00', 32), 'hex'),
          'seq 1 links to 32 zero bytes');
SELECT is_empty(
    $$SELECT a.seq FROM compliance.audit_events AS a JOIN compliance.audit_events AS p ON p.seq = a.seq - 1
       WHERE a.prev_hash <> p.event_hash$$,
    'every prev_hash is the previous event''s event_hash'
);
SELECT is_empty(
    $$SELECT a.seq FROM compliance.audit_events AS a
       WHERE a.event_hash <> compliance.event_hash(a.prev_hash, compliance.event_record_v2(
                 a.seq, a.event_id, a.occurred_at, a.recorded_at, a.tenant_id, a.event_type,
                 compliance.commitment(a.actor_salt, a.actor), compliance.commitment(a.payload_salt, a.payload::text)))$$,
    'every event_hash is the hash of its own record'
);
-- The record of seq 2 spelled out by hand from docs/hash-format.md, without the helpers.
SELECT is(
    (SELECT a.event_hash FROM compliance.audit_events AS a WHERE a.seq = 2),
    (SELECT sha256(p.event_hash || sha256(convert_to(
                'auditchain:v2' || E'\n' || '2' || E'\n' || a.event_id::text || E'\n'
                || '1714564802000002' || E'\n'
                || ((extract(epoch FROM a.recorded_at) * 1000000)::bigint)::text || E'\n'
                || '8:tenant-0' || E'\n' || '16:payment.captured' || E'\n'
                || encode(sha256(a.actor_salt || convert_to('user-2', 'UTF8')), 'hex') || E'\n'
                || encode(sha256(a.payload_salt || convert_to('{"n": 2, "note": "naïve 2"}', 'UTF8')), 'hex'),
                'UTF8')))
       FROM compliance.audit_events AS a JOIN compliance.audit_events AS p ON p.seq = 1
      WHERE a.seq = 2),
    'event_hash of seq 2 equals SHA-256(prev_hash || SHA-256(canonical record v2)) built by hand'
);
SELECT is((SELECT octet_length(convert_to(payload::text, 'UTF8')) FROM compliance.audit_events WHERE seq = 2), 28,
          'the payload text hashed is PostgreSQL''s jsonb output (multi-byte characters counted in bytes)');

SELECT row_eq(
    'SELECT last_seq, last_hash, last_batch_rows, total_drained, halted_at FROM compliance.drainer_state',
    ROW(7::bigint, (SELECT event_hash FROM compliance.audit_events WHERE seq = 7), 4, 7::bigint, NULL::timestamptz),
    'drainer_state remembers the head (seq 7 and its hash), the last batch size and the total'
);
SELECT ok((SELECT last_success_at IS NOT NULL FROM compliance.drainer_state), 'drainer_state records the last success');
SELECT is(
    (SELECT count(*) FROM compliance.audit_events WHERE event_hash = (SELECT event_hash FROM compliance.audit_events
                                                                       WHERE seq = 5)),
    1::bigint, 'an event can be found by its hash'
);

SELECT compliance.emit('auth.login', 'late');
SELECT is(compliance.drain(), 1, 'a later emit is drained');
SELECT row_eq(
    $$SELECT seq, prev_hash FROM compliance.audit_events WHERE actor = 'late'$$,
    ROW(8::bigint, (SELECT event_hash FROM compliance.audit_events WHERE seq = 7)),
    'and continues the chain at seq 8 from the previous head'
);

SELECT * FROM finish();
ROLLBACK;
