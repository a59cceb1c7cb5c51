-- One naming rule for the functions of schema compliance (docs/api.md "Conventions"):
-- parameters have no prefix, and internal helpers (granted to no role) start with an
-- underscore. CREATE OR REPLACE can neither rename a function nor its parameters, so the
-- old signatures go here and sql/ creates the new ones right after the migrations.
-- Trigger functions are renamed in place instead: the triggers on the append-only tables
-- keep pointing at them and are never missing, not even between the two transactions.
-- Each function is touched only if present, so a fresh install (functions not yet
-- created) prints nothing.

DO $$
DECLARE
    v_pair text[];
    v_signature text;
BEGIN
    FOREACH v_pair SLICE 1 IN ARRAY ARRAY[
        ['compliance.forbid_change()', '_forbid_change'],
        ['compliance.guard_anchor_change()', '_guard_anchor_change'],
        ['compliance.export_jobs_guard()', '_export_jobs_guard']
    ] LOOP
        IF pg_catalog.to_regprocedure(v_pair[1]) IS NOT NULL
           AND pg_catalog.to_regprocedure('compliance.' || v_pair[2] || '()') IS NULL THEN
            EXECUTE pg_catalog.format('ALTER FUNCTION %s RENAME TO %I', v_pair[1], v_pair[2]);
        END IF;
    END LOOP;

    FOREACH v_signature IN ARRAY ARRAY[
        -- Dependents first: row_record and event_record have SQL-standard bodies that
        -- reference event_record, payload_digest and epoch_us.
        'compliance.row_record(compliance.audit_events)',
        'compliance.event_record(bigint, uuid, timestamptz, timestamptz, text, text, text, bytea)',
        'compliance.epoch_us(timestamptz)',
        'compliance.payload_digest(jsonb)',
        'compliance.event_hash(bytea, bytea)',
        'compliance.uuidv7()',
        'compliance.protect_table(regclass, boolean)',
        'compliance.is_event_type(text)',
        'compliance.check_chain_head(bigint, bytea)',
        'compliance.verify_range(bigint, bigint, bytea)',
        'compliance.claim_pending_anchors(integer)',
        'compliance.iso_utc(timestamptz)',
        'compliance.validate_export_filter(jsonb)',
        'compliance.export_filter_text_ok(jsonb, integer)',
        'compliance.export_filter_matches(jsonb, timestamptz, text, text, text)',
        'compliance.export_job_status(uuid)',
        'compliance.claim_export(uuid)',
        'compliance.export_heartbeat(uuid)',
        'compliance.export_plan(uuid)',
        'compliance.export_lines(uuid, bigint, bigint)',
        'compliance.complete_export(uuid, text, text, bigint, bigint, bytea, bigint, bigint, bigint)',
        'compliance.fail_export(uuid, text)',
        'compliance.age_seconds(timestamptz, timestamptz)',
        'compliance.cron_job_prefix()',
        'compliance.cron_conninfo()',
        'compliance.cron_exec(text, text)',
        'compliance.cron_manual_schedule()'
    ] LOOP
        IF pg_catalog.to_regprocedure(v_signature) IS NOT NULL THEN
            EXECUTE 'DROP FUNCTION ' || v_signature;
        END IF;
    END LOOP;
END;
$$;
