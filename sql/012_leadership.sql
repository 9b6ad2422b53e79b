-- Leadership (issue 18): one collector leads, the others stand by, and the database itself
-- refuses a write from a leader that lost its lease. Safe to re-run.
--
-- A lease row, not an advisory lock: a session lock survives a frozen (SIGSTOP) leader whose TCP
-- connection stays open, so a standby would never take over. A lease expires on the DATABASE's
-- clock (clock_timestamp(), never the hosts'), so a frozen, cut off or dead leader loses it alike.
--
-- The holder is checked with the epoch (p_holder; NULL skips it, for tools and tests only): with
-- asynchronous replication a primary can die after confirming an acquire that never reached the
-- replica, and the promoted replica then hands the SAME epoch number to another holder. Node
-- names must therefore be unique per collector (the host name by default).
--
-- Fencing: every write transaction of the collector calls leader_fence(epoch) (or leader_flush)
-- first. It locks the lease row FOR KEY SHARE and raises SQLSTATE 'IGL01' unless the epoch is
-- current and the lease live. A takeover takes the row FOR UPDATE, which conflicts with FOR KEY
-- SHARE, so it waits for every fenced transaction still open: a write either commits before the
-- takeover or is refused after it. Renewal is a plain UPDATE of non-key columns (FOR NO KEY
-- UPDATE), which does not conflict with FOR KEY SHARE: a long flush never delays the leader's own
-- renewal. Any new statement that moves the epoch must take the row FOR UPDATE first.

-- The lease: exactly one row (id is always true), created with epoch 0 = never held, so the
-- fence and the takeover always have a row to lock.
CREATE TABLE IF NOT EXISTS collector_leader (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    epoch       bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0),   -- only grows: the fencing token
    holder      text,                        -- COLLECTOR_NODE_NAME of the leader (host by default)
    since       timestamptz,                 -- when this epoch began
    expires_at  timestamptz,                 -- database clock; the lease is live while now < this
    renewed_at  timestamptz,
    -- Step-down: the holder that released may not acquire again before barred_until (2 x lease),
    -- so `ig-collector step-down` really moves leadership instead of winning it straight back.
    barred_holder text,
    barred_until  timestamptz
);
ALTER TABLE collector_leader ADD COLUMN IF NOT EXISTS barred_holder text,
                             ADD COLUMN IF NOT EXISTS barred_until timestamptz;
INSERT INTO collector_leader (id) VALUES (true) ON CONFLICT (id) DO NOTHING;

-- One row per epoch: who led, from when, until when and why it ended. `until` is NULL while the
-- epoch is current (or lapsed with nobody taking over yet); for a lapsed lease it is the
-- moment the lease expired, not the moment somebody noticed.
CREATE TABLE IF NOT EXISTS leader_history (
    epoch       bigint PRIMARY KEY,
    holder      text NOT NULL,
    since       timestamptz NOT NULL,
    until       timestamptz,
    -- 'stepped_down': released by its holder; 'taken_over': lapsed, then another holder acquired;
    -- 'expired': lapsed, then the same holder acquired again (it had been frozen or cut off).
    end_reason  text CHECK (end_reason IN ('expired', 'stepped_down', 'taken_over')),
    CHECK (until IS NULL OR until >= since),
    CHECK ((until IS NULL) = (end_reason IS NULL))
);

-- Takes the lease if it is free or expired: returns the new epoch, or NULL while another holds a
-- live lease (the same holder name included: two processes under one name must not both lead).
CREATE OR REPLACE FUNCTION leader_acquire(p_holder text, p_lease_s double precision) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    cur collector_leader;
    v_now timestamptz;
BEGIN
    IF p_lease_s IS NULL OR p_lease_s <= 0 THEN
        RAISE EXCEPTION 'leader_acquire: lease must be positive seconds, got %', p_lease_s
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- A standby polls this every second: answer "held" without a row lock, so polling never
    -- queues the leader's fences behind a FOR UPDATE.
    IF EXISTS (SELECT 1 FROM collector_leader WHERE id AND epoch > 0 AND expires_at > clock_timestamp()) THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM collector_leader
                WHERE id AND barred_holder = p_holder AND barred_until > clock_timestamp()) THEN
        RETURN NULL;                             -- it stepped down: another takes over first
    END IF;
    -- FOR UPDATE waits for every open fenced transaction (FOR KEY SHARE) of the current epoch.
    SELECT * INTO cur FROM collector_leader WHERE id FOR UPDATE;
    v_now := clock_timestamp();                  -- read after the wait: the wait counts
    IF cur.epoch > 0 AND cur.expires_at > v_now THEN
        RETURN NULL;
    END IF;
    UPDATE leader_history
       SET until = GREATEST(since, cur.expires_at),
           end_reason = CASE WHEN holder = p_holder THEN 'expired' ELSE 'taken_over' END
     WHERE epoch = cur.epoch AND until IS NULL;
    UPDATE collector_leader
       SET epoch = cur.epoch + 1, holder = p_holder, since = v_now, renewed_at = v_now,
           expires_at = v_now + make_interval(secs => p_lease_s)
     WHERE id;
    INSERT INTO leader_history (epoch, holder, since) VALUES (cur.epoch + 1, p_holder, v_now);
    RETURN cur.epoch + 1;
END $$;

-- Extends the lease by p_lease_s from now, only if p_epoch is current and not yet expired: a
-- lapsed lease is never revived, even when nobody took it (the holder must acquire again, and
-- so gets a new epoch that fences whatever its old self still had in flight).
CREATE OR REPLACE FUNCTION leader_renew(p_epoch bigint, p_lease_s double precision, p_holder text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF p_lease_s IS NULL OR p_lease_s <= 0 THEN
        RAISE EXCEPTION 'leader_renew: lease must be positive seconds, got %', p_lease_s
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE collector_leader
       SET expires_at = clock_timestamp() + make_interval(secs => p_lease_s), renewed_at = clock_timestamp()
     WHERE id AND epoch = p_epoch AND expires_at > clock_timestamp() AND (p_holder IS NULL OR holder = p_holder);
    RETURN FOUND;
END $$;

-- Step-down: the lease ends now, so a standby's next acquire succeeds at once (it still waits
-- for this epoch's open fenced transactions). Returns false when p_epoch was no longer live.
-- The holder is barred from acquiring for p_bar_s (the caller passes 2 x lease) so a standby
-- wins; a lone collector simply leads again once the bar lapses.
DROP FUNCTION IF EXISTS leader_release(bigint, text);  -- before the bar (p_bar_s) was added
CREATE OR REPLACE FUNCTION leader_release(p_epoch bigint, p_holder text DEFAULT NULL,
                                          p_bar_s double precision DEFAULT 0) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
BEGIN
    UPDATE collector_leader
       SET expires_at = v_now, barred_holder = holder,
           barred_until = v_now + make_interval(secs => GREATEST(COALESCE(p_bar_s, 0), 0))
     WHERE id AND epoch = p_epoch AND expires_at > v_now AND (p_holder IS NULL OR holder = p_holder);
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE leader_history SET until = GREATEST(since, v_now), end_reason = 'stepped_down'
     WHERE epoch = p_epoch AND until IS NULL;
    RETURN true;
END $$;

-- First statement of every collector write transaction. Raises SQLSTATE 'IGL01' ("not the
-- leader", class IG = this project) unless p_epoch is current and its lease live; otherwise holds
-- the row FOR KEY SHARE until commit, which makes any takeover wait for this transaction.
CREATE OR REPLACE FUNCTION leader_fence(p_epoch bigint, p_holder text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    cur collector_leader;
BEGIN
    SELECT * INTO cur FROM collector_leader WHERE id FOR KEY SHARE;
    IF p_epoch IS NULL OR p_epoch < 1 OR cur.epoch IS DISTINCT FROM p_epoch
       OR (p_holder IS NOT NULL AND cur.holder IS DISTINCT FROM p_holder)
       OR cur.expires_at IS NULL OR clock_timestamp() >= cur.expires_at THEN
        RAISE EXCEPTION 'not the leader: epoch % of % is fenced (current epoch %, holder %, expires %)',
            p_epoch, COALESCE(p_holder, '?'), cur.epoch, cur.holder, cur.expires_at
            USING ERRCODE = 'IGL01',
                  HINT = 'stop writing and streaming; acquire the lease again before the next write';
    END IF;
END $$;

-- Which epoch wrote each row, provably and at one row per write transaction (not a column on
-- every candle): the transaction is logged with its epoch, under two keys a candle carries.
-- xmin, the id of the transaction that last wrote the row, matches `xid` for a row written at
-- the top level; a row written inside a savepoint (the writer's quarantine path) carries the
-- subtransaction's id, which SQL cannot map to its parent, so it matches on `xact_start`: the
-- writers set updated_at = now(), and now() is the top-level transaction's start. `logged_at` is
-- the transaction's clock at logging; fencing guarantees it is earlier than the next epoch's
-- `since`.
CREATE TABLE IF NOT EXISTS flush_log (
    xid         xid8 PRIMARY KEY DEFAULT pg_current_xact_id(),
    epoch       bigint NOT NULL,
    holder      text,
    xact_start  timestamptz NOT NULL DEFAULT now(),
    logged_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    pairs       text[] NOT NULL DEFAULT '{}',
    from_time   timestamptz,                 -- IG time span of the rows written (NULL: none)
    to_time     timestamptz,
    CHECK (from_time IS NULL OR to_time >= from_time)
);
CREATE INDEX IF NOT EXISTS flush_log_epoch_idx ON flush_log (epoch, logged_at);
CREATE INDEX IF NOT EXISTS flush_log_xid32_idx ON flush_log USING hash ((xid::xid));
CREATE INDEX IF NOT EXISTS flush_log_xact_start_idx ON flush_log (xact_start);

-- Fence, then log this transaction's writer; called again in the same transaction it widens the
-- logged pairs and span. The writer calls it first (it fences) or last (then logged_at is closer
-- to the commit); either way the fence holds the row until commit.
CREATE OR REPLACE FUNCTION leader_flush(
    p_epoch bigint, p_pairs text[], p_from timestamptz, p_to timestamptz, p_holder text DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM leader_fence(p_epoch, p_holder);
    INSERT INTO flush_log (epoch, holder, pairs, from_time, to_time)
    VALUES (p_epoch, p_holder, COALESCE(p_pairs, '{}'), p_from, p_to)
    ON CONFLICT (xid) DO UPDATE
       SET pairs = ARRAY(SELECT DISTINCT unnest(flush_log.pairs || EXCLUDED.pairs) ORDER BY 1),
           from_time = LEAST(flush_log.from_time, EXCLUDED.from_time),
           to_time = GREATEST(flush_log.to_time, EXCLUDED.to_time),
           logged_at = clock_timestamp();
END $$;

-- Each candle's writer: the epoch of the transaction that last wrote it (NULL: not fenced).
CREATE OR REPLACE VIEW candle_writers AS
SELECT c.pair, c.timeframe, c.bucket, c.source, c.complete, c.updated_at,
       COALESCE(bx.epoch, bt.epoch) AS epoch, COALESCE(bx.holder, bt.holder) AS holder
  FROM candles c
  LEFT JOIN LATERAL (SELECT f.epoch, f.holder FROM flush_log f WHERE f.xid::xid = c.xmin LIMIT 1) bx ON true
  LEFT JOIN LATERAL (
      SELECT f.epoch, f.holder FROM flush_log f WHERE f.xact_start = c.updated_at ORDER BY f.xid LIMIT 1
  ) bt ON bx.epoch IS NULL;

-- Should always be empty: a write of epoch N logged at or after epoch N+1 began.
CREATE OR REPLACE VIEW leader_overlaps AS
SELECT f.xid, f.epoch, f.logged_at, n.epoch AS next_epoch, n.since AS next_since
  FROM flush_log f
  JOIN leader_history n ON n.epoch > f.epoch AND f.logged_at >= n.since;

-- For `ig-collector status` and Grafana: who leads, since when, and whether the lease is live.
CREATE OR REPLACE VIEW collector_leadership AS
SELECT holder, epoch, since, expires_at, renewed_at,
       COALESCE(expires_at > now(), false) AS alive, barred_holder, barred_until
  FROM collector_leader;

GRANT SELECT, UPDATE ON collector_leader TO collector;   -- UPDATE: the row locks need it
GRANT SELECT, INSERT, UPDATE ON leader_history, flush_log TO collector;
GRANT EXECUTE ON FUNCTION leader_acquire(text, double precision), leader_renew(bigint, double precision, text),
    leader_release(bigint, text, double precision), leader_fence(bigint, text),
    leader_flush(bigint, text[], timestamptz, timestamptz, text) TO collector;
GRANT SELECT ON collector_leadership, leader_history, leader_overlaps, candle_writers TO collector, grafana_reader;
GRANT SELECT ON collector_leadership TO trading_bot;
