-- A collector restarted on its own host takes its lease back at once (issue 18). Safe to re-run.
--
-- Before this, a leader killed hard (kill -9, the OOM killer, the systemd watchdog) and restarted
-- by systemd found its own lease still live for up to a lease and waited it out: the same holder
-- name is refused while its lease is live, because two processes under one name must not both
-- lead. The lease now also names the process that holds it (`instance`: boot id, PID namespace and
-- PID), and a caller may reclaim a live lease of its own holder name by naming that instance as
-- dead. Only the caller can know that (it runs on the same host and asked the kernel), so the
-- database trusts it for exactly one thing: the holder name must match, so a collector can never
-- take another node's lease this way. The takeover itself is the ordinary one: it waits for the
-- dead process's open fenced transactions and bumps the epoch.

ALTER TABLE collector_leader ADD COLUMN IF NOT EXISTS instance text;

-- 'restarted': the same holder reclaimed its live lease after its previous process died.
ALTER TABLE leader_history DROP CONSTRAINT IF EXISTS leader_history_end_reason_check;
ALTER TABLE leader_history ADD CONSTRAINT leader_history_end_reason_check
    CHECK (end_reason IN ('expired', 'stepped_down', 'taken_over', 'restarted'));

DROP FUNCTION IF EXISTS leader_acquire(text, double precision);  -- before p_instance, p_dead_instance
-- Takes the lease if it is free or expired, or live but held under p_holder by p_dead_instance:
-- returns the new epoch, or NULL while another holds a live lease. p_instance is recorded as the
-- holder's process.
CREATE OR REPLACE FUNCTION leader_acquire(p_holder text, p_lease_s double precision,
                                          p_instance text DEFAULT NULL, p_dead_instance text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    cur collector_leader;
    v_now timestamptz;
    v_reclaim boolean;
BEGIN
    IF p_lease_s IS NULL OR p_lease_s <= 0 THEN
        RAISE EXCEPTION 'leader_acquire: lease must be positive seconds, got %', p_lease_s
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_reclaim := EXISTS (SELECT 1 FROM collector_leader
                          WHERE id AND epoch > 0 AND holder = p_holder AND p_dead_instance IS NOT NULL
                            AND instance = p_dead_instance);
    -- A standby polls this every second: answer "held" without a row lock, so polling never
    -- queues the leader's fences behind a FOR UPDATE.
    IF NOT v_reclaim
       AND EXISTS (SELECT 1 FROM collector_leader WHERE id AND epoch > 0 AND expires_at > clock_timestamp()) THEN
        INSERT INTO collector_standbys (holder, seen_at) VALUES (p_holder, clock_timestamp())
            ON CONFLICT (holder) DO UPDATE SET seen_at = EXCLUDED.seen_at;
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM collector_leader
                WHERE id AND barred_holder = p_holder AND barred_until > clock_timestamp()) THEN
        RETURN NULL;                             -- it stepped down: another takes over first
    END IF;
    -- FOR UPDATE waits for every open fenced transaction (FOR KEY SHARE) of the current epoch.
    SELECT * INTO cur FROM collector_leader WHERE id FOR UPDATE;
    v_now := clock_timestamp();                  -- read after the wait: the wait counts
    v_reclaim := cur.epoch > 0 AND cur.holder = p_holder AND cur.instance = p_dead_instance;
    IF cur.epoch > 0 AND cur.expires_at > v_now AND NOT COALESCE(v_reclaim, false) THEN
        RETURN NULL;
    END IF;
    UPDATE leader_history
       SET until = GREATEST(since, LEAST(cur.expires_at, v_now)),
           end_reason = CASE WHEN cur.expires_at > v_now THEN 'restarted'
                             WHEN holder = p_holder THEN 'expired' ELSE 'taken_over' END
     WHERE epoch = cur.epoch AND until IS NULL;
    DELETE FROM collector_standbys WHERE holder = p_holder;
    UPDATE collector_leader
       SET epoch = cur.epoch + 1, holder = p_holder, instance = p_instance, since = v_now, renewed_at = v_now,
           expires_at = v_now + make_interval(secs => p_lease_s)
     WHERE id;
    INSERT INTO leader_history (epoch, holder, since) VALUES (cur.epoch + 1, p_holder, v_now);
    RETURN cur.epoch + 1;
END $$;

-- `ig-collector status` and Grafana: the instance too (the view's columns grow at the end only).
CREATE OR REPLACE VIEW collector_leadership AS
SELECT holder, epoch, since, expires_at, renewed_at,
       COALESCE(expires_at > now(), false) AS alive, barred_holder, barred_until, instance
  FROM collector_leader;

GRANT EXECUTE ON FUNCTION leader_acquire(text, double precision, text, text) TO collector;
GRANT SELECT ON collector_leadership TO collector, grafana_reader, trading_bot;
