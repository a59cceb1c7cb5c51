-- The privilege matrix: for every group role of SPEC.md, for PUBLIC, and for a login role
-- granted each group, exactly which privileges it holds on schema compliance and on every
-- table, sequence, function and procedure in it. One table of truth (below) lists what is
-- granted; everything else must be refused, so an object added to the schema without a row
-- here fails this test until someone decides who may use it.
BEGIN;
SELECT plan(30);

CREATE TEMP TABLE truth (grantee name, kind text, object text, privilege text) ON COMMIT DROP;
INSERT INTO truth
SELECT g.grantee, g.kind, g.object, g.privilege
  FROM (VALUES
    ('compliance_writer', 'schema', 'compliance', 'USAGE'),
    ('compliance_writer', 'function', 'compliance.emit(text,text,jsonb,text,timestamp with time zone)', 'EXECUTE'),
    ('compliance_writer', 'function', 'compliance.emit_batch(jsonb)', 'EXECUTE'),
    ('compliance_writer', 'function', 'compliance.request_export(jsonb,text,text)', 'EXECUTE'),
    ('compliance_writer', 'function', 'compliance.normalize_export_filter(jsonb)', 'EXECUTE'),

    ('compliance_drainer', 'schema', 'compliance', 'USAGE'),
    ('compliance_drainer', 'function', 'compliance.drain(integer)', 'EXECUTE'),
    ('compliance_drainer', 'function', 'compliance.run_drainer(interval,integer,double precision)', 'EXECUTE'),
    ('compliance_drainer', 'function', 'compliance.record_halt()', 'EXECUTE'),

    ('compliance_anchor', 'schema', 'compliance', 'USAGE'),
    ('compliance_anchor', 'function', 'compliance.anchor_queue()', 'EXECUTE'),
    ('compliance_anchor', 'function', 'compliance.claim_next_anchor(text,interval)', 'EXECUTE'),
    ('compliance_anchor', 'function', 'compliance.anchor_heartbeat(bigint,uuid,interval)', 'EXECUTE'),
    ('compliance_anchor', 'function', 'compliance.claim_pending_anchors(integer)', 'EXECUTE'),
    ('compliance_anchor', 'function',
     'compliance.record_anchor_upload(bigint,text,text,text,text,timestamp with time zone,uuid,text,text,text)', 'EXECUTE'),
    ('compliance_anchor', 'function', 'compliance.record_anchor_error(bigint,text,uuid)', 'EXECUTE'),
    ('compliance_anchor', 'function', 'compliance.record_anchor_integrity_failure(bigint,text,text,text,text,uuid)',
     'EXECUTE'),
    ('compliance_anchor', 'function', 'compliance.tree_root(bigint)', 'EXECUTE'),
    ('compliance_anchor', 'function', 'compliance.consistency_proof(bigint,bigint)', 'EXECUTE'),

    ('compliance_watchdog', 'schema', 'compliance', 'USAGE'),
    ('compliance_watchdog', 'function', 'compliance.metrics()', 'EXECUTE'),
    ('compliance_watchdog', 'function', 'compliance.expectation_status()', 'EXECUTE'),

    ('compliance_exporter', 'schema', 'compliance', 'USAGE'),
    ('compliance_exporter', 'function', 'compliance.claim_export(uuid)', 'EXECUTE'),
    ('compliance_exporter', 'function', 'compliance.claim_next_export()', 'EXECUTE'),
    ('compliance_exporter', 'function', 'compliance.export_heartbeat(uuid)', 'EXECUTE'),
    ('compliance_exporter', 'function', 'compliance.export_plan(uuid)', 'EXECUTE'),
    ('compliance_exporter', 'function', 'compliance.export_lines(uuid,bigint,bigint)', 'EXECUTE'),
    ('compliance_exporter', 'function', 'compliance.tenant_export_lines(uuid,bigint,bigint)', 'EXECUTE'),
    ('compliance_exporter', 'function',
     'compliance.complete_export(uuid,text,text,bigint,bigint,bytea,bigint,bigint,bigint)', 'EXECUTE'),
    ('compliance_exporter', 'function', 'compliance.fail_export(uuid,text)', 'EXECUTE'),

    ('compliance_auditor', 'schema', 'compliance', 'USAGE'),
    ('compliance_auditor', 'table', 'compliance.audit_events', 'SELECT'),
    ('compliance_auditor', 'table', 'compliance.audit_events_hex', 'SELECT'),
    ('compliance_auditor', 'table', 'compliance.drainer_state', 'SELECT'),
    ('compliance_auditor', 'table', 'compliance.verification_state', 'SELECT'),
    ('compliance_auditor', 'table', 'compliance.integrity_incidents', 'SELECT'),
    ('compliance_auditor', 'table', 'compliance.anchors', 'SELECT'),
    ('compliance_auditor', 'table', 'compliance.anchor_failure_reviews', 'SELECT'),
    ('compliance_auditor', 'table', 'compliance.export_jobs', 'SELECT'),
    ('compliance_auditor', 'function', 'compliance.verify_chain(bigint,bigint)', 'EXECUTE'),
    ('compliance_auditor', 'function', 'compliance.event_receipt(bigint,uuid)', 'EXECUTE'),
    ('compliance_auditor', 'function', 'compliance.normalize_export_filter(jsonb)', 'EXECUTE'),
    ('compliance_auditor', 'function', 'compliance.metrics()', 'EXECUTE'),
    ('compliance_auditor', 'table', 'compliance.merkle_nodes', 'SELECT'),
    ('compliance_auditor', 'function', 'compliance.tree_root(bigint)', 'EXECUTE'),
    ('compliance_auditor', 'function', 'compliance.inclusion_proof(bigint,bigint)', 'EXECUTE'),
    ('compliance_auditor', 'function', 'compliance.consistency_proof(bigint,bigint)', 'EXECUTE'),
    ('compliance_auditor', 'function', 'compliance.verify_tree()', 'EXECUTE'),
    ('compliance_auditor', 'function', 'compliance.tenant_tree_root(text,bigint)', 'EXECUTE'),
    ('compliance_auditor', 'function', 'compliance.tenant_inclusion_proof(bigint,bigint)', 'EXECUTE'),
    ('compliance_auditor', 'function', 'compliance.tenant_consistency_proof(text,bigint,bigint)', 'EXECUTE'),
    ('compliance_auditor', 'function', 'compliance.tenant_heads_root(bigint)', 'EXECUTE'),
    ('compliance_auditor', 'function', 'compliance.tenant_head_proof(text,bigint)', 'EXECUTE'),
    ('compliance_auditor', 'function', 'compliance.expectation_status()', 'EXECUTE'),
    ('compliance_auditor', 'function', 'compliance.activity_history(integer)', 'EXECUTE')
    -- PUBLIC: nothing.
  ) AS g (grantee, kind, object, privilege);

-- Who is checked, and whose row of the truth applies: each group, PUBLIC, and a login role
-- that is a member of one group (it inherits exactly that group's rights, and PUBLIC's).
CREATE TEMP TABLE subjects (subject name, expected_as name) ON COMMIT DROP;
INSERT INTO subjects
SELECT g, g FROM unnest(ARRAY['compliance_writer', 'compliance_drainer', 'compliance_anchor', 'compliance_watchdog',
                              'compliance_exporter', 'compliance_auditor']::name[]) AS g;
INSERT INTO subjects VALUES ('public', 'public');
CREATE ROLE ac_matrix_writer LOGIN IN ROLE compliance_writer;
CREATE ROLE ac_matrix_drainer LOGIN IN ROLE compliance_drainer;
CREATE ROLE ac_matrix_anchor LOGIN IN ROLE compliance_anchor;
CREATE ROLE ac_matrix_watchdog LOGIN IN ROLE compliance_watchdog;
CREATE ROLE ac_matrix_exporter LOGIN IN ROLE compliance_exporter;
CREATE ROLE ac_matrix_auditor LOGIN IN ROLE compliance_auditor;
CREATE ROLE ac_matrix_nobody LOGIN;
INSERT INTO subjects
SELECT r.rolname, coalesce(g.rolname, 'public')
  FROM pg_roles AS r
  LEFT JOIN pg_auth_members AS m ON m.member = r.oid
  LEFT JOIN pg_roles AS g ON g.oid = m.roleid
 WHERE r.rolname LIKE 'ac\_matrix\_%';

-- Every privilege each subject actually holds on the schema and everything in it.
CREATE TEMP VIEW held AS
SELECT s.subject, 'schema' AS kind, 'compliance' AS object, p.privilege
  FROM subjects AS s CROSS JOIN unnest(ARRAY['USAGE', 'CREATE']) AS p (privilege)
 WHERE has_schema_privilege(s.subject, 'compliance', p.privilege)
UNION ALL
SELECT s.subject, 'table', c.oid::regclass::text, p.privilege
  FROM subjects AS s
 CROSS JOIN pg_class AS c
 CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) AS p (privilege)
 WHERE c.relnamespace = 'compliance'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
   AND has_table_privilege(s.subject, c.oid, p.privilege)
UNION ALL
SELECT s.subject, 'sequence', c.oid::regclass::text, p.privilege
  FROM subjects AS s
 CROSS JOIN pg_class AS c
 CROSS JOIN unnest(ARRAY['USAGE', 'SELECT', 'UPDATE']) AS p (privilege)
 WHERE c.relnamespace = 'compliance'::regnamespace AND c.relkind = 'S'
   AND has_sequence_privilege(s.subject, c.oid, p.privilege)
UNION ALL
SELECT s.subject, 'function', f.oid::regprocedure::text, 'EXECUTE'
  FROM subjects AS s
 CROSS JOIN pg_proc AS f
 WHERE f.pronamespace = 'compliance'::regnamespace
   AND has_function_privilege(s.subject, f.oid, 'EXECUTE');

SELECT is((SELECT count(*) FROM subjects), 14::bigint, 'six groups, PUBLIC, six group members and one login role');

-- 1-14: each subject holds exactly its row of the truth.
SELECT set_eq(
    pg_catalog.format('SELECT kind, object, privilege FROM held WHERE subject = %L', s.subject),
    pg_catalog.format('SELECT kind, object, privilege FROM truth WHERE grantee = %L', s.expected_as),
    pg_catalog.format('%s holds exactly the privileges of %s in the table of truth', s.subject, s.expected_as)
)
  FROM subjects AS s
 ORDER BY s.subject;

-- The truth names only objects that exist, so a renamed function cannot pass unnoticed.
SELECT is_empty(
    $$SELECT object FROM truth
       WHERE CASE kind WHEN 'function' THEN to_regprocedure(object)::oid
                       WHEN 'table' THEN to_regclass(object)::oid
                       WHEN 'schema' THEN to_regnamespace(object)::oid END IS NULL$$,
    'every object in the table of truth exists'
);

-- No side doors: column grants, grant options, other owners, powerful role attributes,
-- groups nested in groups.
SELECT is_empty(
    $$SELECT a.attrelid::regclass, a.attname FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid
       WHERE c.relnamespace = 'compliance'::regnamespace AND a.attacl IS NOT NULL$$,
    'no column-level grants in schema compliance'
);
SELECT is_empty(
    $$SELECT c.oid::regclass::text, x.grantee FROM pg_class AS c, aclexplode(c.relacl) AS x
       WHERE c.relnamespace = 'compliance'::regnamespace AND x.is_grantable AND x.grantee <> c.relowner
      UNION ALL
      SELECT f.oid::regprocedure::text, x.grantee FROM pg_proc AS f, aclexplode(f.proacl) AS x
       WHERE f.pronamespace = 'compliance'::regnamespace AND x.is_grantable AND x.grantee <> f.proowner$$,
    'nobody but the owner holds a privilege WITH GRANT OPTION'
);
SELECT is_empty(
    $$SELECT c.oid::regclass::text FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
       WHERE n.nspname = 'compliance' AND c.relowner <> n.nspowner
      UNION ALL
      SELECT f.oid::regprocedure::text FROM pg_proc AS f JOIN pg_namespace AS n ON n.oid = f.pronamespace
       WHERE n.nspname = 'compliance' AND f.proowner <> n.nspowner$$,
    'every object in schema compliance belongs to the schema owner'
);
SELECT is_empty(
    $$SELECT rolname FROM pg_roles
       WHERE rolname LIKE 'compliance\_%'
         AND (rolcanlogin OR rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls)$$,
    'the group roles cannot log in and hold no superuser, CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS'
);
SELECT is_empty(
    $$SELECT g.rolname, m.rolname FROM pg_auth_members AS a
       JOIN pg_roles AS g ON g.oid = a.roleid JOIN pg_roles AS m ON m.oid = a.member
       WHERE g.rolname LIKE 'compliance\_%' AND m.rolname LIKE 'compliance\_%'$$,
    'no group role is a member of another'
);

-- What the members can and cannot do, through the inherited rights.
SET LOCAL ROLE ac_matrix_writer;
SELECT lives_ok($$SELECT compliance.emit('auth.login', 'matrix')$$, 'a writer member emits');
SELECT throws_ok('SELECT compliance.drain()', '42501', NULL, 'a writer member cannot drain');
RESET ROLE;
SET LOCAL ROLE ac_matrix_drainer;
SELECT is(compliance.drain(), 1, 'a drainer member drains');
RESET ROLE;
SET LOCAL ROLE ac_matrix_auditor;
SELECT row_eq('SELECT ok, events_checked, first_bad_seq, problem FROM compliance.verify_chain()', ROW(true, 1::bigint, NULL::bigint, NULL::text),
              'an auditor member verifies the chain');
SELECT throws_ok($$UPDATE compliance.audit_events SET actor = 'x'$$, '42501', NULL,
                 'an auditor member cannot change events');
SELECT is((SELECT pg_catalog.count(*) FROM compliance.audit_events_hex), 1::bigint,
          'an auditor member reads the events with hex hashes');
RESET ROLE;
SET LOCAL ROLE ac_matrix_writer;
SELECT throws_ok('SELECT * FROM compliance.audit_events_hex', '42501', NULL,
                 'a writer member cannot read the events through the hex view');
RESET ROLE;
SET LOCAL ROLE ac_matrix_nobody;
SELECT throws_ok($$SELECT compliance.emit('auth.login', 'nobody')$$, '42501', NULL,
                 'a login role in no group cannot emit');
SELECT throws_ok('SELECT * FROM compliance.metrics()', '42501', NULL, 'a login role in no group cannot read metrics');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
