-- tree_root, inclusion_proof and consistency_proof refuse sizes and seqs outside the chained
-- tree with their own SQLSTATEs (docs/api.md): AC070 tree size negative or beyond the chain,
-- AC071 seq outside 1..tree_size, AC072 consistency from the empty tree, AC073 size1 > size2.
-- Edge cases that are valid give the RFC answers.
BEGIN;
SELECT plan(20);

SELECT compliance.emit('auth.login', 'user-' || g) FROM generate_series(1, 5) AS g;
SELECT compliance.drain();

SELECT throws_ok('SELECT compliance.tree_root(6)', 'AC070', NULL, 'tree_root beyond the chain: AC070');
SELECT throws_ok('SELECT compliance.tree_root(-1)', 'AC070', NULL, 'a negative tree size: AC070');
SELECT throws_ok('SELECT compliance.inclusion_proof(1, 6)', 'AC070', NULL, 'inclusion_proof beyond the chain: AC070');
SELECT throws_ok('SELECT compliance.consistency_proof(1, 6)', 'AC070', NULL,
                 'consistency_proof to a size beyond the chain: AC070');
SELECT throws_ok('SELECT compliance.consistency_proof(-1, 5)', 'AC070', NULL, 'a negative size1: AC070');
SELECT throws_ok('SELECT compliance.inclusion_proof(0)', 'AC071', NULL, 'seq 0: AC071');
SELECT throws_ok('SELECT compliance.inclusion_proof(6)', 'AC071', NULL, 'a seq not chained yet: AC071');
SELECT throws_ok('SELECT compliance.inclusion_proof(4, 3)', 'AC071', NULL, 'a seq beyond the requested tree size: AC071');
SELECT throws_ok('SELECT compliance.inclusion_proof(NULL)', 'AC071', NULL, 'a NULL seq: AC071');
SELECT throws_ok('SELECT compliance.inclusion_proof(1, 0)', 'AC071', NULL, 'no seq is in the empty tree: AC071');
SELECT throws_ok('SELECT compliance.consistency_proof(0, 5)', 'AC072', NULL, 'consistency from the empty tree: AC072');
SELECT throws_ok('SELECT compliance.consistency_proof(0, 0)', 'AC072', NULL, 'even from empty to empty: AC072');
SELECT throws_ok('SELECT compliance.consistency_proof(4, 3)', 'AC073', NULL, 'size1 > size2: AC073');
SELECT throws_ok('SELECT compliance.consistency_proof(5, 4)', 'AC073', NULL, 'size1 > size2 with size2 given: AC073');

SELECT is(compliance.tree_root(), compliance.tree_root(5), 'tree_root() is the root of every chained event');
SELECT is(compliance.tree_root(1),
          compliance._tree_leaf((SELECT sha256(compliance._row_record(e)) FROM compliance.audit_events AS e WHERE e.seq = 1)),
          'the root of one event is the leaf hash of its record digest');
SELECT is(compliance.inclusion_proof(1, 1), '{}'::bytea[], 'the proof for the only leaf is empty');
SELECT is(compliance.consistency_proof(5), '{}'::bytea[], 'a tree is consistent with itself by the empty proof');
SELECT is(compliance.consistency_proof(4, 5), ARRAY[compliance._tree_leaf(
              (SELECT sha256(compliance._row_record(e)) FROM compliance.audit_events AS e WHERE e.seq = 5))],
          'from 4 to 5 leaves the proof is the new leaf alone (the old root is complete)');
SELECT is(compliance.inclusion_proof(5), ARRAY[compliance.tree_root(4)],
          'the path of the fifth leaf is its sibling subtree, the root of the first four');

SELECT * FROM finish();
ROLLBACK;
