-- Expected-event monitors ("this producer's events keep arriving at least every N"), with
-- the per-monitor high-water mark the drainer advances after each batch, so that checking
-- every monitor reads this small table and never the log; and a ring of per-minute
-- activity samples (outbox depth, chain length) for the trend `auditchain status` draws.
-- Functions: sql/76_monitors.sql.
-- creates: compliance.event_expectations
-- creates: compliance.activity_samples

CREATE TABLE compliance.event_expectations (
    name text PRIMARY KEY CONSTRAINT event_expectations_name_text CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    event_type_pattern text NOT NULL CONSTRAINT event_expectations_pattern_text CHECK (
        event_type_pattern ~ '^[a-z0-9_.%]{1,128}$'
    ),
    max_silence interval NOT NULL CONSTRAINT event_expectations_max_silence_positive CHECK (
        max_silence > interval '0'
    ),
    tenant_id text CONSTRAINT event_expectations_tenant_text CHECK (
        length(tenant_id) BETWEEN 1 AND 128 AND tenant_id !~ '[[:cntrl:]]'
    ),
    actor_pattern text CONSTRAINT event_expectations_actor_text CHECK (
        btrim(actor_pattern) <> '' AND length(actor_pattern) <= 256
    ),
    paused boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    watched_since timestamptz NOT NULL DEFAULT now(),
    last_event_at timestamptz,
    last_seq bigint
);
COMMENT ON TABLE compliance.event_expectations IS
'Expected-event monitors: events matching the pattern must keep arriving at least every max_silence '
'(compliance.expect_events; status in compliance.expectation_status()).';
COMMENT ON COLUMN compliance.event_expectations.name IS
'Monitor name: 1-63 of a-z 0-9 _ . -, starting with a letter or digit (it becomes part of alarm names).';
COMMENT ON COLUMN compliance.event_expectations.event_type_pattern IS
'LIKE pattern on event_type (% any run, _ one character), e.g. auth.%.';
COMMENT ON COLUMN compliance.event_expectations.max_silence IS
'The longest silence that is normal; longer and the monitor is silent.';
COMMENT ON COLUMN compliance.event_expectations.tenant_id IS 'Only events of this tenant count; NULL: any tenant.';
COMMENT ON COLUMN compliance.event_expectations.actor_pattern IS 'LIKE pattern on actor; NULL: any actor.';
COMMENT ON COLUMN compliance.event_expectations.paused IS 'A paused monitor is never silent.';
COMMENT ON COLUMN compliance.event_expectations.created_at IS 'When the monitor was first declared.';
COMMENT ON COLUMN compliance.event_expectations.watched_since IS
'Start of the current watch (declared, match changed, or resumed): silence is counted from here at most.';
COMMENT ON COLUMN compliance.event_expectations.last_event_at IS
'recorded_at of the newest matching chained event since watched_since, kept to within a second by the drainer.';
COMMENT ON COLUMN compliance.event_expectations.last_seq IS 'seq of the event that last advanced last_event_at.';

CREATE TABLE compliance.activity_samples (
    sampled_at timestamptz PRIMARY KEY,
    outbox_depth bigint NOT NULL CONSTRAINT activity_samples_depth_nonnegative CHECK (outbox_depth >= 0),
    chain_length bigint NOT NULL CONSTRAINT activity_samples_length_nonnegative CHECK (chain_length >= 0)
);
COMMENT ON TABLE compliance.activity_samples IS
'One row per minute (compliance.record_activity_sample, pg_cron job sample), pruned to 24 hours: '
'the history behind the sparklines of auditchain status.';
COMMENT ON COLUMN compliance.activity_samples.sampled_at IS 'The minute sampled (truncated to the minute).';
COMMENT ON COLUMN compliance.activity_samples.outbox_depth IS 'Rows in audit_outbox at that minute.';
COMMENT ON COLUMN compliance.activity_samples.chain_length IS
'drainer_state.last_seq at that minute; the difference between samples is the drain rate.';
