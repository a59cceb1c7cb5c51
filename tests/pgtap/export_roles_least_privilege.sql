-- compliance_exporter can claim a job, read its plan and lines, report progress and
-- record the outcome, and nothing else: no table, no request, no reconciliation.
-- compliance_writer can request exports but not run them; compliance_auditor can follow jobs.
BEGIN;
SELECT plan(16);

SELECT compliance.emit('user.login', 'alice', '{"n": 1}', 'acme');
SELECT compliance.drain(10);

SET LOCAL ROLE compliance_writer;
SELECT lives_ok($$SELECT compliance.request_export('{"tenant_id":"acme"}', 'auditor@example.com')$$,
                'compliance_writer can request an export');
SELECT throws_ok($$SELECT compliance.claim_next_export()$$, '42501', NULL, 'compliance_writer cannot claim jobs');
SELECT throws_ok($$SELECT count(*) FROM compliance.export_jobs$$, '42501', NULL,
                 'compliance_writer cannot read export_jobs');
RESET ROLE;
SELECT job_id FROM compliance.export_jobs \gset

SET LOCAL ROLE compliance_exporter;
SELECT is(compliance.claim_next_export(), :'job_id'::uuid, 'compliance_exporter can claim the next job');
SELECT ok(NOT compliance.claim_export(:'job_id'), 'and claim a job by id');
SELECT ok(compliance.export_heartbeat(:'job_id'), 'and report progress');
SELECT is((compliance.export_plan(:'job_id') ->> 'line_count')::integer, 1, 'and read the plan of its running job');
SELECT is((SELECT count(*) FROM compliance.export_lines(:'job_id', 1, 1)), 1::bigint, 'and read its lines');
SELECT ok(compliance.complete_export(:'job_id', 'bundles', 'exports/x/', 1, 1, sha256('gz'), 30, 1, 1),
          'and complete it');
SELECT throws_ok($$SELECT compliance.fail_export('01890000-0000-7000-8000-000000000000', 'x')$$, 'P0002', NULL,
                 'fail_export is callable (an unknown job is P0002, not a permission error)');
SELECT throws_ok($$SELECT count(*) FROM compliance.export_jobs$$, '42501', NULL,
                 'compliance_exporter cannot read export_jobs directly');
SELECT throws_ok($$SELECT count(*) FROM compliance.audit_events$$, '42501', NULL,
                 'compliance_exporter cannot read audit_events directly');
SELECT throws_ok($$SELECT compliance.request_export('{}', 'x')$$, '42501', NULL,
                 'compliance_exporter cannot request exports');
SELECT throws_ok($$SELECT compliance.reconcile_exports()$$, '42501', NULL,
                 'compliance_exporter cannot reconcile other runners'' jobs');
SELECT throws_ok($$UPDATE compliance.export_jobs SET status = 'failed'$$, '42501', NULL,
                 'compliance_exporter cannot update export_jobs directly');
RESET ROLE;

SET LOCAL ROLE compliance_auditor;
SELECT is((SELECT status::text FROM compliance.export_jobs WHERE job_id = :'job_id'), 'completed',
          'compliance_auditor can follow export jobs');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
