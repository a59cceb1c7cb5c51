-- tenant_tree_root, tenant_inclusion_proof, tenant_consistency_proof and tenant_head_proof refuse bad input with
-- their own SQLSTATEs (docs/api.md): AC100 a string that cannot be a tenant id (so '' never
-- reaches the tree of the events without a tenant), AC101 a tenant tree size negative or
-- beyond the tenant's events, AC102 a seq that is not a chained event or lies beyond the
-- requested size, AC103 a head proof for a tenant without events; AC072/AC073 as
-- consistency_proof. Valid edge cases give the RFC answers.
BEGIN;
SELECT plan(20);

SELECT compliance.emit('auth.login', 'user-' || g, '{}', CASE WHEN g % 2 = 0 THEN 'acme' END)
  FROM generate_series(1, 5) AS g;
SELECT compliance.drain();

SELECT throws_ok($$SELECT compliance.tenant_tree_root('')$$, 'AC100', NULL, 'an empty tenant id: AC100');
SELECT throws_ok($$SELECT compliance.tenant_tree_root(repeat('x', 129))$$, 'AC100', NULL, 'a tenant id over 128 characters: AC100');
SELECT throws_ok($$SELECT compliance.tenant_consistency_proof(E'a\tb', 1)$$, 'AC100', NULL, 'a control character: AC100');
SELECT throws_ok($$SELECT compliance.tenant_tree_root('acme', 3)$$, 'AC101', NULL, 'beyond the tenant''s 2 events: AC101');
SELECT throws_ok($$SELECT compliance.tenant_tree_root('acme', -1)$$, 'AC101', NULL, 'a negative size: AC101');
SELECT throws_ok($$SELECT compliance.tenant_tree_root('nobody', 1)$$, 'AC101', NULL, 'a tenant without events has only size 0: AC101');
SELECT throws_ok($$SELECT * FROM compliance.tenant_inclusion_proof(6)$$, 'AC102', NULL, 'a seq not chained yet: AC102');
SELECT throws_ok($$SELECT * FROM compliance.tenant_inclusion_proof(NULL)$$, 'AC102', NULL, 'a NULL seq: AC102');
SELECT throws_ok($$SELECT * FROM compliance.tenant_inclusion_proof(4, 1)$$, 'AC102', NULL, 'the tenant''s second event is beyond its tree of 1: AC102');
SELECT throws_ok($$SELECT compliance.tenant_consistency_proof('acme', 0)$$, 'AC072', NULL, 'from the empty tree: AC072');
SELECT throws_ok($$SELECT compliance.tenant_consistency_proof(NULL, 3, 2)$$, 'AC073', NULL, 'size1 > size2: AC073');
SELECT throws_ok($$SELECT * FROM compliance.tenant_head_proof('nobody')$$, 'AC103', NULL, 'no head for a tenant without events: AC103');
SELECT throws_ok($$SELECT * FROM compliance.tenant_head_proof('')$$, 'AC100', NULL, 'head proof for an empty tenant id: AC100');
SELECT results_eq($$SELECT tree_size, tenants, head_index, tenant_tree_size FROM compliance.tenant_head_proof('acme')$$,
                  $$VALUES (5::bigint, 2::bigint, 1::bigint, 2::bigint)$$,
                  'acme''s head is the second of two, after the events without a tenant');

SELECT is(compliance.tenant_tree_root('nobody'), sha256(''), 'a tenant without events has the empty tree''s root');
SELECT is(compliance.tenant_tree_root('acme', 1),
          compliance._tree_leaf(sha256(compliance._row_record(e))), 'a tree of one leaf has that leaf''s hash as root')
  FROM compliance.audit_events AS e WHERE e.seq = 2;
SELECT is(compliance.tenant_tree_root(NULL), compliance._tree_fold(ARRAY(
              SELECT compliance._tree_leaf(sha256(compliance._row_record(e))) FROM compliance.audit_events AS e
               WHERE e.tenant_id IS NULL ORDER BY e.seq)),
          'NULL names the tree of the events without a tenant (seq 1, 3, 5)');
SELECT results_eq($$SELECT tenant_id, leaf_index, tenant_tree_size, cardinality(proof) FROM compliance.tenant_inclusion_proof(5)$$,
                  $$VALUES (NULL::text, 2::bigint, 3::bigint, 1)$$, 'seq 5 is leaf 2 of the tree of 3 events without a tenant: one sibling, the root of leaves 0-1');
SELECT is(compliance.tenant_consistency_proof('acme', 2), '{}'::bytea[], 'a tree is consistent with itself by an empty proof');
SELECT is((SELECT ok FROM compliance.verify_tree()), true, 'verify_tree agrees with the tenant heads');

SELECT * FROM finish();
ROLLBACK;
