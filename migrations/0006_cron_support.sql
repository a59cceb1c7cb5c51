-- What compliance.schedule_jobs() needs when this database is not pg_cron's own
-- (cron.database_name names another one): dblink, to call pg_cron's functions there.
-- dblink goes into a schema of its own, closed to PUBLIC, so that none of its functions
-- joins the compliance API or anyone's search_path. It is installed only where it is needed
-- and available; without it schedule_jobs() raises AC051 with the statements to run by hand.
-- creates: compliance_dblink

CREATE SCHEMA compliance_dblink;
COMMENT ON SCHEMA compliance_dblink IS
'auditchain: the dblink extension, used by compliance.schedule_jobs() to reach pg_cron in its own database.';
REVOKE ALL ON SCHEMA compliance_dblink FROM PUBLIC;

DO $dblink$
BEGIN
    IF pg_catalog.current_setting('cron.database_name', true) IS DISTINCT FROM pg_catalog.current_database()
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'dblink')
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'dblink') THEN
        BEGIN
            CREATE EXTENSION dblink SCHEMA compliance_dblink;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'dblink not installed: % (compliance.schedule_jobs() will print the statements '
                          'to run in the pg_cron database instead)', SQLERRM;
        END;
    END IF;
END
$dblink$;
