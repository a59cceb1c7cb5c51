-- The tree's hashing reproduces the classic RFC 6962 test vectors (transparency-dev/merkle,
-- google/trillian; ../shared/reference/transparency/README.md): the roots of the first n of
-- the 8 reference leaf inputs for n = 1..8, and SHA-256('') for the empty tree. Real leaves
-- are record digests, so the inputs go through the same leaf and fold helpers tree_root and
-- the drainer use.
BEGIN;
SELECT plan(11);

CREATE TEMP TABLE rfc (n integer, root text) ON COMMIT DROP;
INSERT INTO rfc VALUES
    (1, '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d'),
    (2, 'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125'),
    (3, 'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77'),
    (4, 'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7'),
    (5, '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4'),
    (6, '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef'),
    (7, 'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c'),
    (8, '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328');

CREATE TEMP TABLE leaf_input (i integer, data bytea) ON COMMIT DROP;
INSERT INTO leaf_input
SELECT o.i::integer, decode(o.hex, 'hex')
  FROM unnest(ARRAY['', '00', '10', '2021', '3031', '40414243', '5051525354555657',
                    '606162636465666768696a6b6c6d6e6f']) WITH ORDINALITY AS o (hex, i);

-- 1-8
SELECT is(encode(compliance._tree_fold(ARRAY(SELECT compliance._tree_leaf(l.data) FROM leaf_input AS l
                                              WHERE l.i <= r.n ORDER BY l.i)), 'hex'),
          r.root, pg_catalog.format('the root of the first %s RFC 6962 leaves', r.n))
  FROM rfc AS r ORDER BY r.n;

SELECT is(compliance._tree_fold('{}'), sha256(''), 'the empty tree hashes to SHA-256 of nothing');
SELECT is(compliance.tree_root(0), sha256(''), 'tree_root(0) is SHA-256 of nothing');
-- The right-edge fold of a compact range gives the same root as the full fold: 7 leaves are
-- the complete subtrees of 4, 2 and 1 leaves.
SELECT is(compliance._tree_fold_right(ARRAY[
              compliance._tree_fold(ARRAY(SELECT compliance._tree_leaf(l.data) FROM leaf_input AS l WHERE l.i <= 4 ORDER BY l.i)),
              compliance._tree_fold(ARRAY(SELECT compliance._tree_leaf(l.data) FROM leaf_input AS l WHERE l.i IN (5, 6) ORDER BY l.i)),
              compliance._tree_leaf((SELECT l.data FROM leaf_input AS l WHERE l.i = 7))]),
          decode('ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c', 'hex'),
          'the compact range of 7 leaves folds to the RFC root of 7');

SELECT * FROM finish();
ROLLBACK;
