-- Receipts (`auditchain prove`, docs/proofs.md "Receipts"): everything a C2SP tlog-proof for
-- one event needs, read in one call: the event's line, the newest signed checkpoint that
-- covers it and the inclusion proof for that checkpoint's tree size. The receipt itself is
-- assembled (and checked) by the CLI.
SET LOCAL search_path = pg_catalog, pg_temp;

-- compliance.event_receipt(seq, event_id): for the event given by exactly one of seq or
-- event_id, the uploaded anchor with a signed checkpoint of the largest tree size that
-- covers it (seq_to >= seq), that anchor's signed checkpoint, the inclusion proof of the
-- event in the tree of seq_to events, and the event's line (compliance._event_line, payload
-- included). 22023 unless exactly one of seq and event_id is given; AC074 when no chained
-- event has that seq or event_id; AC075 when no uploaded signed checkpoint covers it yet.
-- Touches: audit_events, anchors, drainer_state, merkle_nodes (read).
CREATE OR REPLACE FUNCTION compliance.event_receipt(seq bigint DEFAULT NULL, event_id uuid DEFAULT NULL)
RETURNS TABLE (
    event_seq bigint, tree_size bigint, inclusion_proof bytea[], signed_checkpoint text, event_line text,
    anchor_id bigint, cadence_id text
)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_event compliance.audit_events%ROWTYPE;
    v_anchor compliance.anchors%ROWTYPE;
    v_chained bigint;
BEGIN
    IF pg_catalog.num_nonnulls(event_receipt.seq, event_receipt.event_id) <> 1 THEN
        RAISE EXCEPTION 'give exactly one of seq and event_id' USING ERRCODE = '22023';
    END IF;
    SELECT d.last_seq INTO STRICT v_chained FROM compliance.drainer_state AS d;
    IF event_receipt.seq IS NOT NULL THEN
        SELECT * INTO v_event FROM compliance.audit_events AS e WHERE e.seq = event_receipt.seq AND e.seq <= v_chained;
    ELSE
        SELECT * INTO v_event FROM compliance.audit_events AS e
         WHERE e.event_id = event_receipt.event_id AND e.seq <= v_chained;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no chained event with %', coalesce('seq ' || event_receipt.seq, 'event_id ' || event_receipt.event_id)
            USING ERRCODE = 'AC074',
                  HINT = 'An event is chained (and provable) once the drainer has moved it into audit_events.';
    END IF;
    SELECT * INTO v_anchor
      FROM compliance.anchors AS a
     WHERE a.status = 'uploaded' AND a.signed_checkpoint IS NOT NULL AND a.seq_to >= v_event.seq
     ORDER BY a.seq_to DESC
     LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'event seq % is not covered by a signed checkpoint yet: the next anchor will cover it',
            v_event.seq
            USING ERRCODE = 'AC075',
                  HINT = 'compliance.create_anchor() (pg_cron, every 15 minutes) records it and `auditchain anchor` '
                         'signs and uploads it.';
    END IF;
    RETURN QUERY SELECT v_event.seq, v_anchor.seq_to, compliance.inclusion_proof(v_event.seq, v_anchor.seq_to),
                        v_anchor.signed_checkpoint, compliance._event_line(v_event, false), v_anchor.anchor_id,
                        v_anchor.cadence_id;
END;
$$;
COMMENT ON FUNCTION compliance.event_receipt(bigint, uuid) IS
'One event''s line, the newest uploaded signed checkpoint covering it and the inclusion proof for its size '
'(what `auditchain prove` turns into a tlog-proof); AC074 no such chained event, AC075 no signed checkpoint yet.';
