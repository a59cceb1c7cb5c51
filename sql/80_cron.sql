-- pg_cron scheduling: this database's jobs, installed and removed idempotently, and their
-- health. pg_cron lives in one database (cron.database_name); when that is another one,
-- every call to pg_cron goes through dblink (migration 0006). Job names are
-- auditchain:<database>:<job>, so several audit databases share one pg_cron.
SET LOCAL search_path = pg_catalog, pg_temp;

-- compliance._cron_job_prefix(): 'auditchain:<this database>:', the start of every job name
-- of this database. Touches no table.
CREATE OR REPLACE FUNCTION compliance._cron_job_prefix()
RETURNS text
LANGUAGE sql
STABLE
PARALLEL SAFE
RETURN pg_catalog.format('auditchain:%s:', pg_catalog.current_database());
COMMENT ON FUNCTION compliance._cron_job_prefix() IS
'Internal: the start of every pg_cron job name of this database: auditchain:<database>:.';

-- compliance.cron_jobs(): the jobs this database needs, as schedule_jobs() installs them.
-- The purge job runs in pg_cron's database, where cron.job_run_details lives. Touches no
-- table.
CREATE OR REPLACE FUNCTION compliance.cron_jobs()
RETURNS TABLE (jobname text, job text, schedule text, command text, database_name text, entry_point text)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT compliance._cron_job_prefix() || j.job,
           j.job,
           j.schedule,
           j.command,
           coalesce(j.database_name, pg_catalog.current_database()::text COLLATE pg_catalog."default"),
           j.entry_point
      FROM (
          VALUES
              -- Exactly one CALL: pg_cron lets a procedure COMMIT only when it is the whole command.
              ('drain', '* * * * *', 'CALL compliance.run_drainer()', NULL, 'run_drainer'),
              ('verify', '* * * * *', 'SELECT compliance.verify_new_events()', NULL, 'verify_new_events'),
              -- The minute samples behind the status sparklines (outbox depth, drain rate).
              ('sample', '* * * * *', 'SELECT compliance.record_activity_sample()', NULL, 'record_activity_sample'),
              ('anchor', '*/15 * * * *', 'SELECT compliance.create_anchor()', NULL, 'create_anchor'),
              -- Halfway between anchors: each anchor's checkpoint covers the heads committed before it.
              ('tenant-heads', '7,22,37,52 * * * *', 'SELECT compliance.commit_tenant_heads()', NULL,
               'commit_tenant_heads'),
              ('reconcile-exports', '*/5 * * * *', 'SELECT compliance.reconcile_exports()', NULL,
               'reconcile_exports'),
              -- pg_cron never purges its run log; keep a week of this database's runs.
              ('purge-run-details', '17 * * * *',
               pg_catalog.format(
                   'DELETE FROM cron.job_run_details WHERE jobid IN (SELECT jobid FROM cron.job '
                   'WHERE pg_catalog.starts_with(jobname::text, %L)) '
                   'AND coalesce(end_time, start_time) < pg_catalog.now() - interval ''7 days''',
                   compliance._cron_job_prefix()
               ),
               pg_catalog.current_setting('cron.database_name', true), NULL)
      ) AS j (job, schedule, command, database_name, entry_point);
$$;
COMMENT ON FUNCTION compliance.cron_jobs() IS
'The pg_cron jobs of this database (name auditchain:<database>:<job>, schedule, command, database it runs in, the compliance function it calls).';

-- compliance._cron_conninfo(): how dblink reaches pg_cron's database. The database-level
-- setting auditchain.cron_conninfo (a libpq connection string or a dblink foreign server
-- name) wins; only ALTER DATABASE sets it, so a session cannot redirect SECURITY DEFINER
-- callers. Otherwise: this server's first Unix socket, as the current role. Touches no table.
CREATE OR REPLACE FUNCTION compliance._cron_conninfo()
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(
        (SELECT substr(c.setting, pg_catalog.length('auditchain.cron_conninfo=') + 1)
           FROM pg_catalog.pg_db_role_setting AS s
          CROSS JOIN LATERAL pg_catalog.unnest(s.setconfig) AS c (setting)
          WHERE s.setrole = 0
            AND s.setdatabase = (SELECT d.oid FROM pg_catalog.pg_database AS d
                                  WHERE d.datname = pg_catalog.current_database())
            AND pg_catalog.starts_with(c.setting, 'auditchain.cron_conninfo=')),
        (SELECT pg_catalog.string_agg(
                    kv.key || '=''' || pg_catalog.replace(pg_catalog.replace(kv.value, '\', '\\'), '''', '\''')
                    || '''', ' ')
           FROM (VALUES
                     ('host', coalesce(nullif(pg_catalog.btrim(pg_catalog.split_part(
                                  pg_catalog.current_setting('unix_socket_directories'), ',', 1)), ''),
                              'localhost')),
                     ('port', pg_catalog.current_setting('port')),
                     ('dbname', pg_catalog.current_setting('cron.database_name', true)),
                     ('user', CURRENT_USER::text)
                ) AS kv (key, value))
    );
$$;
COMMENT ON FUNCTION compliance._cron_conninfo() IS
'Internal: connection string (or foreign server name) dblink uses to reach pg_cron''s database; ALTER DATABASE ... SET auditchain.cron_conninfo overrides it.';

-- compliance._cron_exec(query, manual_statements): run one query in pg_cron's database,
-- here when that is this database, else through dblink, and return its rows as jsonb.
-- Raises AC050 when pg_cron is unavailable, AC051 when dblink would be needed but is not
-- installed (the HINT gives manual_statements to run by hand), AC052 when the cron
-- database cannot be reached. Touches: cron.* in pg_cron's database, as the query says.
CREATE OR REPLACE FUNCTION compliance._cron_exec(query text, manual_statements text)
RETURNS SETOF jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_cron_database text := nullif(pg_catalog.current_setting('cron.database_name', true), '');
    v_dblink_schema name;
    v_state text;
    v_message text;
    v_detail text;
BEGIN
    IF v_cron_database IS NULL THEN
        RAISE EXCEPTION 'pg_cron is not loaded in this server'
            USING ERRCODE = 'AC050',
                  HINT = 'Add pg_cron to shared_preload_libraries, set cron.database_name, restart, and run '
                         'CREATE EXTENSION pg_cron in that database.';
    END IF;
    IF v_cron_database = pg_catalog.current_database() THEN
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
            RAISE EXCEPTION 'pg_cron is loaded but its extension is not created in database %', v_cron_database
                USING ERRCODE = 'AC050', HINT = 'Run CREATE EXTENSION pg_cron; in this database.';
        END IF;
        RETURN QUERY EXECUTE 'SELECT pg_catalog.to_jsonb(q) FROM (' || _cron_exec.query || ') AS q';
        RETURN;
    END IF;

    SELECT n.nspname INTO v_dblink_schema
      FROM pg_catalog.pg_extension AS e
      JOIN pg_catalog.pg_namespace AS n ON n.oid = e.extnamespace
     WHERE e.extname = 'dblink';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pg_cron runs in database % and the dblink extension is not installed in database %',
            v_cron_database, pg_catalog.current_database()
            USING ERRCODE = 'AC051',
                  HINT = pg_catalog.format(
                      E'Run in database %s as the role that should own the jobs:\n%s\n'
                      'or install dblink here (CREATE EXTENSION dblink SCHEMA compliance_dblink;) and call again.',
                      v_cron_database, _cron_exec.manual_statements);
    END IF;
    BEGIN
        RETURN QUERY EXECUTE pg_catalog.format('SELECT r.doc::jsonb FROM %I.dblink($1, $2) AS r (doc text)',
                                               v_dblink_schema)
            USING compliance._cron_conninfo(),
                  'SELECT pg_catalog.to_jsonb(q)::text FROM (' || _cron_exec.query || ') AS q';
    EXCEPTION
        WHEN connection_exception THEN
            GET STACKED DIAGNOSTICS v_message = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL;
            RAISE EXCEPTION 'cannot reach pg_cron''s database %: % %', v_cron_database, v_message,
                coalesce(v_detail, '')
                USING ERRCODE = 'AC052',
                      HINT = 'Set a working connection string or dblink foreign server name with ALTER DATABASE '
                             || pg_catalog.quote_ident(pg_catalog.current_database())
                             || ' SET auditchain.cron_conninfo = ''...''; (docs/api.md, Scheduling).';
        WHEN invalid_schema_name OR undefined_table THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT;
            RAISE EXCEPTION 'pg_cron is not installed in database %: % (SQLSTATE %)', v_cron_database,
                v_message, v_state
                USING ERRCODE = 'AC050', HINT = 'Run CREATE EXTENSION pg_cron; in database ' || v_cron_database || '.';
    END;
END;
$$;
COMMENT ON FUNCTION compliance._cron_exec(text, text) IS
'Internal: runs one query in pg_cron''s database (directly or through dblink) and returns its rows as jsonb; AC050-AC052 when it cannot.';

-- compliance._cron_manual_schedule(): the statements an operator runs in pg_cron's database
-- to install this database's jobs by hand (the HINT of AC051). Touches no table.
CREATE OR REPLACE FUNCTION compliance._cron_manual_schedule()
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.string_agg(
               pg_catalog.format('SELECT cron.schedule_in_database(%L, %L, %L, %L);',
                                 j.jobname, j.schedule, j.command, j.database_name),
               E'\n' ORDER BY j.jobname)
      FROM compliance.cron_jobs() AS j;
$$;
COMMENT ON FUNCTION compliance._cron_manual_schedule() IS
'Internal: the cron.schedule_in_database statements that install this database''s jobs by hand.';

-- compliance.schedule_jobs(): install this database's pg_cron jobs, or bring existing ones
-- up to date, as the current role (the jobs run as that role: a LOGIN role allowed to call
-- every job's function, normally the schema owner). Idempotent. Jobs whose function is not
-- installed yet are skipped with a WARNING; call again after the upgrade that adds it. Other
-- jobs named auditchain:<this database>:* are removed. Through dblink the change commits in
-- pg_cron's database at once, whatever becomes of the caller's transaction.
-- Returns the number of jobs scheduled. Touches: cron.job (through pg_cron's functions).
CREATE OR REPLACE FUNCTION compliance.schedule_jobs()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_prefix text := compliance._cron_job_prefix();
    v_desired text;
    v_count integer := 0;
    v_job record;
BEGIN
    FOR v_job IN
        SELECT j.*,
               j.entry_point IS NULL
               OR EXISTS (SELECT 1 FROM pg_catalog.pg_proc AS p
                           WHERE p.pronamespace = 'compliance'::regnamespace AND p.proname = j.entry_point)
                   AS installed
          FROM compliance.cron_jobs() AS j
    LOOP
        IF pg_catalog.octet_length(v_job.jobname) > 63 THEN
            RAISE EXCEPTION 'job name % is longer than the 63 bytes pg_cron keeps', v_job.jobname
                USING ERRCODE = 'AC053', HINT = 'Use a database name of at most 34 bytes.';
        END IF;
        IF v_job.installed THEN
            v_desired := pg_catalog.concat_ws(', ', v_desired, pg_catalog.format('(%L, %L, %L, %L)',
                v_job.jobname, v_job.schedule, v_job.command, v_job.database_name));
            v_count := v_count + 1;
        ELSE
            RAISE WARNING 'not scheduling %: compliance.%() is not installed in this database', v_job.jobname,
                v_job.entry_point;
        END IF;
    END LOOP;

    -- One statement in pg_cron's database: drop strays, fix drifted jobs (cron.schedule_in_database
    -- on an existing name keeps its old database, so drift goes through cron.alter_job), add missing.
    PERFORM compliance._cron_exec(pg_catalog.format($q$
        WITH desired (jobname, schedule, command, database) AS (VALUES %s),
        existing AS (
            SELECT j.jobid, j.jobname::text AS jobname, j.schedule, j.command, j.database, j.username, j.active
              FROM cron.job AS j
             WHERE pg_catalog.starts_with(j.jobname::text, %L)
        ),
        dropped AS (
            SELECT cron.unschedule(e.jobid) AS done
              FROM existing AS e
             WHERE NOT EXISTS (SELECT 1 FROM desired AS d
                                WHERE d.jobname = e.jobname AND e.username = CURRENT_USER)
        ),
        changed AS (
            SELECT cron.alter_job(e.jobid, d.schedule, d.command, d.database, NULL, true) AS done
              FROM existing AS e
              JOIN desired AS d ON d.jobname = e.jobname
             WHERE e.username = CURRENT_USER
               AND (e.schedule, e.command, e.database, e.active)
                   IS DISTINCT FROM (d.schedule, d.command, d.database, true)
        ),
        added AS (
            SELECT cron.schedule_in_database(d.jobname, d.schedule, d.command, d.database) AS jobid
              FROM desired AS d
             WHERE NOT EXISTS (SELECT 1 FROM existing AS e
                                WHERE e.jobname = d.jobname AND e.username = CURRENT_USER)
        )
        SELECT (SELECT pg_catalog.count(*) FROM dropped) AS dropped,
               (SELECT pg_catalog.count(*) FROM changed) AS changed,
               (SELECT pg_catalog.count(*) FROM added) AS added
        $q$, v_desired, v_prefix),
        compliance._cron_manual_schedule());
    RETURN v_count;
END;
$$;
COMMENT ON FUNCTION compliance.schedule_jobs() IS
'Installs or updates this database''s pg_cron jobs (compliance.cron_jobs()), idempotently, to run as the current role; returns how many are scheduled.';

-- compliance.unschedule_jobs(): remove every pg_cron job named auditchain:<this database>:*
-- and stop their runs still in progress (pg_cron would let them run on, which keeps
-- sessions open in this database; every job is safe to interrupt). Idempotent. Returns the
-- number of jobs removed. Touches: cron.job, cron.job_run_details (read), running jobs' backends.
CREATE OR REPLACE FUNCTION compliance.unschedule_jobs()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_prefix text := compliance._cron_job_prefix();
    v_removed integer;
BEGIN
    SELECT (r.doc ->> 'removed')::integer INTO STRICT v_removed
      FROM compliance._cron_exec(pg_catalog.format($q$
        WITH ours AS (
            SELECT j.jobid FROM cron.job AS j WHERE pg_catalog.starts_with(j.jobname::text, %L)
        ),
        stopped AS (
            -- Whatever the run's recorded status (pg_cron 1.4 may already call a run that
            -- goes on "failed"), but only a pg_cron session that started for that very run,
            -- since a job_pid can be reused; pg_cron gives a run 10 seconds to start.
            SELECT pg_catalog.pg_terminate_backend(a.pid) AS done
              FROM cron.job_run_details AS d
              JOIN pg_catalog.pg_stat_activity AS a
                ON a.pid = d.job_pid AND a.datname = d.database
               AND a.backend_start BETWEEN d.start_time - interval '10 seconds'
                                       AND d.start_time + interval '10 seconds'
             WHERE d.jobid IN (SELECT o.jobid FROM ours AS o)
               AND 'pg_cron' IN (a.backend_type, a.application_name)
        ),
        removed AS (
            SELECT cron.unschedule(o.jobid) AS done FROM ours AS o
        )
        SELECT (SELECT pg_catalog.count(*) FROM stopped) AS stopped,
               (SELECT pg_catalog.count(*) FROM removed) AS removed
        $q$, v_prefix),
        pg_catalog.format('SELECT cron.unschedule(jobid) FROM cron.job WHERE starts_with(jobname::text, %L);',
                          v_prefix)) AS r (doc);
    RETURN v_removed;
END;
$$;
COMMENT ON FUNCTION compliance.unschedule_jobs() IS
'Removes this database''s pg_cron jobs and stops their runs in progress, idempotently; returns how many jobs were removed.';

-- compliance.cron_job_health(): one row per job of compliance.cron_jobs(): whether it is
-- scheduled, its last run and failures in the last hour, read from pg_cron (here or through
-- dblink). For compliance.metrics() and operators; raises AC050-AC052 when pg_cron cannot
-- be read. SECURITY DEFINER: pg_cron shows each role only its own jobs.
-- Touches: cron.job, cron.job_run_details (read).
CREATE OR REPLACE FUNCTION compliance.cron_job_health()
RETURNS TABLE (
    jobname text,
    job text,
    database_name text,
    scheduled boolean,
    jobid bigint,
    active boolean,
    last_status text,
    last_started_at timestamptz,
    last_ended_at timestamptz,
    last_message text,
    last_succeeded_at timestamptz,
    runs_last_hour bigint,
    failures_last_hour bigint
)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH observed AS (
        SELECT o.*
          FROM compliance._cron_exec(
                   pg_catalog.format($q$
                       WITH ours AS (
                           SELECT j.jobid, j.jobname::text AS jobname, j.active
                             FROM cron.job AS j
                            WHERE pg_catalog.starts_with(j.jobname::text, %L)
                       ),
                       recent AS (
                           SELECT d.jobid,
                                  pg_catalog.count(*) AS runs,
                                  pg_catalog.count(*) FILTER (WHERE d.status = 'failed') AS failures
                             FROM cron.job_run_details AS d
                            WHERE d.jobid IN (SELECT o.jobid FROM ours AS o)
                              AND d.start_time > pg_catalog.now() - interval '1 hour'
                            GROUP BY d.jobid
                       )
                       SELECT o.jobid, o.jobname, o.active, l.status, l.start_time, l.end_time,
                              l.return_message, s.end_time AS succeeded_at,
                              coalesce(r.runs, 0) AS runs, coalesce(r.failures, 0) AS failures
                         FROM ours AS o
                         LEFT JOIN LATERAL (
                             SELECT d.status, d.start_time, d.end_time, d.return_message
                               FROM cron.job_run_details AS d
                              WHERE d.jobid = o.jobid
                              ORDER BY d.runid DESC
                              LIMIT 1
                         ) AS l ON true
                         LEFT JOIN LATERAL (
                             SELECT d.end_time
                               FROM cron.job_run_details AS d
                              WHERE d.jobid = o.jobid AND d.status = 'succeeded'
                              ORDER BY d.runid DESC
                              LIMIT 1
                         ) AS s ON true
                         LEFT JOIN recent AS r ON r.jobid = o.jobid
                   $q$, compliance._cron_job_prefix()),
                   pg_catalog.format('SELECT j.jobname, d.* FROM cron.job AS j JOIN cron.job_run_details AS d '
                                     'USING (jobid) WHERE starts_with(j.jobname::text, %L) ORDER BY d.runid DESC;',
                                     compliance._cron_job_prefix())
               ) AS h (doc)
         CROSS JOIN LATERAL pg_catalog.jsonb_to_record(h.doc) AS o (
             jobid bigint, jobname text, active boolean, status text, start_time timestamptz,
             end_time timestamptz, return_message text, succeeded_at timestamptz, runs bigint, failures bigint
         )
    )
    SELECT c.jobname, c.job, c.database_name, o.jobid IS NOT NULL, o.jobid, o.active, o.status, o.start_time,
           o.end_time, o.return_message, o.succeeded_at, coalesce(o.runs, 0), coalesce(o.failures, 0)
      FROM compliance.cron_jobs() AS c
      LEFT JOIN observed AS o ON o.jobname = c.jobname
     ORDER BY c.jobname;
$$;
COMMENT ON FUNCTION compliance.cron_job_health() IS
'Per job of compliance.cron_jobs(): scheduled or not, last run (status, times, message), last success, runs and failures in the last hour.';
