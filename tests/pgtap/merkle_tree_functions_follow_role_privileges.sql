-- Who may use the Merkle tree, by actually calling as each group role: auditors read the
-- stored nodes and call every tree function; the anchor uploader gets the root and the
-- consistency proof it needs for a checkpoint, through SECURITY DEFINER functions only;
-- producers and the drainer get nothing (the drainer maintains the tree only through drain).
BEGIN;
SELECT plan(12);

SELECT compliance.emit('auth.login', 'user-' || g) FROM generate_series(1, 300) AS g;
SELECT compliance.drain();

CREATE TEMP TABLE head AS SELECT compliance.tree_root() AS root;
GRANT SELECT ON head TO compliance_auditor;

SET LOCAL ROLE compliance_auditor;
SELECT is(compliance.tree_root(300), (SELECT root FROM head), 'compliance_auditor gets the root');
SELECT is(cardinality(compliance.inclusion_proof(7)), 9, 'compliance_auditor gets an inclusion proof of 9 hashes at 300 events');
SELECT is(cardinality(compliance.consistency_proof(256)), 1, 'compliance_auditor gets a consistency proof');
SELECT row_eq('SELECT * FROM compliance.verify_tree()', ROW(true, 300::bigint, NULL::text), 'compliance_auditor verifies the tree');
SELECT is((SELECT count(*) FROM compliance.merkle_nodes), 1::bigint, 'compliance_auditor reads the stored nodes');
RESET ROLE;

SET LOCAL ROLE compliance_anchor;
SELECT lives_ok('SELECT compliance.tree_root(); SELECT compliance.consistency_proof(100, 300)',
                'compliance_anchor gets roots and consistency proofs');
SELECT throws_ok('SELECT compliance.inclusion_proof(1)', '42501', NULL, 'but no inclusion proof');
SELECT throws_ok('SELECT compliance.verify_tree()', '42501', NULL, 'and no verify_tree');
SELECT throws_ok('SELECT count(*) FROM compliance.merkle_nodes', '42501', NULL, 'and no table');
RESET ROLE;

SET LOCAL ROLE compliance_writer;
SELECT throws_ok('SELECT compliance.tree_root()', '42501', NULL, 'compliance_writer cannot read the tree');
RESET ROLE;
SET LOCAL ROLE compliance_drainer;
SELECT throws_ok('SELECT compliance.tree_root()', '42501', NULL, 'compliance_drainer cannot read the tree');
SELECT throws_ok($$SELECT compliance._tree_append(301, ARRAY[sha256('x')])$$, '42501', NULL,
                 'nor append to it outside drain');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
