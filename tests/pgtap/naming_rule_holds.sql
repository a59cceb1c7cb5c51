-- The SQL conventions of docs/api.md ("Conventions"), checked on the catalog so that they
-- also hold for whatever is added later: parameters have no prefix, internal helpers start
-- with an underscore and are granted to nobody, public routines are documented, and every
-- SECURITY DEFINER routine pins its search_path.
BEGIN;
SELECT plan(6);

SELECT is_empty(
    $$SELECT p.oid::regprocedure, a.name
        FROM pg_proc AS p, unnest(p.proargnames) AS a (name)
       WHERE p.pronamespace = 'compliance'::regnamespace AND a.name LIKE 'p\_%'$$,
    'no routine in schema compliance has a parameter named p_...'
);
SELECT is_empty(
    $$SELECT p.oid::regprocedure, acl.grantee::regrole
        FROM pg_proc AS p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) AS acl
       WHERE p.pronamespace = 'compliance'::regnamespace AND p.proname LIKE '\_%'
         AND acl.privilege_type = 'EXECUTE' AND acl.grantee <> p.proowner$$,
    'no internal helper (name starting with _) is executable by PUBLIC or any role but its owner'
);
SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc AS p
       WHERE p.pronamespace = 'compliance'::regnamespace AND p.proname LIKE '\_%'
         AND coalesce(obj_description(p.oid, 'pg_proc'), '') NOT LIKE 'Internal: %'$$,
    'every internal helper''s comment starts with "Internal:"'
);
SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc AS p
       WHERE p.pronamespace = 'compliance'::regnamespace AND p.proname NOT LIKE '\_%'
         AND (coalesce(obj_description(p.oid, 'pg_proc'), '') = ''
              OR obj_description(p.oid, 'pg_proc') LIKE 'Internal:%')
         AND NOT EXISTS (SELECT 1 FROM pg_depend AS d WHERE d.objid = p.oid AND d.deptype = 'e')$$,
    'every public routine has a comment, and it does not call itself internal'
);
SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc AS p
       WHERE p.pronamespace = 'compliance'::regnamespace AND p.prosecdef
         AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY(p.proconfig), false)$$,
    'every SECURITY DEFINER routine pins search_path = pg_catalog, pg_temp'
);
-- The rule itself can fail: a routine that breaks it is seen by the same query.
CREATE FUNCTION compliance._naming_probe(p_x integer) RETURNS integer LANGUAGE sql RETURN p_x;
SELECT isnt_empty(
    $$SELECT 1 FROM pg_proc AS p, unnest(p.proargnames) AS a (name)
       WHERE p.pronamespace = 'compliance'::regnamespace AND a.name LIKE 'p\_%'
         AND p.proacl IS NULL AND p.proname = '_naming_probe'$$,
    'a p_ parameter and a default PUBLIC grant on a helper are visible to the checks above'
);

SELECT * FROM finish();
ROLLBACK;
