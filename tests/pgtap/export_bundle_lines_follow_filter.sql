-- What a bundle holds is decided in SQL: export_plan picks the range (first match to the
-- first uploaded anchor at or after the last match, else the last match) and lists the
-- covering anchors; export_lines gives one compact JSON line per seq of that range:
-- matched events in full (hash format v2: actor and payload as their exact text with their
-- salts, or only the payload's commitment when withheld), excluded ones as their hashes and the SHA-256 of their record only. Filters:
-- from inclusive, to exclusive, tenant, tenants, event types, actor.
BEGIN;
SELECT plan(25);

-- seq: 1 acme/user.login/alice 10:00, 2 beta/user.login/alice 10:01, 3 acme/data.read/bob 10:02 | anchor 1
--      4 -/user.login/alice 10:03, 5 acme/user.login/alice 10:04, 6 acme/user.login/carol 10:05,
--      7 beta/data.read/alice 10:06 | anchor 2
SELECT compliance.emit(v.event_type, v.actor, v.payload::jsonb, v.tenant_id, v.occurred_at::timestamptz)
  FROM (VALUES (1, 'user.login', 'alice', '{"n": 1, "s": "é\"\\ ok"}', 'acme', '2025-01-01T10:00:00Z'),
               (2, 'user.login', 'alice', '{"n": 2}', 'beta', '2025-01-01T10:01:00Z'),
               (3, 'data.read', 'bob', '{"n": 3}', 'acme', '2025-01-01T10:02:00Z')) AS v (n, event_type, actor, payload, tenant_id, occurred_at)
 ORDER BY v.n;
SELECT compliance.drain(100);
SELECT compliance.create_anchor();
SELECT compliance.emit(v.event_type, v.actor, v.payload::jsonb, v.tenant_id, v.occurred_at::timestamptz)
  FROM (VALUES (4, 'user.login', 'alice', '{"n": 4}', NULL, '2025-01-01T10:03:00Z'),
               (5, 'user.login', 'alice', '{"n": 5, "nested": {"b": [1, 2]}}', 'acme', '2025-01-01T10:04:00Z'),
               (6, 'user.login', 'carol', '{"n": 6}', 'acme', '2025-01-01T10:05:00Z'),
               (7, 'data.read', 'alice', '{"n": 7}', 'beta', '2025-01-01T10:06:00Z')) AS v (n, event_type, actor, payload, tenant_id, occurred_at)
 ORDER BY v.n;
SELECT compliance.drain(100);
SELECT compliance.create_anchor();

CREATE FUNCTION pg_temp.upload_anchor(p_seq_to bigint) RETURNS void
LANGUAGE sql AS $$
    SELECT compliance.record_anchor_upload(anchor_id, 'worm-bucket',
               'anchors/' || lpad(seq_to::text, 20, '0') || '-' || cadence_id || '.json',
               'version-' || seq_to, 'GOVERNANCE', now() + interval '1 day', NULL,
               checkpoint || E'\n— test-key 3q2+7wAAAAA=\n',
               'checkpoints/' || lpad(seq_to::text, 20, '0') || '-' || cadence_id || '.checkpoint', 'c-' || seq_to)
      FROM compliance.anchors WHERE seq_to = p_seq_to
$$;

-- A running job for a filter.
CREATE FUNCTION pg_temp.job(p_filter text) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    v_job uuid := compliance.request_export(p_filter::jsonb, 'auditor@example.com');
BEGIN
    PERFORM compliance.claim_export(v_job);
    RETURN v_job;
END;
$$;

-- The range part of a plan.
CREATE FUNCTION pg_temp.range(p_job uuid) RETURNS TABLE (seq_from bigint, seq_to bigint, line_count bigint, matched bigint)
LANGUAGE sql AS $$
    SELECT (p ->> 'seq_from')::bigint, (p ->> 'seq_to')::bigint, (p ->> 'line_count')::bigint,
           (p ->> 'matched_count')::bigint
      FROM compliance.export_plan(p_job) AS p
$$;

-- The lines of a job's planned range, parsed.
CREATE FUNCTION pg_temp.lines(p_job uuid) RETURNS TABLE (seq bigint, matched boolean, line jsonb)
LANGUAGE sql AS $$
    SELECT l.seq, l.matched, l.line::jsonb
      FROM pg_temp.range(p_job) AS r, compliance.export_lines(p_job, r.seq_from, r.seq_to) AS l
     ORDER BY l.seq
$$;

-- What a matched (v2) line must be for an event, payload in full or withheld.
CREATE FUNCTION pg_temp.full_line(p_seq bigint, p_withheld boolean) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT jsonb_build_object(
               'seq', e.seq, 'hash_version', 2, 'event_id', e.event_id, 'occurred_at', compliance._iso_utc(e.occurred_at),
               'recorded_at', compliance._iso_utc(e.recorded_at), 'tenant_id', e.tenant_id,
               'event_type', e.event_type, 'actor', e.actor, 'actor_salt', encode(e.actor_salt, 'hex'),
               'prev_hash', encode(e.prev_hash, 'hex'), 'event_hash', encode(e.event_hash, 'hex'))
           || CASE WHEN p_withheld
                   THEN jsonb_build_object('payload_commitment',
                                           encode(sha256(e.payload_salt || convert_to(e.payload::text, 'UTF8')), 'hex'))
                   ELSE jsonb_build_object('payload', e.payload::text, 'payload_salt', encode(e.payload_salt, 'hex')) END
      FROM compliance.audit_events AS e WHERE e.seq = p_seq
$$;

CREATE FUNCTION pg_temp.hash_line(p_seq bigint) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT jsonb_build_object('seq', e.seq, 'prev_hash', encode(e.prev_hash, 'hex'),
                              'record_sha256', encode(sha256(compliance.event_record_v2(
                                  e.seq, e.event_id, e.occurred_at, e.recorded_at, e.tenant_id, e.event_type,
                                  compliance.commitment(e.actor_salt, e.actor),
                                  compliance.commitment(e.payload_salt, e.payload::text))), 'hex'),
                              'event_hash', encode(e.event_hash, 'hex'), 'excluded', true)
      FROM compliance.audit_events AS e WHERE e.seq = p_seq
$$;

SELECT pg_temp.upload_anchor(3);
SELECT pg_temp.job('{"tenant_id":"acme","event_types":["user.login"],"actor":"alice"}') AS acme_job \gset
SELECT results_eq(format('SELECT * FROM pg_temp.range(%L)', :'acme_job'), $$VALUES (1::bigint, 5::bigint, 5::bigint, 2::bigint)$$,
                  'tenant + event type + actor: seqs 1 and 5 match; no uploaded anchor after seq 5, so the range ends there');
SELECT results_eq(format('SELECT seq, matched, line FROM pg_temp.lines(%L)', :'acme_job'),
                  $$VALUES (1::bigint, true, pg_temp.full_line(1, false)), (2, false, pg_temp.hash_line(2)),
                           (3, false, pg_temp.hash_line(3)), (4, false, pg_temp.hash_line(4)),
                           (5, true, pg_temp.full_line(5, false))$$,
                  'every seq of the range has a line: matched events in full, the others hashes and record digest only');
SELECT is((SELECT line ->> 'payload' FROM pg_temp.lines(:'acme_job') WHERE seq = 1),
          (SELECT payload::text FROM compliance.audit_events WHERE seq = 1),
          'the payload is the exact jsonb text, escapes and non-ASCII included');
SELECT is((SELECT count(*) FROM pg_temp.range(:'acme_job') AS r, compliance.export_lines(:'acme_job', r.seq_from, r.seq_to) AS l
            WHERE l.line !~ '^\{"seq":[0-9]+,.*\}$' OR strpos(l.line, E'\n') > 0),
          0::bigint, 'each line is one compact JSON object starting with its seq');
SELECT is((SELECT p -> 'anchors' FROM compliance.export_plan(:'acme_job') AS p),
          (SELECT jsonb_agg(jsonb_build_object('cadence_id', cadence_id, 'seq_to', seq_to, 'head_hash', encode(head_hash, 'hex'),
                                               'document_digest', encode(document_digest, 'hex'), 'bucket', bucket,
                                               'key', object_key, 'version_id', version_id))
             FROM compliance.anchors WHERE seq_to = 3),
          'the uploaded anchor inside the range is listed with its digest and object');

SELECT pg_temp.upload_anchor(7);
SELECT pg_temp.job('{"tenant_id":"acme","event_types":["user.login"],"actor":"alice"}') AS anchored_job \gset
SELECT results_eq(format('SELECT * FROM pg_temp.range(%L)', :'anchored_job'), $$VALUES (1::bigint, 7::bigint, 7::bigint, 2::bigint)$$,
                  'once an anchor after the last match is uploaded, the range extends to it');
SELECT results_eq(format('SELECT seq, matched, line FROM pg_temp.lines(%L) WHERE seq > 5', :'anchored_job'),
                  $$VALUES (6::bigint, false, pg_temp.hash_line(6)), (7, false, pg_temp.hash_line(7))$$,
                  'the events up to the anchor are hash-only lines');
SELECT is_empty(
    format($$SELECT seq FROM pg_temp.lines(%L)
              WHERE NOT matched
                AND line ->> 'event_hash'
                    <> encode(sha256(decode(line ->> 'prev_hash', 'hex') || decode(line ->> 'record_sha256', 'hex')), 'hex')$$,
           :'anchored_job'),
    'an excluded line''s event_hash is SHA-256(prev_hash || record_sha256): a verifier re-derives it without the event'
);
SELECT is((SELECT jsonb_agg((a ->> 'seq_to')::bigint) FROM compliance.export_plan(:'anchored_job') AS p,
                  jsonb_array_elements(p -> 'anchors') AS a),
          '[3, 7]'::jsonb, 'both anchors of the range are listed, in seq order');

SELECT pg_temp.job('{"from":"2025-01-01T10:02:00Z","to":"2025-01-01T11:05:00+01:00"}') AS time_job \gset
SELECT results_eq(format('SELECT seq FROM pg_temp.lines(%L) WHERE matched', :'time_job'), $$VALUES (3::bigint), (4), (5)$$,
                  '"from" is inclusive and "to" (10:05 UTC) exclusive, offsets honoured');
SELECT results_eq(format('SELECT seq_from, seq_to FROM pg_temp.range(%L)', :'time_job'), $$VALUES (3::bigint, 7::bigint)$$,
                  'the range starts at the first match, not at seq 1');

SELECT pg_temp.job('{"tenant_ids":["beta","gamma"]}') AS beta_job \gset
SELECT results_eq(format('SELECT seq FROM pg_temp.lines(%L) WHERE matched', :'beta_job'), $$VALUES (2::bigint), (7)$$,
                  'tenant_ids matches any of the listed tenants');
SELECT pg_temp.job('{"tenant_id":"acme"}') AS acme_all_job \gset
SELECT is((SELECT matched FROM pg_temp.lines(:'acme_all_job') WHERE seq = 4), false,
          'a named tenant never matches a system-wide (NULL tenant) event');

SELECT pg_temp.job('{"tenant_id":"acme","withhold_payloads":true}') AS withheld_job \gset
SELECT results_eq(format('SELECT seq, line FROM pg_temp.lines(%L) WHERE matched', :'withheld_job'),
                  $$SELECT seq, pg_temp.full_line(seq, true) FROM compliance.audit_events WHERE tenant_id = 'acme' ORDER BY seq$$,
                  'withheld payloads: "payload" and its salt are absent and "payload_commitment" is its commitment');
SELECT is((SELECT p -> 'withheld_payloads' FROM compliance.export_plan(:'withheld_job') AS p), 'true'::jsonb,
          'the plan says payloads are withheld');

SELECT pg_temp.job('{"actor":"nobody"}') AS empty_job \gset
SELECT results_eq(
    format($$SELECT p -> 'seq_from', p -> 'seq_to', p -> 'range_prev_hash', p -> 'line_count', p -> 'matched_count', p -> 'anchors'
               FROM compliance.export_plan(%L) AS p$$, :'empty_job'),
    $$VALUES ('null'::jsonb, 'null'::jsonb, 'null'::jsonb, '0'::jsonb, '0'::jsonb, '[]'::jsonb)$$,
    'nothing matched: null range, no lines, no anchors');

SELECT results_eq(
    format($$SELECT p -> 'range_prev_hash', p -> 'filter', p -> 'job_id', p -> 'requested_by' FROM compliance.export_plan(%L) AS p$$,
           :'time_job'),
    format($$SELECT to_jsonb(encode(e.prev_hash, 'hex')), compliance.normalize_export_filter(j.filter),
                    to_jsonb(j.job_id), to_jsonb(j.requested_by)
               FROM compliance.audit_events AS e, compliance.export_jobs AS j WHERE e.seq = 3 AND j.job_id = %L$$, :'time_job'),
    'the plan carries the range''s prev_hash, the normalised filter, the job id and the requester'
);
SELECT is((SELECT array_agg(k ORDER BY k) FROM compliance.export_plan(:'time_job') AS p, jsonb_object_keys(p) AS k),
          ARRAY['anchors', 'created_at', 'data_object', 'database', 'filter', 'format', 'format_version', 'hash_version',
                'job_id', 'line_count', 'matched_count', 'mode', 'range_prev_hash', 'requested_by', 'seq_from', 'seq_to',
                'withheld_payloads'],
          'the plan has every manifest key except data_sha256 and data_bytes, which the runner adds');
SELECT results_eq(
    format($$SELECT p ->> 'format', p -> 'format_version', p -> 'hash_version', p ->> 'mode', p ->> 'data_object',
                    p ->> 'created_at' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$'
               FROM compliance.export_plan(%L) AS p$$, :'time_job'),
    $$VALUES ('auditchain-export', '4'::jsonb, '2'::jsonb, 'range', 'events.ndjson.gz', true)$$,
    'format name and versions, range mode, data object name, created_at in ISO-8601 UTC'
);
SELECT is((SELECT p -> 'database' FROM compliance.export_plan(:'time_job') AS p),
          (SELECT jsonb_build_object('system_identifier', system_identifier::text, 'database_name', current_database())
             FROM pg_control_system()),
          'the database identity: system identifier and database name');

SELECT compliance.request_export('{}', 'auditor@example.com') AS queued_job \gset
SELECT throws_ok(format('SELECT compliance.export_plan(%L)', :'queued_job'), 'AC033',
                 format('export job %s is queued, not running', :'queued_job'), 'no plan for a job that is not running');
SELECT is((SELECT count(*) FROM compliance.export_lines(:'queued_job', 1, 7)), 0::bigint,
          'no lines for a job that is not running');
SELECT compliance.fail_export(:'acme_job', 'test');
SELECT is((SELECT count(*) FROM compliance.export_lines(:'acme_job', 1, 7)), 0::bigint,
          'no lines once the job has failed');
SELECT is((SELECT count(*) FROM compliance.export_lines(:'beta_job', 3, 4)), 2::bigint,
          'export_lines covers exactly the seq range it is given');
SELECT is(compliance._iso_utc('2026-01-02 03:04:05.000006+01'), '2026-01-02T02:04:05.000006Z',
          '_iso_utc: UTC, six fractional digits, Z');

SELECT * FROM finish();
ROLLBACK;
