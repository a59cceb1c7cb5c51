-- A database upgraded from a version without the tree already holds chained events: applying
-- the definitions builds the tree for them (compliance._tree_catch_up, run by sql/47), equal
-- to the tree the drainer builds, and the drainer goes on from there. An acknowledged halt
-- over rows written outside the drainer brings them into the tree; a cut tail the tree
-- already committed to cannot be acknowledged away.
BEGIN;
SELECT plan(8);

SELECT compliance.emit('auth.login', 'user-' || g) FROM generate_series(1, 700) AS g;
SELECT compliance.drain();
CREATE TEMP TABLE built AS
SELECT compliance.tree_root() AS root, (SELECT array_agg(n.roots ORDER BY n.chunk) FROM compliance.merkle_nodes AS n) AS nodes;

-- What a database chained before the tree existed looks like.
ALTER TABLE compliance.merkle_nodes DISABLE TRIGGER forbid_row_change;
ALTER TABLE compliance.merkle_nodes DISABLE TRIGGER forbid_truncate;
TRUNCATE compliance.merkle_nodes;
ALTER TABLE compliance.merkle_nodes ENABLE ALWAYS TRIGGER forbid_row_change;
ALTER TABLE compliance.merkle_nodes ENABLE ALWAYS TRIGGER forbid_truncate;
UPDATE compliance.drainer_state SET tree_size = 0, tree_frontier = '{}';
SELECT throws_ok('SELECT compliance.drain()', 'AC010',
                 'chain head check failed at seq 700: the Merkle tree holds 0 leaves, not one per chained event',
                 'the drainer refuses to extend a chain its tree does not cover');

SELECT is(compliance._tree_catch_up(), 700::bigint, 'the catch-up adds every chained event');
SELECT is(compliance.tree_root(), (SELECT root FROM built), 'to the same root the drainer built');
SELECT is((SELECT array_agg(n.roots ORDER BY n.chunk) FROM compliance.merkle_nodes AS n), (SELECT nodes FROM built),
          'and the same stored nodes');
SELECT is(compliance._tree_catch_up(), 0::bigint, 'a second catch-up has nothing to do');

SELECT compliance.emit('auth.login', 'later');
SELECT is(compliance.drain(), 1, 'the drainer goes on');
SELECT row_eq('SELECT * FROM compliance.verify_tree()', ROW(true, 701::bigint, NULL::text), 'and the tree verifies');

-- A cut tail: the tree still commits to seq 701.
ALTER TABLE compliance.audit_events DISABLE TRIGGER forbid_row_change;
DELETE FROM compliance.audit_events WHERE seq = 701;
ALTER TABLE compliance.audit_events ENABLE ALWAYS TRIGGER forbid_row_change;
SELECT compliance.record_halt();
SELECT throws_ok($$SELECT compliance.acknowledge_integrity_failure(700, 'INC-3: tail removed')$$, 'AC012',
                 'the Merkle tree commits to 701 events but the chain ends at seq 700: a removed tail cannot be resumed over',
                 'a removed tail the tree covers cannot be acknowledged');

SELECT * FROM finish();
ROLLBACK;
