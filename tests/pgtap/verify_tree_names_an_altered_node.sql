-- verify_tree recomputes the Merkle tree from the stored events and names the first stored
-- node (level, index), head or recorded root that disagrees; the incremental verifier checks
-- the nodes of the events it verifies. Tampering is simulated by a superuser who disables
-- the append-only guard inside this rolled-back transaction.
BEGIN;
SELECT plan(15);

-- 1,100 events: chunks 0-3 complete (level 8 nodes 0-3, level 9 nodes 0-1, level 10 node 0)
-- and 76 leaves in the unfinished chunk 4.
SELECT compliance.emit('auth.login', 'user-' || g) FROM generate_series(1, 1100) AS g;
SELECT compliance.drain(333), compliance.drain(333), compliance.drain(1000);

SELECT row_eq('SELECT * FROM compliance.verify_tree()', ROW(true, 1100::bigint, NULL::text),
              'an intact tree verifies, every leaf checked');
SELECT is((SELECT array_agg(octet_length(n.roots) ORDER BY n.chunk) FROM compliance.merkle_nodes AS n),
          ARRAY[32, 64, 32, 96], 'chunk rows hold the level 8 node and each higher node they completed');

-- The verdict of verify_tree after the given statements, which are then rolled back.
CREATE FUNCTION pg_temp.verdict_after(statements text)
RETURNS TABLE (ok boolean, leaves_checked bigint, problem text)
LANGUAGE plpgsql
AS $$
BEGIN
    BEGIN
        ALTER TABLE compliance.merkle_nodes DISABLE TRIGGER forbid_row_change;
        ALTER TABLE compliance.audit_events DISABLE TRIGGER forbid_row_change;
        EXECUTE statements;
        RETURN QUERY SELECT * FROM compliance.verify_tree();
        RAISE EXCEPTION 'undo' USING ERRCODE = 'TT001';
    EXCEPTION WHEN SQLSTATE 'TT001' THEN
        RETURN;
    END;
END;
$$;

SELECT row_eq($$SELECT * FROM pg_temp.verdict_after(
                  'UPDATE compliance.merkle_nodes SET roots = sha256(''x'') WHERE chunk = 2')$$,
              ROW(false, 512::bigint, 'stored node level 8 index 2 differs from the events'::text),
              'a replaced level 8 node is named');
SELECT row_eq($$SELECT * FROM pg_temp.verdict_after(
                  'UPDATE compliance.merkle_nodes SET roots = substr(roots, 1, 64) || sha256(''x'') WHERE chunk = 3')$$,
              ROW(false, 768::bigint, 'stored node level 10 index 0 differs from the hash of its stored children'::text),
              'a replaced level 10 node is named');
SELECT row_eq($$SELECT * FROM pg_temp.verdict_after(
                  'UPDATE compliance.merkle_nodes SET roots = substr(roots, 1, 32) WHERE chunk = 1')$$,
              ROW(false, 256::bigint, 'stored nodes of chunk 1: 32 bytes where 64 are expected'::text),
              'a truncated row is named');
SELECT row_eq($$SELECT * FROM pg_temp.verdict_after('DELETE FROM compliance.merkle_nodes WHERE chunk = 0')$$,
              ROW(false, 0::bigint, 'stored node level 8 index 0 is missing'::text),
              'a removed node is named');
SELECT row_eq($$SELECT * FROM pg_temp.verdict_after(
                  'INSERT INTO compliance.merkle_nodes VALUES (4, sha256(''x''))')$$,
              ROW(false, 1024::bigint, 'stored node level 8 index 4 lies beyond the tree of 1100 leaves'::text),
              'a node beyond the tree is named');
SELECT row_eq($$SELECT * FROM pg_temp.verdict_after(
                  'UPDATE compliance.audit_events SET actor = ''mallory'' WHERE seq = 300')$$,
              ROW(false, 256::bigint, 'stored node level 8 index 1 differs from the events'::text),
              'an altered event is found under the node that covers it');
SELECT row_eq($$SELECT * FROM pg_temp.verdict_after(
                  'UPDATE compliance.audit_events SET actor = ''mallory'' WHERE seq = 1050')$$,
              ROW(false, 1100::bigint,
                  'root at tree size 1100 recorded by the drainer''s tree head (drainer_state) differs from the tree recomputed from the events'::text),
              'an altered event below level 8 is found through the head''s root');
SELECT row_eq($$SELECT * FROM pg_temp.verdict_after(
                  'UPDATE compliance.drainer_state SET tree_frontier[1] = sha256(''x'')')$$,
              ROW(false, 1100::bigint,
                  'root at tree size 1100 recorded by the drainer''s tree head (drainer_state) differs from the tree recomputed from the events'::text),
              'an altered compact range is named');
SELECT row_eq($$SELECT * FROM pg_temp.verdict_after('UPDATE compliance.drainer_state SET tree_size = 1099')$$,
              ROW(false, 0::bigint, 'the tree holds 1099 leaves but the drainer chained 1100 events'::text),
              'a tree size that differs from the chain is named');

-- The incremental verifier: a node it has not verified yet is checked with the events.
UPDATE compliance.verification_state SET verified_seq = 0;
ALTER TABLE compliance.merkle_nodes DISABLE TRIGGER forbid_row_change;
UPDATE compliance.merkle_nodes SET roots = substr(roots, 1, 32) || sha256('x') WHERE chunk = 1;
ALTER TABLE compliance.merkle_nodes ENABLE ALWAYS TRIGGER forbid_row_change;
SELECT compliance.verify_new_events();
SELECT row_eq('SELECT verified_seq, last_ok, first_bad_seq, problem FROM compliance.verification_state',
              ROW(511::bigint, false, 512::bigint,
                  'Merkle tree: stored node level 9 index 0 differs from the hash of its stored children'::text),
              'verify_new_events records the bad node at the seq that completed it and keeps the progress before');
SELECT ok(compliance.acknowledge_verification_failure(512, 'INC-2: test altered a node') IS NOT NULL,
          'the failure can be acknowledged at that seq');
SELECT compliance.verify_new_events();
SELECT row_eq('SELECT verified_seq, first_bad_seq, problem FROM compliance.verification_state',
              ROW(1023::bigint, 1024::bigint,
                  'Merkle tree: stored node level 10 index 0 differs from the hash of its stored children'::text),
              'its parent, computed by the drainer from the original, is reported next');
SELECT compliance.acknowledge_verification_failure(1024, 'INC-2: the parent of the altered node');
SELECT compliance.verify_new_events();
SELECT row_eq('SELECT verified_seq, last_ok FROM compliance.verification_state', ROW(1100::bigint, true),
              'verification then goes on past both');

SELECT * FROM finish();
ROLLBACK;
