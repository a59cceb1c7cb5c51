-- Export jobs: auditors' requests for bundles of the chain, claimed and run by `auditchain export run`.
-- The functions, the status-machine trigger and the append-only guard live in sql/70_exports.sql.
-- creates: compliance.export_status
-- creates: compliance.export_jobs
-- creates: compliance.export_jobs_open_idx

CREATE TYPE compliance.export_status AS ENUM ('queued', 'running', 'completed', 'failed');
COMMENT ON TYPE compliance.export_status IS
'Life of an export job: queued -> running -> completed or failed; nothing else (docs/exports.md).';

CREATE TABLE compliance.export_jobs (
    -- No DEFAULT: request_export generates it (compliance.uuidv7 is a sql/ definition, created after migrations).
    job_id uuid PRIMARY KEY CHECK (substring(job_id::text FROM 15 FOR 1) = '7'),
    requested_by text NOT NULL CHECK (btrim(requested_by) <> '' AND length(requested_by) <= 256),
    filter jsonb NOT NULL CHECK (jsonb_typeof(filter) = 'object'),
    format text NOT NULL DEFAULT 'ndjson.gz' CHECK (format = 'ndjson.gz'),
    status compliance.export_status NOT NULL DEFAULT 'queued',
    request_event_id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    heartbeat_at timestamptz,
    completed_at timestamptz,
    job_error text,
    output_bucket text,
    output_prefix text,
    row_count bigint,
    matched_count bigint,
    data_sha256 bytea,
    data_bytes bigint,
    seq_from bigint,
    seq_to bigint,
    CONSTRAINT export_jobs_started_when_claimed CHECK ((status = 'queued') = (started_at IS NULL)),
    CONSTRAINT export_jobs_finished_when_final CHECK ((status IN ('completed', 'failed')) = (completed_at IS NOT NULL)),
    CONSTRAINT export_jobs_error_when_failed CHECK ((status = 'failed') = (job_error IS NOT NULL)),
    CONSTRAINT export_jobs_result_when_completed CHECK (
        num_nonnulls(output_bucket, output_prefix, row_count, matched_count, data_sha256, data_bytes)
        = CASE WHEN status = 'completed' THEN 6 ELSE 0 END
    ),
    CONSTRAINT export_jobs_range_when_completed CHECK (status = 'completed' OR num_nonnulls(seq_from, seq_to) = 0),
    CONSTRAINT export_jobs_range_bounds CHECK ((seq_from IS NULL) = (seq_to IS NULL) AND 1 <= seq_from AND seq_from <= seq_to),
    CONSTRAINT export_jobs_row_count_is_range CHECK (row_count = coalesce(seq_to - seq_from + 1, 0)),
    CONSTRAINT export_jobs_matched_count CHECK (matched_count <= row_count AND (matched_count = 0) = (row_count = 0)),
    CONSTRAINT export_jobs_error_text CHECK (btrim(job_error) <> ''),
    CONSTRAINT export_jobs_output_text CHECK (output_bucket <> '' AND output_prefix <> ''),
    CONSTRAINT export_jobs_digest CHECK (octet_length(data_sha256) = 32 AND data_bytes > 0),
    CONSTRAINT export_jobs_time_order CHECK (
        started_at >= created_at AND heartbeat_at >= started_at AND completed_at >= started_at
    ),
    CONSTRAINT export_jobs_heartbeat_after_claim CHECK (heartbeat_at IS NULL OR started_at IS NOT NULL)
);
CREATE INDEX export_jobs_open_idx ON compliance.export_jobs (created_at, job_id)
WHERE status IN ('queued', 'running');

COMMENT ON TABLE compliance.export_jobs IS
'Export requests and their outcome. Rows are never deleted; status moves only queued -> running -> completed|failed.';
COMMENT ON COLUMN compliance.export_jobs.job_id IS 'UUIDv7 generated and returned by compliance.request_export; also the bundle''s folder name.';
COMMENT ON COLUMN compliance.export_jobs.requested_by IS 'Who asked for the export (the actor of its data.export_initiated event).';
COMMENT ON COLUMN compliance.export_jobs.filter IS
'The validated filter (keys from, to, tenant_id or tenant_ids, event_types, actor, withhold_payloads).';
COMMENT ON COLUMN compliance.export_jobs.format IS 'Data object format; only ndjson.gz (export bundle v1).';
COMMENT ON COLUMN compliance.export_jobs.status IS 'queued, running (claimed by a runner), completed or failed.';
COMMENT ON COLUMN compliance.export_jobs.request_event_id IS
'event_id of the data.export_initiated audit event emitted in the requesting transaction.';
COMMENT ON COLUMN compliance.export_jobs.created_at IS 'When the export was requested.';
COMMENT ON COLUMN compliance.export_jobs.started_at IS 'When a runner claimed the job (queued -> running).';
COMMENT ON COLUMN compliance.export_jobs.heartbeat_at IS
'Last progress report of the running runner; reconcile_exports fails jobs whose runner went quiet.';
COMMENT ON COLUMN compliance.export_jobs.completed_at IS 'When the job completed or failed.';
COMMENT ON COLUMN compliance.export_jobs.job_error IS 'Why the job failed (runner''s business failure or reconciliation).';
COMMENT ON COLUMN compliance.export_jobs.output_bucket IS 'S3 bucket holding the bundle.';
COMMENT ON COLUMN compliance.export_jobs.output_prefix IS
'Key prefix of the bundle (<prefix><job_id>/), holding manifest.json and events.ndjson.gz.';
COMMENT ON COLUMN compliance.export_jobs.row_count IS 'Lines in the data object: every seq of [seq_from, seq_to].';
COMMENT ON COLUMN compliance.export_jobs.matched_count IS 'Lines that are events the filter matched (the rest are hash-only).';
COMMENT ON COLUMN compliance.export_jobs.data_sha256 IS 'SHA-256 of the gzip bytes of events.ndjson.gz.';
COMMENT ON COLUMN compliance.export_jobs.data_bytes IS 'Size of events.ndjson.gz in bytes.';
COMMENT ON COLUMN compliance.export_jobs.seq_from IS 'First seq of the bundle''s range (the first matched event); NULL when nothing matched.';
COMMENT ON COLUMN compliance.export_jobs.seq_to IS
'Last seq of the range: the first uploaded anchor at or after the last match, else the last match.';
COMMENT ON CONSTRAINT export_jobs_started_when_claimed ON compliance.export_jobs IS
'started_at is set exactly when the job has left queued.';
COMMENT ON CONSTRAINT export_jobs_finished_when_final ON compliance.export_jobs IS
'completed_at is set exactly for completed and failed jobs.';
COMMENT ON CONSTRAINT export_jobs_error_when_failed ON compliance.export_jobs IS 'Only failed jobs, and all of them, carry job_error.';
COMMENT ON CONSTRAINT export_jobs_result_when_completed ON compliance.export_jobs IS
'Only completed jobs, and all of them, carry the output location, counts and digest.';
COMMENT ON CONSTRAINT export_jobs_range_when_completed ON compliance.export_jobs IS 'Only completed jobs carry a seq range.';
COMMENT ON CONSTRAINT export_jobs_range_bounds ON compliance.export_jobs IS 'seq_from and seq_to are both set or both NULL, in order.';
COMMENT ON CONSTRAINT export_jobs_row_count_is_range ON compliance.export_jobs IS
'The data object has one line per seq of the range, none when nothing matched.';
COMMENT ON CONSTRAINT export_jobs_matched_count ON compliance.export_jobs IS
'A non-empty range starts with a matched event; an empty one has no matches.';
COMMENT ON CONSTRAINT export_jobs_error_text ON compliance.export_jobs IS 'A failure always says why.';
COMMENT ON CONSTRAINT export_jobs_output_text ON compliance.export_jobs IS 'Output bucket and prefix are non-empty.';
COMMENT ON CONSTRAINT export_jobs_digest ON compliance.export_jobs IS 'data_sha256 is a SHA-256; a gzip stream is never empty.';
COMMENT ON CONSTRAINT export_jobs_time_order ON compliance.export_jobs IS 'requested <= claimed <= heartbeats, finished.';
COMMENT ON CONSTRAINT export_jobs_heartbeat_after_claim ON compliance.export_jobs IS 'Only claimed jobs report progress.';
COMMENT ON INDEX compliance.export_jobs_open_idx IS 'Queue order for claim_next_export; running jobs for reconcile_exports.';
