-- Shared building blocks: UUIDv7, the append-only guard reused by every protected table.
SET LOCAL search_path = pg_catalog, pg_temp;

-- compliance._uuidv7(): a time-ordered UUID (RFC 9562 version 7) from the wall clock and
-- gen_random_uuid(); PostgreSQL 15 has no built-in. Touches no table.
CREATE OR REPLACE FUNCTION compliance._uuidv7()
RETURNS uuid
LANGUAGE sql
VOLATILE
PARALLEL SAFE
RETURN pg_catalog.encode(
    pg_catalog.set_bit(
        pg_catalog.set_bit(
            pg_catalog.overlay(
                pg_catalog.uuid_send(pg_catalog.gen_random_uuid()),
                pg_catalog.substr(
                    pg_catalog.int8send(
                        pg_catalog.floor(
                            EXTRACT(EPOCH FROM pg_catalog.clock_timestamp()) * 1000
                        )::bigint
                    ), 3
                ), 1, 6
            ), 52, 1
        ), 53, 1
    ), 'hex'
)::uuid;
COMMENT ON FUNCTION compliance._uuidv7() IS
'Internal: A version-7 UUID: 48-bit Unix milliseconds then random bits, so ids sort by creation time.';

-- compliance._forbid_change(): trigger function that refuses the statement it guards.
-- Attached BEFORE UPDATE/DELETE (row) and BEFORE TRUNCATE (statement) by
-- compliance._protect_table, and ENABLE ALWAYS so session_replication_role = replica
-- does not silence it.
CREATE OR REPLACE FUNCTION compliance._forbid_change()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION '%.% is append-only: % is not allowed', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'AC020',
              HINT = 'Audit records are immutable; see docs/runbook.md for corrections.';
END;
$$;
COMMENT ON FUNCTION compliance._forbid_change() IS
'Internal: trigger: raises AC020 for the guarded operation (UPDATE, DELETE or TRUNCATE) on an append-only table.';

-- compliance._protect_table(table, forbid_update): attach the append-only guard to a table.
-- DELETE and TRUNCATE are always refused; UPDATE too unless the table has its own
-- transition trigger (anchors, export_jobs). Idempotent.
CREATE OR REPLACE FUNCTION compliance._protect_table(target regclass, forbid_update boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_events text := CASE WHEN _protect_table.forbid_update THEN 'UPDATE OR DELETE' ELSE 'DELETE' END;
BEGIN
    EXECUTE pg_catalog.format(
        'CREATE OR REPLACE TRIGGER forbid_row_change BEFORE %s ON %s '
        'FOR EACH ROW EXECUTE FUNCTION compliance._forbid_change()', v_events, _protect_table.target);
    EXECUTE pg_catalog.format(
        'CREATE OR REPLACE TRIGGER forbid_truncate BEFORE TRUNCATE ON %s '
        'FOR EACH STATEMENT EXECUTE FUNCTION compliance._forbid_change()', _protect_table.target);
    EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ALWAYS TRIGGER forbid_row_change', _protect_table.target);
    EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ALWAYS TRIGGER forbid_truncate', _protect_table.target);
END;
$$;
COMMENT ON FUNCTION compliance._protect_table(regclass, boolean) IS
'Internal: attaches the _forbid_change guard (ENABLE ALWAYS) to a table: DELETE and TRUNCATE, and UPDATE when asked.';
