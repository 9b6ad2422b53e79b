-- Integrity records (issue 9): what the stream covered, rows the database refused for good,
-- tick rows the collector could not store, and the one rule by which a bucket is flagged for
-- REST repair. `ig-collector audit` reads all of them to tell "collector down" from "market
-- closed" and "repair owed" from "silently missing".

-- Intervals of IG time the stream covered, written by the collector through its writer as it
-- streams: opened at the first live tick after a start or a reconnect, closed at the last tick
-- before an outage or a stop. An interval left open by a crash is closed by the next start at
-- the last committed tick (end_reason 'crashed').
CREATE TABLE IF NOT EXISTS stream_coverage (
    id          bigserial PRIMARY KEY,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz,                 -- NULL while the stream is up
    end_reason  text CHECK (end_reason IN ('outage', 'stopped', 'crashed')),
    opened_by   text NOT NULL DEFAULT '',    -- host:pid of the collector
    CHECK (ended_at IS NULL OR ended_at >= started_at)
);
CREATE INDEX IF NOT EXISTS stream_coverage_time_idx ON stream_coverage (started_at, ended_at);

-- Rows the database refused for good (a CHECK, a NOT NULL, a value out of range): kept with the
-- error, so nothing is lost silently and the writer goes on with the other rows.
CREATE TABLE IF NOT EXISTS quarantine (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    kind      text NOT NULL CHECK (kind IN ('tick', 'candle', 'repair', 'coverage')),
    pair      text,
    time      timestamptz,                   -- the tick's time or the candle's bucket
    row_data  jsonb NOT NULL,
    sqlstate  text NOT NULL,
    error     text NOT NULL
);
CREATE INDEX IF NOT EXISTS quarantine_time_idx ON quarantine (pair, time);

-- Tick rows that are not in `ticks` although their candles counted them: dropped at the write
-- buffer's bound during a long database outage, or quarantined. Candles stay exact; the audit
-- does not hold such buckets against the ticks table.
CREATE TABLE IF NOT EXISTS tick_gaps (
    pair       text NOT NULL,
    from_time  timestamptz NOT NULL,
    to_time    timestamptz NOT NULL,
    rows       integer NOT NULL CHECK (rows > 0),
    reason     text NOT NULL CHECK (reason IN ('buffer_full', 'quarantined')),
    noted_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (to_time >= from_time)
);
CREATE INDEX IF NOT EXISTS tick_gaps_time_idx ON tick_gaps (pair, from_time, to_time);

-- The one way a bucket is flagged for repair, whoever flags it (the writer in the transaction
-- of the candles it concerns, a restart, the audit). A flag re-opens a resolved repair unless
-- REST already replaced the bucket; a too-late tick re-opens even that, since the REST candle
-- was fetched before the tick existed in our records. A complete stream row of a flagged bucket
-- is demoted to incomplete: it is short of ticks until repaired. Returns the flags that are new
-- or re-opened (a pending one takes the newest reason).
CREATE OR REPLACE FUNCTION flag_candle_repairs(p_pairs text[], p_timeframes text[], p_buckets timestamptz[],
                                               p_reasons text[])
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE n integer;
DECLARE d integer;
BEGIN
    WITH k AS (
        SELECT DISTINCT ON (p, tf, b) p, tf, b, r
        FROM unnest(p_pairs, p_timeframes, p_buckets, p_reasons) AS u(p, tf, b, r)
        ORDER BY p, tf, b, r
    ), up AS (
        INSERT INTO candle_repairs AS cr (pair, timeframe, bucket, reason)
        SELECT p, tf, b, r FROM k
        ON CONFLICT (pair, timeframe, bucket) DO UPDATE
            SET reason = EXCLUDED.reason, resolved_at = NULL, resolution = NULL,
                attempts = CASE WHEN cr.resolved_at IS NULL THEN cr.attempts ELSE 0 END,
                last_error = CASE WHEN cr.resolved_at IS NULL THEN cr.last_error END
            WHERE cr.resolved_at IS NULL  -- still owed: the newest reason is kept
               OR cr.resolution NOT IN ('rest', 'composed') OR EXCLUDED.reason = 'late_tick'
        RETURNING 1
    ), demoted AS (
        UPDATE candles c SET complete = false
        FROM k
        WHERE c.pair = k.p AND c.timeframe = k.tf AND c.bucket = k.b AND c.source = 'stream' AND c.complete
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM up), (SELECT count(*) FROM demoted) INTO n, d;
    RETURN n;
END $$;

REVOKE ALL ON FUNCTION flag_candle_repairs(text[], text[], timestamptz[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION flag_candle_repairs(text[], text[], timestamptz[], text[]) TO collector;

GRANT SELECT, INSERT, UPDATE ON stream_coverage, quarantine, tick_gaps TO collector;
GRANT USAGE ON SEQUENCE stream_coverage_id_seq, quarantine_id_seq TO collector;
GRANT SELECT ON stream_coverage, quarantine, tick_gaps TO trading_bot, grafana_reader;
