-- Indicator SQL for the trading bot and Grafana (DESIGN sections 3 and 8): the last N mid
-- candles of a pair and timeframe with MA-200 and Ichimoku, computed where the candles are, so
-- the bot spends no REST quota and ships no history over the wire.
--
-- Conventions (the decisions that make charts and tests agree):
-- * Mid prices are (bid + ask) / 2 field by field, as in the candles_mid view.
-- * Windows count bars (ROWS), never time: weekends and gaps do not bend them.
-- * Every value is NULL until its whole window exists in the stored history (no MA-200 from 150
--   bars), whatever n is: the functions read as much earlier history as the windows need.
-- * Ichimoku shifts follow TradingView: with displacement D (default 26) the cloud under bar t
--   is the raw Senkou A/B of bar t - (D - 1) (the current bar counts as the first of D), and
--   chikou_ref is the mid close of bar t - (D - 1), the price the lagging line is compared with.
--   Nothing looks forward: a value at bar t depends on bars <= t only.
-- * 5m and 15m come from `candles`; "forming" there means complete = false, and those rows are
--   left out unless include_forming.
-- * 1h, 4h and 1d come from the rollups candles_1h/4h/1d (continuous aggregates or views). A
--   rollup bar is forming when it is the newest one of the pair and either its period is not over
--   by now() or one of its 15m candles is not complete yet (the collector closes a 15m candle a
--   grace period after its end). Only the newest bar can be forming; it is left out unless
--   include_forming. 1d bars are FX days starting 17:00 America/New_York (004_rollups).

-- The last n mid candles of a pair, NEWEST FIRST: the one reader of market data behind
-- indicators(), the bot's candle frames and the chart, so all three agree on what a bar is.
-- Reads run backwards through the primary key with LIMIT, first over a recent time range (so
-- TimescaleDB excludes old chunks at executor startup and the cost follows n, not the length of
-- the history), then, only if that range held fewer than n bars, over the older history. A
-- rollup's older history is bounded by the 15m candle its n bars can reach at most, so the
-- views never aggregate more than they return.
CREATE OR REPLACE FUNCTION last_candles(pair text, timeframe text, n integer, include_forming boolean DEFAULT false)
RETURNS TABLE (bucket timestamptz, open double precision, high double precision, low double precision,
               close double precision, ticks bigint)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = public, pg_temp
SET plan_cache_mode = force_generic_plan
SET max_parallel_workers_per_gather = 0 AS $$
#variable_conflict use_column
DECLARE
    p      text := last_candles.pair;
    tf     text := last_candles.timeframe;
    k      integer := last_candles.n;
    forming boolean := last_candles.include_forming;
    step   interval;         -- nominal bar length
    width  interval;         -- longest bar length (a 1d bar lasts 25 hours when DST ends)
    per    integer;          -- at most this many 15m candles in one rollup bar
    recent timestamptz;      -- start of the recent range tried first
    got    integer := 0;
    newest timestamptz;
    ends   timestamptz;
    oldest timestamptz;
    lo     timestamptz := '-infinity';
    hi     timestamptz := 'infinity';
BEGIN
    IF k IS NULL OR k < 0 THEN
        RAISE EXCEPTION 'n must be a non-negative number of bars, got %', coalesce(k::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF tf IS NULL OR tf NOT IN ('5m', '15m', '1h', '4h', '1d') THEN
        RAISE EXCEPTION 'unknown timeframe %: indicators are served for 5m, 15m, 1h, 4h and 1d',
            coalesce(quote_literal(tf), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM instruments i WHERE i.pair = p) THEN
        RAISE EXCEPTION 'unknown pair %: expected a pair of the instruments table, such as EURUSD',
            coalesce(quote_literal(p), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF k = 0 THEN
        RETURN;
    END IF;
    step := CASE tf WHEN '5m' THEN INTERVAL '5 minutes' WHEN '15m' THEN INTERVAL '15 minutes'
                    WHEN '1h' THEN INTERVAL '1 hour' WHEN '4h' THEN INTERVAL '4 hours' ELSE INTERVAL '1 day' END;
    -- n bars of market time, half as much again for quiet buckets, and a long weekend.
    recent := now() - step * k * 1.5 - INTERVAL '4 days';

    IF tf IN ('5m', '15m') THEN
        RETURN QUERY
        SELECT c.bucket, (c.bid_open + c.ask_open) / 2, (c.bid_high + c.ask_high) / 2,
               (c.bid_low + c.ask_low) / 2, (c.bid_close + c.ask_close) / 2, c.ticks::bigint
        FROM candles c
        WHERE c.pair = p AND c.timeframe = tf AND (c.complete OR forming) AND c.bucket >= recent
        ORDER BY c.bucket DESC LIMIT k;
        GET DIAGNOSTICS got = ROW_COUNT;
        IF got < k THEN
            RETURN QUERY
            SELECT c.bucket, (c.bid_open + c.ask_open) / 2, (c.bid_high + c.ask_high) / 2,
                   (c.bid_low + c.ask_low) / 2, (c.bid_close + c.ask_close) / 2, c.ticks::bigint
            FROM candles c
            WHERE c.pair = p AND c.timeframe = tf AND (c.complete OR forming) AND c.bucket < recent
            ORDER BY c.bucket DESC LIMIT k - got;
        END IF;
        RETURN;
    END IF;

    -- Rollups: a 1h bar holds at most 4 candles of 15m, 4h 16, and a 1d bar 100.
    width := CASE tf WHEN '1d' THEN INTERVAL '25 hours' ELSE step END;
    per := CASE tf WHEN '1h' THEN 4 WHEN '4h' THEN 16 ELSE 100 END;

    IF NOT forming THEN
        SELECT c.bucket INTO newest FROM candles c
        WHERE c.pair = p AND c.timeframe = '15m' AND c.bucket >= now() - INTERVAL '8 days'
        ORDER BY c.bucket DESC LIMIT 1;
        IF newest IS NULL THEN
            SELECT c.bucket INTO newest FROM candles c
            WHERE c.pair = p AND c.timeframe = '15m' ORDER BY c.bucket DESC LIMIT 1;
        END IF;
        IF newest IS NULL THEN
            RETURN;
        END IF;
        newest := CASE tf
            WHEN '1h' THEN (SELECT max(v.bucket) FROM candles_1h v WHERE v.pair = p AND v.bucket >= newest - width)
            WHEN '4h' THEN (SELECT max(v.bucket) FROM candles_4h v WHERE v.pair = p AND v.bucket >= newest - width)
            ELSE (SELECT max(v.bucket) FROM candles_1d v WHERE v.pair = p AND v.bucket >= newest - width)
        END;
        ends := CASE tf
            WHEN '1d' THEN ((newest AT TIME ZONE 'America/New_York') + INTERVAL '1 day') AT TIME ZONE 'America/New_York'
            ELSE newest + width
        END;
        IF ends > now() OR EXISTS (SELECT 1 FROM candles c
                                   WHERE c.pair = p AND c.timeframe = '15m' AND c.bucket >= newest AND NOT c.complete)
        THEN
            hi := newest;
        END IF;
    END IF;

    FOR phase IN 1..2 LOOP
        IF phase = 1 THEN
            lo := recent;
        ELSE
            EXIT WHEN got >= k;
            hi := least(hi, recent);
            SELECT c.bucket INTO oldest FROM candles c
            WHERE c.pair = p AND c.timeframe = '15m' AND c.bucket < hi
            ORDER BY c.bucket DESC OFFSET (k - got)::bigint * per - 1 LIMIT 1;
            -- The bar holding `oldest` starts at most one bar width earlier; NULL: all history fits.
            lo := coalesce(oldest - width, '-infinity');
            k := k - got;
        END IF;
        IF tf = '1h' THEN
            RETURN QUERY
            SELECT v.bucket, (v.bid_open + v.ask_open) / 2, (v.bid_high + v.ask_high) / 2,
                   (v.bid_low + v.ask_low) / 2, (v.bid_close + v.ask_close) / 2, v.ticks::bigint
            FROM candles_1h v WHERE v.pair = p AND v.bucket >= lo AND v.bucket < hi
            ORDER BY v.bucket DESC LIMIT k;
        ELSIF tf = '4h' THEN
            RETURN QUERY
            SELECT v.bucket, (v.bid_open + v.ask_open) / 2, (v.bid_high + v.ask_high) / 2,
                   (v.bid_low + v.ask_low) / 2, (v.bid_close + v.ask_close) / 2, v.ticks::bigint
            FROM candles_4h v WHERE v.pair = p AND v.bucket >= lo AND v.bucket < hi
            ORDER BY v.bucket DESC LIMIT k;
        ELSE
            RETURN QUERY
            SELECT v.bucket, (v.bid_open + v.ask_open) / 2, (v.bid_high + v.ask_high) / 2,
                   (v.bid_low + v.ask_low) / 2, (v.bid_close + v.ask_close) / 2, v.ticks::bigint
            FROM candles_1d v WHERE v.pair = p AND v.bucket >= lo AND v.bucket < hi
            ORDER BY v.bucket DESC LIMIT k;
        END IF;
        GET DIAGNOSTICS got = ROW_COUNT;
    END LOOP;
END $$;

COMMENT ON FUNCTION last_candles(text, text, integer, boolean) IS
    'The last n mid candles (bid+ask)/2 of a pair, newest first: 5m/15m from candles (complete only unless '
    'include_forming), 1h/4h/1d from the rollups (the newest bar left out while forming unless include_forming).';

-- A running sum of bigints that stays bigint (sum(bigint) returns numeric, which is slow).
-- int8pl raises on overflow rather than wrapping.
CREATE OR REPLACE AGGREGATE indicators_int8_sum(bigint) (SFUNC = int8pl, STYPE = bigint, PARALLEL = SAFE);

-- indicators(): DESIGN section 8's contract. How it stays fast (about 2 ms for 300 bars):
-- * it reads n + max(199, 51 + D - 1) bars, the most any window of the n bars reaches back;
-- * MA-200 is a difference of running sums, in exact integer arithmetic on closes in units of
--   1e-10 (FX mids have at most 7 decimals, so nothing is lost on real prices; any price is
--   off by at most 5e-11): O(1) per bar, and a value never depends on where the slice starts,
--   so appending a bar changes no earlier value, not even in the last bit. Overflow would need
--   a cumulative sum above 9.2e18, i.e. millions of bars at price 1000;
-- * highest high / lowest low over 9, 26 and 52 bars are built by doubling from 4-bar maxima
--   (4 -> 9, 16 -> 26, 52) with lag(), a few lookups per bar instead of re-scanning each frame.
CREATE OR REPLACE FUNCTION indicators(pair text, timeframe text, n integer, include_forming boolean DEFAULT false,
                                      displacement integer DEFAULT 26)
RETURNS TABLE (bucket timestamptz, open double precision, high double precision, low double precision,
               close double precision, ma_200 double precision, tenkan double precision, kijun double precision,
               senkou_a double precision, senkou_b double precision, chikou_ref double precision)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = public, pg_temp
SET plan_cache_mode = force_generic_plan
SET max_parallel_workers_per_gather = 0 AS $$
#variable_conflict use_column
DECLARE
    s integer := indicators.displacement - 1;   -- bars between a bar and the source of its cloud
BEGIN
    IF indicators.displacement IS NULL OR indicators.displacement < 1 THEN
        RAISE EXCEPTION 'displacement must be at least 1 bar (26 is the Ichimoku default), got %',
            coalesce(indicators.displacement::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Pair, timeframe and n are checked here, before the query, so an error reads short.
    PERFORM FROM last_candles(indicators.pair, indicators.timeframe,
                              CASE WHEN indicators.n IS NULL OR indicators.n < 0 THEN indicators.n ELSE 0 END);
    RETURN QUERY
    WITH l1 AS (
        SELECT m.bucket, m.open, m.high, m.low, m.close,
               row_number() OVER o AS rn, count(*) OVER () AS total,
               indicators_int8_sum(round(m.close * 1e10)::bigint) OVER o AS cs,
               greatest(m.high, lag(m.high, 1) OVER o, lag(m.high, 2) OVER o, lag(m.high, 3) OVER o) AS h4,
               least(m.low, lag(m.low, 1) OVER o, lag(m.low, 2) OVER o, lag(m.low, 3) OVER o) AS l4
        FROM last_candles(indicators.pair, indicators.timeframe, indicators.n + greatest(199, 51 + s),
                          indicators.include_forming) m
        WINDOW o AS (ORDER BY m.bucket ROWS UNBOUNDED PRECEDING)
    ), l2 AS (
        SELECT l1.bucket, l1.open, l1.high, l1.low, l1.close, l1.rn, l1.total,
               CASE WHEN l1.rn >= 200 THEN (l1.cs - lag(l1.cs, 200, 0::bigint) OVER o) / 2e12::float8 END AS ma,
               CASE WHEN l1.rn >= 9 THEN
                   (greatest(l1.h4, lag(l1.h4, 4) OVER o, lag(l1.high, 8) OVER o)
                    + least(l1.l4, lag(l1.l4, 4) OVER o, lag(l1.low, 8) OVER o)) / 2 END AS tk,
               greatest(l1.h4, lag(l1.h4, 4) OVER o, lag(l1.h4, 8) OVER o, lag(l1.h4, 12) OVER o) AS h16,
               least(l1.l4, lag(l1.l4, 4) OVER o, lag(l1.l4, 8) OVER o, lag(l1.l4, 12) OVER o) AS l16
        FROM l1 WINDOW o AS (ORDER BY l1.bucket)
    ), l3 AS (
        -- Only bars that feed the n output bars from here on (their cloud sources reach 51 + s back).
        SELECT l2.bucket, l2.open, l2.high, l2.low, l2.close, l2.rn, l2.total, l2.ma, l2.tk,
               CASE WHEN l2.rn >= 26 THEN
                   (greatest(l2.h16, lag(l2.h16, 10) OVER o) + least(l2.l16, lag(l2.l16, 10) OVER o)) / 2 END AS kj,
               CASE WHEN l2.rn >= 52 THEN
                   (greatest(l2.h16, lag(l2.h16, 16) OVER o, lag(l2.h16, 32) OVER o, lag(l2.h16, 36) OVER o)
                    + least(l2.l16, lag(l2.l16, 16) OVER o, lag(l2.l16, 32) OVER o, lag(l2.l16, 36) OVER o)) / 2
               END AS sb
        FROM l2 WHERE l2.rn > l2.total - indicators.n - (51 + s)
        WINDOW o AS (ORDER BY l2.bucket)
    ), l4 AS (
        SELECT l3.bucket, l3.open, l3.high, l3.low, l3.close, l3.rn, l3.total, l3.ma, l3.tk, l3.kj,
               lag((l3.tk + l3.kj) / 2, s) OVER o AS sa, lag(l3.sb, s) OVER o AS sb,
               lag(l3.close, s) OVER o AS chikou
        FROM l3 WINDOW o AS (ORDER BY l3.bucket)
    )
    SELECT l4.bucket, l4.open, l4.high, l4.low, l4.close, l4.ma, l4.tk, l4.kj, l4.sa, l4.sb, l4.chikou
    FROM l4 WHERE l4.rn > l4.total - indicators.n
    ORDER BY l4.bucket;
END $$;

COMMENT ON FUNCTION indicators(text, text, integer, boolean, integer) IS
    'Last n bars, oldest first: mid OHLC, ma_200, tenkan (9), kijun (26), senkou_a/senkou_b (cloud under the bar, '
    'from the bar displacement-1 earlier, as TradingView), chikou_ref (mid close displacement-1 bars earlier). '
    'Windows count bars; NULL until the whole window exists; no look-ahead.';

REVOKE ALL ON FUNCTION indicators_int8_sum(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION last_candles(text, text, integer, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION indicators(text, text, integer, boolean, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION indicators_int8_sum(bigint) TO trading_bot, grafana_reader;
GRANT EXECUTE ON FUNCTION last_candles(text, text, integer, boolean) TO trading_bot, grafana_reader;
GRANT EXECUTE ON FUNCTION indicators(text, text, integer, boolean, integer) TO trading_bot, grafana_reader;
