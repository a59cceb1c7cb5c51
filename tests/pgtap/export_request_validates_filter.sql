-- compliance.request_export accepts only well-formed filters: every bad one raises AC030
-- (AC032 for a bad requester) with a message naming the key, and leaves neither a job nor
-- an audit event behind. A good request queues a job and emits data.export_initiated in
-- the same transaction.
BEGIN;
SELECT plan(32);

CREATE FUNCTION pg_temp.refused(p_filter text, p_message text) RETURNS text
LANGUAGE sql AS $$
    SELECT throws_ok(
        pg_catalog.format('SELECT compliance.request_export(%L::jsonb, %L)', p_filter, 'auditor@example.com'),
        'AC030', p_message, 'filter ' || p_filter || ' is refused with AC030');
$$;

SELECT pg_temp.refused('[]', 'invalid export filter: it must be a JSON object, not array');
SELECT pg_temp.refused('"x"', 'invalid export filter: it must be a JSON object, not string');
SELECT throws_ok($$SELECT compliance.request_export(NULL, 'auditor@example.com')$$, 'AC030',
                 'invalid export filter: it must be a JSON object, not NULL', 'a NULL filter is refused with AC030');
SELECT pg_temp.refused('{"tenant":"acme"}', 'invalid export filter: unknown key "tenant"');
SELECT pg_temp.refused('{"from":"2026-01-01"}',
    'invalid export filter: "from" must be an ISO-8601 timestamp with a time zone, not "2026-01-01"');
SELECT pg_temp.refused('{"to":"2026-01-01T00:00:00"}',
    'invalid export filter: "to" must be an ISO-8601 timestamp with a time zone, not "2026-01-01T00:00:00"');
SELECT pg_temp.refused('{"from":"yesterday"}',
    'invalid export filter: "from" must be an ISO-8601 timestamp with a time zone, not "yesterday"');
SELECT pg_temp.refused('{"from":1767225600}',
    'invalid export filter: "from" must be an ISO-8601 timestamp with a time zone, not 1767225600');
SELECT pg_temp.refused('{"to":"2026-02-30T00:00:00Z"}',
    'invalid export filter: "to" is not a valid timestamp: "2026-02-30T00:00:00Z"');
SELECT pg_temp.refused('{"from":"2026-02-01T00:00:00Z","to":"2026-02-01T01:00:00+01:00"}',
    'invalid export filter: "from" (2026-02-01T00:00:00Z) must be before "to" (2026-02-01T01:00:00+01:00)');
SELECT pg_temp.refused('{"tenant_id":"acme","tenant_ids":["beta"]}',
    'invalid export filter: give "tenant_id" or "tenant_ids", not both');
SELECT pg_temp.refused('{"tenant_id":""}',
    'invalid export filter: "tenant_id" must be a string of 1-128 characters without control characters, not ""');
SELECT pg_temp.refused('{"tenant_id":null}',
    'invalid export filter: "tenant_id" must be a string of 1-128 characters without control characters, not null');
SELECT pg_temp.refused('{"tenant_ids":"acme"}',
    'invalid export filter: "tenant_ids" must be a non-empty array of strings, not "acme"');
SELECT pg_temp.refused('{"tenant_ids":[]}',
    'invalid export filter: "tenant_ids" must be a non-empty array of strings, not []');
SELECT pg_temp.refused('{"tenant_ids":["acme",7]}',
    'invalid export filter: "tenant_ids" holds 7, not a string of 1-128 characters without control characters');
SELECT pg_temp.refused('{"event_types":[]}',
    'invalid export filter: "event_types" must be a non-empty array of strings, not []');
SELECT pg_temp.refused('{"event_types":["user.login","Login"]}',
    'invalid export filter: "event_types" holds "Login", which is not a valid event type');
SELECT pg_temp.refused('{"actor":"  "}',
    'invalid export filter: "actor" must be a non-blank string of at most 256 characters, not "  "');
SELECT pg_temp.refused('{"actor":["alice"]}',
    'invalid export filter: "actor" must be a non-blank string of at most 256 characters, not ["alice"]');
SELECT pg_temp.refused('{"from":"9999-12-31T23:59:59-15:59"}',
    'invalid export filter: "from" lies outside the years 0001-9999 in UTC: "9999-12-31T23:59:59-15:59"');
SELECT pg_temp.refused('{"withhold_payloads":"true"}',
    'invalid export filter: "withhold_payloads" must be true or false, not "true"');
SELECT throws_ok($$SELECT compliance.request_export('{}', '   ')$$, 'AC032',
                 'invalid requested_by: it must be non-blank and at most 256 characters',
                 'a blank requested_by is refused with AC032');
SELECT throws_ok($$SELECT compliance.request_export('{}', NULL)$$, 'AC032',
                 'invalid requested_by: it must be non-blank and at most 256 characters',
                 'a NULL requested_by is refused with AC032');

SELECT is((SELECT count(*) FROM compliance.export_jobs), 0::bigint, 'no refused request created a job');
SELECT is((SELECT count(*) FROM compliance.audit_outbox), 0::bigint, 'no refused request emitted an audit event');
SELECT lives_ok($$SELECT compliance.normalize_export_filter(jsonb_build_object('actor', E'svc\nbatch'))$$,
                'an actor filter selects any actor emit accepts, a line feed included');

SELECT compliance.request_export(
    '{"from":"2026-01-01T00:00:00Z","to":"2026-02-01T00:00:00.5+02:00","tenant_id":"acme",'
    '"event_types":["user.login"],"actor":"alice","withhold_payloads":true}',
    'auditor@example.com'
) AS job_id \gset
SELECT results_eq(
    $$SELECT status::text, requested_by, format, started_at IS NULL FROM compliance.export_jobs$$,
    $$VALUES ('queued', 'auditor@example.com', 'ndjson.gz', true)$$,
    'a valid request queues exactly one job'
);
SELECT is(substring(:'job_id' FROM 15 FOR 1), '7', 'the job id is a version-7 UUID');
SELECT results_eq(
    $$SELECT o.event_type, o.actor, o.tenant_id, o.payload
        FROM compliance.audit_outbox AS o JOIN compliance.export_jobs AS j ON j.request_event_id = o.event_id$$,
    $$SELECT 'data.export_initiated', 'auditor@example.com', 'acme', jsonb_build_object('job_id', job_id, 'mode', 'range', 'filter', filter)
        FROM compliance.export_jobs$$,
    'the request emitted data.export_initiated (actor: requester, tenant: the filter''s, payload: job_id, mode and filter)'
);
SELECT compliance.request_export('{"tenant_ids":["acme","beta"]}', 'auditor@example.com') AS multi_job \gset
SELECT is((SELECT o.tenant_id FROM compliance.audit_outbox AS o
             JOIN compliance.export_jobs AS j ON j.request_event_id = o.event_id
            WHERE j.job_id = :'multi_job'),
          NULL, 'a request over several tenants is a system-wide event');
SELECT lives_ok($$SELECT compliance.request_export('{}', 'auditor@example.com')$$,
                'the empty filter {} (export everything) is valid');

SELECT * FROM finish();
ROLLBACK;
