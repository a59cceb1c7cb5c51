-- Group roles (NOLOGIN). Roles are cluster-wide, so creation is idempotent; every grant
-- lives in sql/90_grants.sql.
-- creates: compliance_writer
-- creates: compliance_drainer
-- creates: compliance_anchor
-- creates: compliance_watchdog
-- creates: compliance_exporter
-- creates: compliance_auditor

DO $roles$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY[
        'compliance_writer', 'compliance_drainer', 'compliance_anchor',
        'compliance_watchdog', 'compliance_exporter', 'compliance_auditor'
    ] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = v_role) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', v_role);
        END IF;
    END LOOP;
END
$roles$;

COMMENT ON ROLE compliance_writer IS 'auditchain producers: may call compliance.emit and request exports.';
COMMENT ON ROLE compliance_drainer IS 'auditchain drainer: may run compliance.drain and compliance.run_drainer.';
COMMENT ON ROLE compliance_anchor IS 'auditchain anchor uploader: takes pending anchors, records upload results.';
COMMENT ON ROLE compliance_watchdog IS 'auditchain watchdog: reads compliance.metrics(); modifies nothing.';
COMMENT ON ROLE compliance_exporter IS 'auditchain export runner: claims, reads and finishes export jobs.';
COMMENT ON ROLE compliance_auditor IS 'auditchain auditors and DBAs: read events and run verification.';
