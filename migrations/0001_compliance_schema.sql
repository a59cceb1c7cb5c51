-- The compliance schema and the runner's own bookkeeping.
-- creates: compliance
-- creates: compliance.schema_migrations

DO $encoding$
BEGIN
    -- The canonical record measures text in bytes; that is only UTF-8 in a UTF-8 database.
    IF pg_catalog.getdatabaseencoding() <> 'UTF8' THEN
        RAISE EXCEPTION 'auditchain needs a UTF8 database, not %', pg_catalog.getdatabaseencoding();
    END IF;
END
$encoding$;

CREATE SCHEMA compliance;
COMMENT ON SCHEMA compliance IS
'auditchain: tamper-evident compliance audit log (outbox, hash-chained events, anchors, exports).';
REVOKE ALL ON SCHEMA compliance FROM PUBLIC;

CREATE TABLE compliance.schema_migrations (
    filename text PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('migration', 'definition')),
    checksum text NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
    applied_at timestamptz NOT NULL DEFAULT now(),
    applied_by text NOT NULL DEFAULT current_user
);
COMMENT ON TABLE compliance.schema_migrations IS
'One row per schema file applied by `auditchain migrate` (or the make dist installer).';
COMMENT ON COLUMN compliance.schema_migrations.filename IS
'migrations/NNNN_*.sql (applied once) or sql/NN_*.sql (re-applied when changed).';
COMMENT ON COLUMN compliance.schema_migrations.kind IS
'migration: versioned, applied once; definition: re-appliable functions, triggers and grants.';
COMMENT ON COLUMN compliance.schema_migrations.checksum IS
'SHA-256 (hex) of the file text as applied; an applied migration whose file changes is refused.';
COMMENT ON COLUMN compliance.schema_migrations.applied_at IS 'When this version of the file was applied.';
COMMENT ON COLUMN compliance.schema_migrations.applied_by IS 'The role that applied it.';
