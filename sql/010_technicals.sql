-- The trading bot's whole indicator set in SQL (issue 16): technicals() and volume_profile().
--
-- Definitions are TA-Lib's (0.6 and later: zero tests within TA_EPSILON = 1e-14; the tests'
-- reference is TA-Lib 0.8), on the mid series of last_candles() (sql/007: candles for 5m/15m,
-- the candles_1h/4h/1d rollups for the others, the same reader as indicators()) with the tick
-- count as the volume, so anyone can check a value with TA-Lib. Windows count bars, every value
-- is NULL until its whole window exists (TA-Lib's lookback), nothing looks ahead.
--
--   ma_21, ma_50, ma_200         SMA(close, N)
--   adx_14, plus_di_14,          ADX / PLUS_DI / MINUS_DI(high, low, close, 14). Wilder smoothing
--   minus_di_14                  depends on where it starts: it is seeded at the first bar of a
--                                fixed warm-up of 250 bars before the first returned bar (or at the
--                                first stored bar if there are fewer), i.e. the values equal
--                                TA-Lib's run over exactly those n + 250 bars. 250 bars leave
--                                (13/14)^250 = 1e-8 of the seed's weight, far below any trading
--                                decision, while keeping the read bounded.
--   aroon_up_25, aroon_down_25   AROON(high, low, 25): a 26-bar window, the newest extreme on a tie
--   ultosc                       ULTOSC(high, low, close, 7, 14, 28)
--   obv_z_50                     (OBV - SMA(OBV, 50)) / STDDEV(OBV, 50, 1), OBV(close, ticks);
--                                start-independent (the seed offset cancels); NULL when the
--                                deviation is 0
--   tenkan .. chikou_ref         Ichimoku exactly as indicators() with displacement 26
--
-- How it stays fast (one pass of window functions, no plpgsql loop over bars):
-- * Wilder's recursion S_t = S_{t-1} * a + x_t (a = 13/14) is linear, so it has the closed form
--   S_t = a^t * sum_{k<=t} x_k * a^-k: a running sum() window. All terms are >= 0, so the sum is
--   well conditioned (relative error ~ n * 1e-16, against TA-Lib's own rounding of the same size).
--   ADX skips bars whose DX is undefined (TA-Lib leaves it unchanged there), so its exponent is
--   the running count of bars that did update it. A plpgsql loop was the alternative: about
--   20 us a bar (56 series x 550 bars = 0.6 s), over the goal; a custom aggregate in plpgsql pays a
--   function call per bar and per smoothed series. The closed form costs a power() per bar.
--   Its limit: a^-t must stay inside float8's range, hence n <= 9000 bars per call.
-- * Aroon finds the newest extreme of 26 bars as the max of (dense rank of the price, bar number)
--   keys, built by doubling from 4-bar maxima like the Ichimoku ranges (4 -> 16 -> 26).
-- * SMAs are differences of exact integer running sums (as MA-200 in indicators()); OBV's mean and
--   variance come from exact integer window sums (numeric for the squares), so the z-score does
--   not lose digits to OBV's offset the way E[x^2] - E[x]^2 in floating point does.

CREATE OR REPLACE FUNCTION technicals(pair text, timeframe text, n integer, include_forming boolean DEFAULT false)
RETURNS TABLE (bucket timestamptz, open double precision, high double precision, low double precision,
               close double precision, ticks bigint,
               ma_21 double precision, ma_50 double precision, ma_200 double precision,
               adx_14 double precision, plus_di_14 double precision, minus_di_14 double precision,
               aroon_up_25 double precision, aroon_down_25 double precision, ultosc double precision,
               obv_z_50 double precision,
               tenkan double precision, kijun double precision, senkou_a double precision,
               senkou_b double precision, chikou_ref double precision)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = public, pg_temp
SET plan_cache_mode = force_generic_plan
SET max_parallel_workers_per_gather = 0 AS $$
#variable_conflict use_column
DECLARE
    warmup constant integer := 250;            -- bars read before the first returned bar
    a      constant double precision := 1.0 - 1.0 / 14;   -- Wilder's decay for period 14
BEGIN
    IF technicals.n > 9000 THEN
        RAISE EXCEPTION 'n must be at most 9000 bars (the Wilder smoothing''s closed form stays in float range), got %',
            technicals.n USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Pair, timeframe and n are checked here, before the query, so an error reads short.
    PERFORM FROM last_candles(technicals.pair, technicals.timeframe,
                              CASE WHEN technicals.n IS NULL OR technicals.n < 0 THEN technicals.n ELSE 0 END);
    RETURN QUERY
    WITH l1 AS (
        -- j: bar number in the slice (0 = the seed bar); p*: the previous bar.
        SELECT m.bucket, m.open, m.high, m.low, m.close, m.ticks,
               row_number() OVER o - 1 AS j, count(*) OVER () AS total,
               indicators_int8_sum(round(m.close * 1e10)::bigint) OVER o AS cs,
               greatest(m.high, lag(m.high, 1) OVER o, lag(m.high, 2) OVER o, lag(m.high, 3) OVER o) AS h4,
               least(m.low, lag(m.low, 1) OVER o, lag(m.low, 2) OVER o, lag(m.low, 3) OVER o) AS l4,
               lag(m.close) OVER o AS pc, lag(m.high) OVER o AS ph, lag(m.low) OVER o AS pl,
               dense_rank() OVER (ORDER BY m.high) AS rh, dense_rank() OVER (ORDER BY m.low DESC) AS rl
        FROM last_candles(technicals.pair, technicals.timeframe, technicals.n + warmup,
                          technicals.include_forming) m
        WINDOW o AS (ORDER BY m.bucket ROWS UNBOUNDED PRECEDING)
    ), t AS (
        -- Per-bar terms, exactly as TA-Lib forms them (TRUE_RANGE, +DM/-DM, ULTOSC's buying pressure).
        SELECT l1.*,
               CASE WHEN l1.j >= 1 THEN greatest(l1.high - l1.low, abs(l1.pc - l1.high), abs(l1.pc - l1.low)) END AS tr,
               CASE WHEN l1.high - l1.ph > 0 AND l1.high - l1.ph > l1.pl - l1.low THEN l1.high - l1.ph ELSE 0 END AS pdm,
               CASE WHEN l1.pl - l1.low > 0 AND l1.high - l1.ph < l1.pl - l1.low THEN l1.pl - l1.low ELSE 0 END AS mdm,
               l1.close - least(l1.low, l1.pc) AS bp,
               CASE WHEN l1.close > l1.pc THEN l1.ticks WHEN l1.close < l1.pc THEN -l1.ticks ELSE 0 END AS obv_step,
               l1.rh * 1048576 + l1.j AS kh, l1.rl * 1048576 + l1.j AS kl
        FROM l1
    ), l2 AS (
        SELECT t.bucket, t.open, t.high, t.low, t.close, t.ticks, t.j, t.total, t.tr, t.bp,
               CASE WHEN t.j >= 20 THEN (t.cs - lag(t.cs, 21, 0::bigint) OVER o) / 21e10::float8 END AS ma21,
               CASE WHEN t.j >= 49 THEN (t.cs - lag(t.cs, 50, 0::bigint) OVER o) / 50e10::float8 END AS ma50,
               CASE WHEN t.j >= 199 THEN (t.cs - lag(t.cs, 200, 0::bigint) OVER o) / 2e12::float8 END AS ma200,
               -- Wilder: the first 13 terms are summed unweighted into the seed at bar 13 (TA-Lib).
               sum(t.tr * power(a, -greatest(t.j, 13)::float8)) OVER o AS wtr,
               sum(t.pdm * power(a, -greatest(t.j, 13)::float8)) FILTER (WHERE t.j >= 1) OVER o AS wp,
               sum(t.mdm * power(a, -greatest(t.j, 13)::float8)) FILTER (WHERE t.j >= 1) OVER o AS wm,
               sum(t.bp) OVER w7 AS a7, sum(t.tr) OVER w7 AS b7,
               indicators_int8_sum(t.obv_step) OVER o AS obv,
               CASE WHEN t.j >= 8 THEN
                   (greatest(t.h4, lag(t.h4, 4) OVER o, lag(t.high, 8) OVER o)
                    + least(t.l4, lag(t.l4, 4) OVER o, lag(t.low, 8) OVER o)) / 2 END AS tk,
               greatest(t.h4, lag(t.h4, 4) OVER o, lag(t.h4, 8) OVER o, lag(t.h4, 12) OVER o) AS h16,
               least(t.l4, lag(t.l4, 4) OVER o, lag(t.l4, 8) OVER o, lag(t.l4, 12) OVER o) AS l16,
               greatest(t.kh, lag(t.kh, 1) OVER o, lag(t.kh, 2) OVER o, lag(t.kh, 3) OVER o) AS kh4,
               greatest(t.kl, lag(t.kl, 1) OVER o, lag(t.kl, 2) OVER o, lag(t.kl, 3) OVER o) AS kl4
        FROM t
        WINDOW o AS (ORDER BY t.bucket ROWS UNBOUNDED PRECEDING), w7 AS (ORDER BY t.bucket ROWS 6 PRECEDING)
    ), l3 AS (
        SELECT l2.bucket, l2.open, l2.high, l2.low, l2.close, l2.ticks, l2.j, l2.total,
               l2.ma21, l2.ma50, l2.ma200, l2.tk, l2.obv,
               CASE WHEN l2.j >= 13 THEN power(a, l2.j::float8) * l2.wtr END AS str,
               CASE WHEN l2.j >= 13 THEN power(a, l2.j::float8) * l2.wp END AS sp,
               CASE WHEN l2.j >= 13 THEN power(a, l2.j::float8) * l2.wm END AS sm,
               l2.a7, l2.b7, l2.a7 + lag(l2.a7, 7) OVER o AS a14, l2.b7 + lag(l2.b7, 7) OVER o AS b14,
               CASE WHEN l2.j >= 25 THEN
                   (greatest(l2.h16, lag(l2.h16, 10) OVER o) + least(l2.l16, lag(l2.l16, 10) OVER o)) / 2 END AS kj,
               CASE WHEN l2.j >= 51 THEN
                   (greatest(l2.h16, lag(l2.h16, 16) OVER o, lag(l2.h16, 32) OVER o, lag(l2.h16, 36) OVER o)
                    + least(l2.l16, lag(l2.l16, 16) OVER o, lag(l2.l16, 32) OVER o, lag(l2.l16, 36) OVER o)) / 2
               END AS sb,
               greatest(l2.kh4, lag(l2.kh4, 4) OVER o, lag(l2.kh4, 8) OVER o, lag(l2.kh4, 12) OVER o) AS kh16,
               greatest(l2.kl4, lag(l2.kl4, 4) OVER o, lag(l2.kl4, 8) OVER o, lag(l2.kl4, 12) OVER o) AS kl16,
               sum(l2.obv) OVER w50 AS s1, sum(l2.obv::numeric * l2.obv) OVER w50 AS s2
        FROM l2
        WINDOW o AS (ORDER BY l2.bucket), w50 AS (ORDER BY l2.bucket ROWS 49 PRECEDING)
    ), di AS (
        -- TA-Lib's PLUS_DI/MINUS_DI are 0 where the smoothed range is 0, i.e. no bar since the seed
        -- moved (a range that only decays stays > 0 in TA-Lib's recursion as in this closed form).
        SELECT l3.*,
               CASE WHEN l3.j >= 14 THEN CASE WHEN l3.str = 0 THEN 0 ELSE 100 * (l3.sp / l3.str) END END AS pdi,
               CASE WHEN l3.j >= 14 THEN CASE WHEN l3.str = 0 THEN 0 ELSE 100 * (l3.sm / l3.str) END END AS mdi
        FROM l3
    ), dx AS (
        -- DX exists where the range is non-zero and the sum of the DIs is not within TA-Lib's
        -- TA_EPSILON (1e-14) of zero; elsewhere TA-Lib's ADX neither counts it in the first average
        -- (bars 14..27) nor updates (from bar 28).
        SELECT di.*,
               CASE WHEN di.j >= 14 AND di.str <> 0 AND abs(di.pdi + di.mdi) >= 1e-14
                    THEN 100 * (abs(di.mdi - di.pdi) / (di.mdi + di.pdi)) END AS dx
        FROM di
    ), l4 AS (
        SELECT dx.*,
               count(dx.dx) FILTER (WHERE dx.j >= 28) OVER o AS e,
               greatest(dx.kh16, lag(dx.kh16, 10) OVER o) AS kh26,
               greatest(dx.kl16, lag(dx.kl16, 10) OVER o) AS kl26,
               dx.a14 + lag(dx.a14, 14) OVER o AS a28, dx.b14 + lag(dx.b14, 14) OVER o AS b28,
               lag((dx.tk + dx.kj) / 2, 25) OVER o AS sa, lag(dx.sb, 25) OVER o AS sb25,
               lag(dx.close, 25) OVER o AS chikou
        FROM dx
        WINDOW o AS (ORDER BY dx.bucket ROWS UNBOUNDED PRECEDING)
    ), l5 AS (
        SELECT l4.*, sum(l4.dx / 14 * power(a, -l4.e::float8)) OVER o AS wadx
        FROM l4
        WINDOW o AS (ORDER BY l4.bucket ROWS UNBOUNDED PRECEDING)
    )
    SELECT l5.bucket, l5.open, l5.high, l5.low, l5.close, l5.ticks, l5.ma21, l5.ma50, l5.ma200,
           CASE WHEN l5.j >= 27 THEN power(a, l5.e::float8) * coalesce(l5.wadx, 0) END,
           l5.pdi, l5.mdi,
           CASE WHEN l5.j >= 25 THEN 4::float8 * (25 - (l5.j - (l5.kh26 & 1048575))) END,
           CASE WHEN l5.j >= 25 THEN 4::float8 * (25 - (l5.j - (l5.kl26 & 1048575))) END,
           CASE WHEN l5.j >= 28 THEN
               -- A term whose range total is within TA_EPSILON (1e-14) of zero is left out, as TA-Lib does.
               100 * ((CASE WHEN abs(l5.b7) < 1e-14 THEN 0 ELSE 4 * (l5.a7 / l5.b7) END
                       + CASE WHEN abs(l5.b14) < 1e-14 THEN 0 ELSE 2 * (l5.a14 / l5.b14) END
                       + CASE WHEN abs(l5.b28) < 1e-14 THEN 0 ELSE l5.a28 / l5.b28 END) / 7) END,
           CASE WHEN l5.j >= 49 AND 50 * l5.s2 - l5.s1 * l5.s1 > 0 THEN
               (50 * l5.obv - l5.s1)::float8 / sqrt((50 * l5.s2 - l5.s1 * l5.s1)::float8) END,
           l5.tk, l5.kj, l5.sa, l5.sb25, l5.chikou
    FROM l5 WHERE l5.j >= l5.total - technicals.n
    ORDER BY l5.bucket;
END $$;

COMMENT ON FUNCTION technicals(text, text, integer, boolean) IS
    'Last n bars, oldest first: mid OHLC, ticks (the volume), ma_21/50/200, adx_14, plus_di_14, minus_di_14 '
    '(Wilder seeded 250 bars before the first returned bar), aroon_up_25/aroon_down_25, ultosc (7, 14, 28), '
    'obv_z_50, and Ichimoku as indicators(). TA-Lib definitions; windows count bars; NULL until the whole '
    'window exists; no look-ahead.';

-- volume_profile(): the VPVR of the last `bars` complete mid candles. The range lowest low ..
-- highest high is cut into `rows` equal bins (row 1 the lowest; a bin holds its lower bound, the
-- top one its upper bound too). Each candle's ticks are spread over the bins in proportion to
-- how much of its [low, high] each covers; a candle with high = low gives all to its bin (when
-- every price is equal all bins are that one price and the top row gets everything). The POC is
-- the bin with the most ticks (the lowest on a tie); the value area grows from it one bin at a
-- time toward the neighbour with more ticks (the upper on a tie) until it holds at least
-- `value_area` of all ticks. Bins and candles are summed in a fixed order (bucket, then row) so
-- a reference can reproduce every bit.
CREATE OR REPLACE FUNCTION volume_profile(pair text, timeframe text, bars integer DEFAULT 90,
                                          "rows" integer DEFAULT 24, value_area double precision DEFAULT 0.70)
RETURNS TABLE ("row" integer, price_low double precision, price_high double precision, ticks double precision,
               poc boolean, in_value_area boolean)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
    k      integer := volume_profile."rows";
    lo     double precision;
    hi     double precision;
    w      double precision;
    bins   double precision[];
    total  double precision := 0;
    best   integer := 1;
    va_lo  integer;
    va_hi  integer;
    acc    double precision;
    below  double precision;
    above  double precision;
BEGIN
    IF volume_profile.bars IS NULL OR volume_profile.bars < 1 THEN
        RAISE EXCEPTION 'bars must be at least 1 candle (90 is the default), got %',
            coalesce(volume_profile.bars::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF k IS NULL OR k < 1 THEN
        RAISE EXCEPTION 'rows must be at least 1 price bin (24 is the default), got %',
            coalesce(k::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF volume_profile.value_area IS NULL OR NOT (volume_profile.value_area > 0 AND volume_profile.value_area <= 1) THEN
        RAISE EXCEPTION 'value_area must be a share of all ticks in (0, 1] (0.70 is the default), got %',
            coalesce(volume_profile.value_area::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT min(c.low), max(c.high) INTO lo, hi
    FROM last_candles(volume_profile.pair, volume_profile.timeframe, volume_profile.bars) c;
    IF lo IS NULL THEN
        RETURN;
    END IF;
    w := (hi - lo) / k;
    WITH c AS (
        SELECT c.bucket, c.high, c.low, c.ticks
        FROM last_candles(volume_profile.pair, volume_profile.timeframe, volume_profile.bars) c
    ), b AS (
        SELECT i, lo + (i - 1) * w AS b_lo, CASE WHEN i = k THEN hi ELSE lo + i * w END AS b_hi
        FROM generate_series(1, k) AS i
    ), share AS (
        SELECT b.i, sum(CASE WHEN c.high = c.low THEN
                                 CASE WHEN c.low >= b.b_lo AND (c.low < b.b_hi OR b.i = k) THEN c.ticks::float8 ELSE 0 END
                             ELSE c.ticks * (greatest(0, least(c.high, b.b_hi) - greatest(c.low, b.b_lo))
                                             / (c.high - c.low)) END
                        ORDER BY c.bucket) AS s
        FROM b CROSS JOIN c GROUP BY b.i
    )
    SELECT array_agg(share.s ORDER BY share.i) INTO bins FROM share;
    FOR i IN 1..k LOOP
        total := total + bins[i];
        IF bins[i] > bins[best] THEN
            best := i;
        END IF;
    END LOOP;
    va_lo := best;
    va_hi := best;
    acc := bins[best];
    WHILE acc < volume_profile.value_area * total LOOP
        below := CASE WHEN va_lo > 1 THEN bins[va_lo - 1] END;
        above := CASE WHEN va_hi < k THEN bins[va_hi + 1] END;
        EXIT WHEN below IS NULL AND above IS NULL;
        IF above IS NOT NULL AND (below IS NULL OR above >= below) THEN
            va_hi := va_hi + 1;
            acc := acc + above;
        ELSE
            va_lo := va_lo - 1;
            acc := acc + below;
        END IF;
    END LOOP;
    RETURN QUERY
    SELECT i, lo + (i - 1) * w, CASE WHEN i = k THEN hi ELSE lo + i * w END, bins[i], i = best, i BETWEEN va_lo AND va_hi
    FROM generate_series(1, k) AS i ORDER BY i;
END $$;

COMMENT ON FUNCTION volume_profile(text, text, integer, integer, double precision) IS
    'Volume profile (VPVR) of the last `bars` complete mid candles: `rows` equal price bins from the lowest low '
    'to the highest high, ticks spread by range overlap, poc (most ticks, lowest on a tie), in_value_area '
    '(grown from the POC toward the larger neighbour, upper on a tie, until >= value_area of all ticks).';

REVOKE ALL ON FUNCTION technicals(text, text, integer, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION volume_profile(text, text, integer, integer, double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION technicals(text, text, integer, boolean) TO trading_bot, grafana_reader;
GRANT EXECUTE ON FUNCTION volume_profile(text, text, integer, integer, double precision) TO trading_bot, grafana_reader;
