-- compliance_anchor can take pending anchors and record upload results through its
-- functions and nothing else: no table access, no create_anchor, no ledger.
-- compliance_auditor can read anchors but record nothing; PUBLIC gets nothing.
BEGIN;
SELECT plan(14);

SELECT compliance.emit('test.anchored', 'tester', '{}');
SELECT compliance.drain(100);
SELECT compliance.create_anchor();
SELECT anchor_id AS id FROM compliance.anchors \gset

SET LOCAL ROLE compliance_anchor;
SELECT is((SELECT count(*) FROM compliance.claim_pending_anchors(5)), 1::bigint,
          'compliance_anchor can claim pending anchors');
SELECT lives_ok(format('SELECT compliance.record_anchor_error(%s, ''ThrottlingException'')', :id),
                'and record a transient error');
SELECT throws_ok('SELECT count(*) FROM compliance.anchors', '42501', NULL, 'compliance_anchor cannot read anchors');
SELECT throws_ok(format('UPDATE compliance.anchors SET attempts = 0 WHERE anchor_id = %s', :id), '42501', NULL,
                 'compliance_anchor cannot update anchors directly');
SELECT throws_ok('INSERT INTO compliance.anchors DEFAULT VALUES', '42501', NULL,
                 'compliance_anchor cannot insert anchors');
SELECT throws_ok('SELECT compliance.create_anchor()', '42501', NULL, 'compliance_anchor cannot create anchors');
SELECT throws_ok('SELECT count(*) FROM compliance.audit_events', '42501', NULL,
                 'compliance_anchor cannot read the ledger');
SELECT throws_ok(format('SELECT compliance._record_failed_attempt(%s, NULL, ''x'', ''failed'')', :id), '42501', NULL,
                 'compliance_anchor cannot call the internal helper directly');
RESET ROLE;

SET LOCAL ROLE compliance_auditor;
SELECT is((SELECT attempts FROM compliance.anchors WHERE anchor_id = :id), 1, 'compliance_auditor can read anchors');
SELECT throws_ok(format('SELECT compliance.record_anchor_error(%s, ''x'')', :id), '42501', NULL,
                 'compliance_auditor cannot record upload results');
SELECT throws_ok('SELECT * FROM compliance.claim_pending_anchors(1)', '42501', NULL,
                 'compliance_auditor cannot claim anchors');
RESET ROLE;

SELECT ok(NOT has_function_privilege('public', 'compliance.claim_pending_anchors(integer)', 'EXECUTE'),
          'PUBLIC cannot claim anchors');
SELECT ok(NOT has_function_privilege('public', 'compliance.create_anchor()', 'EXECUTE'),
          'PUBLIC cannot create anchors');
SELECT ok(NOT has_table_privilege('public', 'compliance.anchors', 'SELECT'), 'PUBLIC cannot read anchors');

SELECT * FROM finish();
ROLLBACK;
