-- Expected-event monitors (silent producers) and the per-minute activity samples behind the
-- status sparklines. Tables: migration 0012.
SET LOCAL search_path = pg_catalog, pg_temp;

-- compliance._check_expectation(name, event_type_pattern, max_silence, tenant_id,
-- actor_pattern): the input rules of expect_events, raising before anything is written:
-- AC090 name, AC091 a match part, AC092 max_silence. The table's CHECKs say the same.
-- Touches no table.
CREATE OR REPLACE FUNCTION compliance._check_expectation(
    name text, event_type_pattern text, max_silence interval, tenant_id text, actor_pattern text
)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF _check_expectation.name IS NULL OR _check_expectation.name !~ '^[a-z0-9][a-z0-9_.-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid monitor name %: 1-63 of a-z 0-9 _ . -, starting with a letter or digit',
            coalesce(pg_catalog.quote_literal(_check_expectation.name), 'NULL')
            USING ERRCODE = 'AC090';
    END IF;
    -- Event types are lower-case dotted words (emit, AC001): a pattern with anything else
    -- (upper case, a space, a backslash escape) could never match and is a mistake.
    IF _check_expectation.event_type_pattern IS NULL
       OR _check_expectation.event_type_pattern !~ '^[a-z0-9_.%]{1,128}$' THEN
        RAISE EXCEPTION 'invalid event_type_pattern %: a LIKE pattern of 1-128 characters a-z 0-9 _ . %%',
            coalesce(pg_catalog.quote_literal(_check_expectation.event_type_pattern), 'NULL')
            USING ERRCODE = 'AC091';
    END IF;
    IF _check_expectation.tenant_id IS NOT NULL
       AND (pg_catalog.length(_check_expectation.tenant_id) NOT BETWEEN 1 AND 128
            OR _check_expectation.tenant_id ~ '[[:cntrl:]]') THEN
        RAISE EXCEPTION 'invalid tenant_id: 1-128 characters without control characters, or NULL'
            USING ERRCODE = 'AC091';
    END IF;
    IF _check_expectation.actor_pattern IS NOT NULL
       AND (_check_expectation.actor_pattern !~ '[^[:space:]]' OR pg_catalog.length(_check_expectation.actor_pattern) > 256) THEN
        RAISE EXCEPTION 'invalid actor_pattern: a LIKE pattern of 1-256 characters, not blank, or NULL'
            USING ERRCODE = 'AC091';
    END IF;
    IF _check_expectation.max_silence IS NULL OR _check_expectation.max_silence <= interval '0' THEN
        RAISE EXCEPTION 'max_silence must be a positive interval, not %',
            coalesce(_check_expectation.max_silence::text, 'NULL')
            USING ERRCODE = 'AC092';
    END IF;
END;
$$;
COMMENT ON FUNCTION compliance._check_expectation(text, text, interval, text, text) IS
'Internal: the input rules of expect_events (AC090 name, AC091 pattern, tenant or actor, AC092 max_silence).';

-- compliance.expect_events(name, event_type_pattern, max_silence, tenant_id, actor_pattern):
-- declare (or re-declare) a monitor: events whose event_type is LIKE event_type_pattern (and
-- of that tenant, and whose actor is LIKE actor_pattern, when given) must keep arriving at
-- least every max_silence. Returns true when created, false when an existing monitor was
-- updated. Changing what it matches restarts its watch (earlier events matched the old
-- definition); changing only max_silence keeps it; paused stays as it was. A new watch has
-- max_silence of grace: events chained before it do not count. Owner only.
-- Touches: event_expectations (INSERT or UPDATE).
CREATE OR REPLACE FUNCTION compliance.expect_events(
    name text,
    event_type_pattern text,
    max_silence interval,
    tenant_id text DEFAULT NULL,
    actor_pattern text DEFAULT NULL
)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_created boolean;
BEGIN
    PERFORM compliance._check_expectation(
        expect_events.name, expect_events.event_type_pattern, expect_events.max_silence,
        expect_events.tenant_id, expect_events.actor_pattern
    );
    INSERT INTO compliance.event_expectations AS x (name, event_type_pattern, max_silence, tenant_id, actor_pattern)
    VALUES (expect_events.name, expect_events.event_type_pattern, expect_events.max_silence,
            expect_events.tenant_id, expect_events.actor_pattern)
    ON CONFLICT ON CONSTRAINT event_expectations_pkey DO UPDATE
       SET max_silence = excluded.max_silence,
           event_type_pattern = excluded.event_type_pattern,
           tenant_id = excluded.tenant_id,
           actor_pattern = excluded.actor_pattern,
           watched_since = CASE WHEN (x.event_type_pattern, x.tenant_id, x.actor_pattern)
                                     IS NOT DISTINCT FROM (excluded.event_type_pattern, excluded.tenant_id,
                                                           excluded.actor_pattern)
                                THEN x.watched_since ELSE pg_catalog.now() END,
           last_event_at = CASE WHEN (x.event_type_pattern, x.tenant_id, x.actor_pattern)
                                     IS NOT DISTINCT FROM (excluded.event_type_pattern, excluded.tenant_id,
                                                           excluded.actor_pattern)
                                THEN x.last_event_at END,
           last_seq = CASE WHEN (x.event_type_pattern, x.tenant_id, x.actor_pattern)
                                IS NOT DISTINCT FROM (excluded.event_type_pattern, excluded.tenant_id,
                                                      excluded.actor_pattern)
                           THEN x.last_seq END
    RETURNING (xmax = 0) INTO v_created;
    RETURN v_created;
END;
$$;
COMMENT ON FUNCTION compliance.expect_events(text, text, interval, text, text) IS
'Declares or updates an expected-event monitor: matching events must arrive at least every max_silence '
'(AC090-AC092 on bad input); true when created.';

-- compliance._expectation(name): the monitor's row, locked; AC093 when there is none.
-- Touches: event_expectations (SELECT FOR UPDATE).
CREATE OR REPLACE FUNCTION compliance._expectation(name text)
RETURNS compliance.event_expectations
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row compliance.event_expectations%ROWTYPE;
BEGIN
    SELECT * INTO v_row FROM compliance.event_expectations AS x WHERE x.name = _expectation.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no expected-event monitor named %', coalesce(pg_catalog.quote_literal(_expectation.name), 'NULL')
            USING ERRCODE = 'AC093';
    END IF;
    RETURN v_row;
END;
$$;
COMMENT ON FUNCTION compliance._expectation(text) IS
'Internal: the named monitor''s row, locked for update; AC093 when it does not exist.';

-- compliance.pause_expectation(name): stop a monitor from ever being silent (planned
-- downtime of its producer) without forgetting it. True when paused now, false when it
-- already was; AC093 for an unknown name. Owner only. Touches: event_expectations (UPDATE).
CREATE OR REPLACE FUNCTION compliance.pause_expectation(name text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF (compliance._expectation(pause_expectation.name)).paused THEN
        RETURN false;
    END IF;
    UPDATE compliance.event_expectations AS x SET paused = true WHERE x.name = pause_expectation.name;
    RETURN true;
END;
$$;
COMMENT ON FUNCTION compliance.pause_expectation(text) IS
'Pauses an expected-event monitor (never silent while paused); false if already paused, AC093 if unknown.';

-- compliance.resume_expectation(name): watch a paused monitor again, with a new watch (its
-- producer gets max_silence from now, as after a declaration). True when resumed now, false
-- when it was not paused; AC093 for an unknown name. Owner only.
-- Touches: event_expectations (UPDATE).
CREATE OR REPLACE FUNCTION compliance.resume_expectation(name text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT (compliance._expectation(resume_expectation.name)).paused THEN
        RETURN false;
    END IF;
    UPDATE compliance.event_expectations AS x
       SET paused = false, watched_since = pg_catalog.now()
     WHERE x.name = resume_expectation.name;
    RETURN true;
END;
$$;
COMMENT ON FUNCTION compliance.resume_expectation(text) IS
'Resumes a paused expected-event monitor with max_silence of grace from now; false if not paused, AC093 if unknown.';

-- compliance.drop_expectation(name): forget a monitor. True; AC093 for an unknown name.
-- Owner only. Touches: event_expectations (DELETE).
CREATE OR REPLACE FUNCTION compliance.drop_expectation(name text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM compliance._expectation(drop_expectation.name);
    DELETE FROM compliance.event_expectations AS x WHERE x.name = drop_expectation.name;
    RETURN true;
END;
$$;
COMMENT ON FUNCTION compliance.drop_expectation(text) IS
'Removes an expected-event monitor; AC093 if unknown.';

-- compliance._advance_expectations(first_seq, last_seq): after the drainer chained events
-- first_seq..last_seq, move each monitor's high-water mark to the newest of them it
-- matches. One statement: the patterns are matched against the batch's distinct event
-- types (a handful), not its rows, and only for monitors whose mark is a second or more
-- older than the batch; the matching types' rows are then joined by equality. A busy
-- monitor thus costs one row update a second, not one per batch, and a batch with no
-- monitor due costs one primary-key lookup. Called by drain().
-- Touches: audit_events (read by seq range), event_expectations (UPDATE).
CREATE OR REPLACE FUNCTION compliance._advance_expectations(first_seq bigint, last_seq bigint)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_recorded_at timestamptz;
    v_advanced integer;
BEGIN
    SELECT e.recorded_at INTO v_recorded_at FROM compliance.audit_events AS e WHERE e.seq = _advance_expectations.last_seq;
    IF NOT EXISTS (SELECT 1 FROM compliance.event_expectations AS w
                    WHERE w.last_event_at IS NULL OR w.last_event_at <= v_recorded_at - interval '1 second') THEN
        RETURN 0;
    END IF;
    WITH batch AS MATERIALIZED (
        SELECT e.seq, e.recorded_at, e.event_type, e.tenant_id, e.actor
          FROM compliance.audit_events AS e
         WHERE e.seq BETWEEN _advance_expectations.first_seq AND _advance_expectations.last_seq
    ), due AS (
        SELECT w.name, t.event_type, w.tenant_id, w.actor_pattern
          FROM (SELECT DISTINCT b.event_type FROM batch AS b) AS t
          JOIN compliance.event_expectations AS w
            ON t.event_type LIKE w.event_type_pattern
           AND (w.last_event_at IS NULL OR w.last_event_at <= v_recorded_at - interval '1 second')
    ), newest AS (
        SELECT DISTINCT ON (d.name) d.name, b.recorded_at, b.seq
          FROM due AS d
          JOIN batch AS b
            ON b.event_type = d.event_type
           AND (d.tenant_id IS NULL OR b.tenant_id = d.tenant_id)
           AND (d.actor_pattern IS NULL OR b.actor LIKE d.actor_pattern)
         ORDER BY d.name, b.seq DESC
    )
    UPDATE compliance.event_expectations AS x
       SET last_event_at = n.recorded_at, last_seq = n.seq
      FROM newest AS n
     WHERE x.name = n.name
       AND (x.last_event_at IS NULL OR n.recorded_at >= x.last_event_at + interval '1 second');
    GET DIAGNOSTICS v_advanced = ROW_COUNT;
    RETURN v_advanced;
END;
$$;
COMMENT ON FUNCTION compliance._advance_expectations(bigint, bigint) IS
'Internal: (drain) advances each monitor''s last_event_at/last_seq from the chained events first_seq..last_seq it matches.';

-- compliance.expectation_status(): per monitor, when its newest matching event was seen,
-- how long it has been silent and whether that is longer than its max_silence. Reads the
-- high-water marks, and the outbox only when a monitor is silent by the chain alone (its
-- events may be emitted but not chained yet, e.g. while the drainer is stopped): then one
-- pass gives the newest emit per event type, which the patterns of monitors without a
-- tenant or actor condition are matched against; a monitor with one looks for its newest
-- match along the outbox's primary key. The cost follows the number of monitors and the
-- outbox, never the log. silence_seconds counts from the newest matching event, or from
-- the start of the watch when that is later (a new or resumed monitor, or one with no event
-- yet). A paused monitor is never silent.
-- SECURITY DEFINER: the watchdog needs EXECUTE on it and on metrics() only.
-- Touches (read only): event_expectations, audit_outbox.
CREATE OR REPLACE FUNCTION compliance.expectation_status()
RETURNS TABLE (
    name text,
    event_type_pattern text,
    tenant_id text,
    actor_pattern text,
    max_silence_seconds double precision,
    paused boolean,
    last_event_at timestamptz,
    silence_seconds double precision,
    silent boolean
)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH x AS MATERIALIZED (
        SELECT w.*,
               NOT w.paused AND GREATEST(w.last_event_at, w.watched_since) < pg_catalog.now() - w.max_silence
                   AS chain_silent
          FROM compliance.event_expectations AS w
    ), queued_types AS MATERIALIZED (
        SELECT o.event_type, pg_catalog.max(o.emitted_at) AS emitted_at
          FROM compliance.audit_outbox AS o
         WHERE EXISTS (SELECT 1 FROM x WHERE x.chain_silent AND x.tenant_id IS NULL AND x.actor_pattern IS NULL)
         GROUP BY o.event_type
    ), s AS MATERIALIZED (
        SELECT x.*,
               CASE
                   WHEN NOT x.chain_silent THEN NULL
                   WHEN x.tenant_id IS NULL AND x.actor_pattern IS NULL THEN
                       (SELECT pg_catalog.max(q.emitted_at) FROM queued_types AS q
                         WHERE q.event_type LIKE x.event_type_pattern)
                   ELSE
                       -- Newest first along the primary key: stops at the first match.
                       (SELECT o.emitted_at
                          FROM compliance.audit_outbox AS o
                         WHERE o.event_type LIKE x.event_type_pattern
                           AND (x.tenant_id IS NULL OR o.tenant_id = x.tenant_id)
                           AND (x.actor_pattern IS NULL OR o.actor LIKE x.actor_pattern)
                         ORDER BY o.outbox_id DESC
                         LIMIT 1)
               END AS queued_at
          FROM x
    )
    SELECT s.name, s.event_type_pattern, s.tenant_id, s.actor_pattern,
           EXTRACT(EPOCH FROM s.max_silence)::double precision,
           s.paused,
           GREATEST(s.last_event_at, s.queued_at),
           compliance._age_seconds(pg_catalog.now(), GREATEST(s.last_event_at, s.watched_since, s.queued_at)),
           NOT s.paused AND GREATEST(s.last_event_at, s.watched_since, s.queued_at) < pg_catalog.now() - s.max_silence
      FROM s
     ORDER BY s.name;
$$;
COMMENT ON FUNCTION compliance.expectation_status() IS
'Per expected-event monitor: match, max_silence, paused, last matching event (chained or in the outbox), '
'seconds of silence, and whether it is silent (longer than max_silence, not paused).';

-- compliance.record_activity_sample(): what the pg_cron job `sample` runs every minute:
-- stores this minute's outbox depth and chain length (once per minute, the latest call
-- wins) and drops samples older than 24 hours. Returns the minute sampled.
-- Touches: audit_outbox, drainer_state (read), activity_samples (INSERT, UPDATE, DELETE).
CREATE OR REPLACE FUNCTION compliance.record_activity_sample()
RETURNS timestamptz
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_minute timestamptz := pg_catalog.date_trunc('minute', pg_catalog.now());
BEGIN
    INSERT INTO compliance.activity_samples AS a (sampled_at, outbox_depth, chain_length)
    SELECT v_minute, (SELECT pg_catalog.count(*) FROM compliance.audit_outbox), d.last_seq
      FROM compliance.drainer_state AS d
    ON CONFLICT ON CONSTRAINT activity_samples_pkey DO UPDATE
       SET outbox_depth = excluded.outbox_depth, chain_length = excluded.chain_length;
    DELETE FROM compliance.activity_samples AS a WHERE a.sampled_at < v_minute - interval '24 hours';
    RETURN v_minute;
END;
$$;
COMMENT ON FUNCTION compliance.record_activity_sample() IS
'pg_cron job sample: records this minute''s outbox depth and chain length; keeps 24 hours.';

-- compliance.activity_history(minutes): the samples of the last `minutes` minutes, oldest
-- first, with the events chained since the previous sample (NULL for the first, or after a
-- missing minute). minutes must be 1-1440 (22023 otherwise).
-- Touches (read only): activity_samples.
CREATE OR REPLACE FUNCTION compliance.activity_history(minutes integer DEFAULT 60)
RETURNS TABLE (sampled_at timestamptz, outbox_depth bigint, drained_per_minute bigint)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF activity_history.minutes IS NULL OR activity_history.minutes NOT BETWEEN 1 AND 1440 THEN
        RAISE EXCEPTION 'minutes must be between 1 and 1440' USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
    SELECT h.sampled_at, h.outbox_depth, h.drained
      FROM (
          SELECT a.sampled_at, a.outbox_depth,
                 CASE WHEN pg_catalog.lag(a.sampled_at) OVER w = a.sampled_at - interval '1 minute'
                      THEN a.chain_length - pg_catalog.lag(a.chain_length) OVER w END AS drained
            FROM compliance.activity_samples AS a
           WHERE a.sampled_at >= pg_catalog.date_trunc('minute', pg_catalog.now())
                                 - pg_catalog.make_interval(mins => activity_history.minutes)
          WINDOW w AS (ORDER BY a.sampled_at)
      ) AS h
     ORDER BY h.sampled_at;
END;
$$;
COMMENT ON FUNCTION compliance.activity_history(integer) IS
'Per-minute outbox depth and events drained over the last minutes (1-1440), oldest first, for the status sparklines.';
