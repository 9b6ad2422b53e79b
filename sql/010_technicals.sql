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
    -- Each level passes on only what later levels read, the columns read through lag() first
    -- (a lagged row is deformed only up to the column asked for): most of the cost here is
    -- copying and deforming rows in the window nodes, not arithmetic.
    WITH a AS (
        -- j: bar number in the slice (0 = the seed bar); pc/ph/pl: the previous bar's.
        SELECT m.high, m.low, m.close,
               greatest(m.high, lag(m.high, 1) OVER o, lag(m.high, 2) OVER o, lag(m.high, 3) OVER o) AS h4,
               least(m.low, lag(m.low, 1) OVER o, lag(m.low, 2) OVER o, lag(m.low, 3) OVER o) AS l4,
               indicators_int8_sum(round(m.close * 1e10)::bigint) OVER o AS cs,
               row_number() OVER o - 1 AS j,
               dense_rank() OVER (ORDER BY m.high) AS rh, dense_rank() OVER (ORDER BY m.low DESC) AS rl,
               lag(m.close) OVER o AS pc, lag(m.high) OVER o AS ph, lag(m.low) OVER o AS pl,
               m.ticks, m.open, m.bucket
        FROM last_candles(technicals.pair, technicals.timeframe, technicals.n + warmup,
                          technicals.include_forming) m
        WINDOW o AS (ORDER BY m.bucket ROWS UNBOUNDED PRECEDING)
    ), t AS (
        -- Per-bar terms, exactly as TA-Lib forms them (TRUE_RANGE, +DM/-DM, ULTOSC's buying pressure).
        SELECT a.high, a.low, a.close, a.h4, a.l4, a.cs,
               a.rh * 1048576 + a.j AS kh, a.rl * 1048576 + a.j AS kl,
               a.close - least(a.low, a.pc) AS bp,
               CASE WHEN a.j >= 1 THEN greatest(a.high - a.low, abs(a.pc - a.high), abs(a.pc - a.low)) END AS tr,
               CASE WHEN a.high - a.ph > 0 AND a.high - a.ph > a.pl - a.low THEN a.high - a.ph ELSE 0 END AS pdm,
               CASE WHEN a.pl - a.low > 0 AND a.high - a.ph < a.pl - a.low THEN a.pl - a.low ELSE 0 END AS mdm,
               CASE WHEN a.close > a.pc THEN a.ticks WHEN a.close < a.pc THEN -a.ticks ELSE 0 END AS obv_step,
               a.j, a.ticks, a.open, a.bucket
        FROM a
    ), b AS (
        SELECT greatest(t.h4, lag(t.h4, 4) OVER o, lag(t.h4, 8) OVER o, lag(t.h4, 12) OVER o) AS h16,
               least(t.l4, lag(t.l4, 4) OVER o, lag(t.l4, 8) OVER o, lag(t.l4, 12) OVER o) AS l16,
               greatest(t.kh, lag(t.kh, 1) OVER o, lag(t.kh, 2) OVER o, lag(t.kh, 3) OVER o) AS kh4,
               greatest(t.kl, lag(t.kl, 1) OVER o, lag(t.kl, 2) OVER o, lag(t.kl, 3) OVER o) AS kl4,
               t.bp + lag(t.bp, 1) OVER o + lag(t.bp, 2) OVER o + lag(t.bp, 3) OVER o
                   + lag(t.bp, 4) OVER o + lag(t.bp, 5) OVER o + lag(t.bp, 6) OVER o AS a7,
               t.tr + lag(t.tr, 1) OVER o + lag(t.tr, 2) OVER o + lag(t.tr, 3) OVER o
                   + lag(t.tr, 4) OVER o + lag(t.tr, 5) OVER o + lag(t.tr, 6) OVER o AS b7,
               indicators_int8_sum(t.obv_step) OVER o AS obv,
               CASE WHEN t.j >= 8 THEN
                   (greatest(t.h4, lag(t.h4, 4) OVER o, lag(t.high, 8) OVER o)
                    + least(t.l4, lag(t.l4, 4) OVER o, lag(t.low, 8) OVER o)) / 2 END AS tk,
               t.close,
               -- Wilder: the first 13 terms are summed unweighted into the seed at bar 13 (TA-Lib).
               sum(t.tr * power(a, -greatest(t.j, 13)::float8)) OVER o AS wtr,
               sum(t.pdm * power(a, -greatest(t.j, 13)::float8)) FILTER (WHERE t.j >= 1) OVER o AS wp,
               sum(t.mdm * power(a, -greatest(t.j, 13)::float8)) FILTER (WHERE t.j >= 1) OVER o AS wm,
               t.j,
               CASE WHEN t.j >= 20 THEN (t.cs - lag(t.cs, 21, 0::bigint) OVER o) / 21e10::float8 END AS ma21,
               CASE WHEN t.j >= 49 THEN (t.cs - lag(t.cs, 50, 0::bigint) OVER o) / 50e10::float8 END AS ma50,
               CASE WHEN t.j >= 199 THEN (t.cs - lag(t.cs, 200, 0::bigint) OVER o) / 2e12::float8 END AS ma200,
               t.high, t.low, t.ticks, t.open, t.bucket
        FROM t
        WINDOW o AS (ORDER BY t.bucket ROWS UNBOUNDED PRECEDING)
    ), s AS (
        -- The smoothed range and DMs, the DIs and DX (row expressions only).
        SELECT b.*, CASE WHEN b.j >= 13 THEN power(a, b.j::float8) END AS scale
        FROM b
    ), di AS (
        -- TA-Lib's PLUS_DI/MINUS_DI are 0 where the smoothed range is 0, i.e. no bar since the seed
        -- moved (a range that only decays stays > 0 in TA-Lib's recursion as in this closed form).
        SELECT s.*,
               CASE WHEN s.j >= 14 THEN CASE WHEN s.wtr = 0 THEN 0 ELSE 100 * ((s.scale * s.wp) / (s.scale * s.wtr)) END
               END AS pdi,
               CASE WHEN s.j >= 14 THEN CASE WHEN s.wtr = 0 THEN 0 ELSE 100 * ((s.scale * s.wm) / (s.scale * s.wtr)) END
               END AS mdi
        FROM s
    ), dx AS (
        -- DX exists where the range is non-zero and the sum of the DIs is not within TA-Lib's
        -- TA_EPSILON (1e-14) of zero; elsewhere TA-Lib's ADX neither counts it in the first average
        -- (bars 14..27) nor updates (from bar 28).
        SELECT di.*,
               CASE WHEN di.j >= 14 AND di.wtr <> 0 AND abs(di.pdi + di.mdi) >= 1e-14
                    THEN 100 * (abs(di.mdi - di.pdi) / (di.mdi + di.pdi)) END AS dxv
        FROM di
    ), c AS (
        SELECT greatest(dx.kh4, lag(dx.kh4, 4) OVER o, lag(dx.kh4, 8) OVER o, lag(dx.kh4, 12) OVER o) AS kh16,
               greatest(dx.kl4, lag(dx.kl4, 4) OVER o, lag(dx.kl4, 8) OVER o, lag(dx.kl4, 12) OVER o) AS kl16,
               dx.a7 + lag(dx.a7, 7) OVER o AS a14, dx.b7 + lag(dx.b7, 7) OVER o AS b14,
               dx.tk,
               CASE WHEN dx.j >= 25 THEN
                   (greatest(dx.h16, lag(dx.h16, 10) OVER o) + least(dx.l16, lag(dx.l16, 10) OVER o)) / 2 END AS kj,
               CASE WHEN dx.j >= 51 THEN
                   (greatest(dx.h16, lag(dx.h16, 16) OVER o, lag(dx.h16, 32) OVER o, lag(dx.h16, 36) OVER o)
                    + least(dx.l16, lag(dx.l16, 16) OVER o, lag(dx.l16, 32) OVER o, lag(dx.l16, 36) OVER o)) / 2
               END AS sb,
               dx.close,
               indicators_int8_sum(dx.obv) OVER o AS c1, sum(dx.obv::numeric * dx.obv) OVER o AS c2,
               count(dx.dxv) FILTER (WHERE dx.j >= 28) OVER o AS e,
               dx.dxv, dx.a7, dx.b7, dx.obv, dx.j, dx.pdi, dx.mdi,
               dx.ma21, dx.ma50, dx.ma200, dx.high, dx.low, dx.ticks, dx.open, dx.bucket
        FROM dx
        WINDOW o AS (ORDER BY dx.bucket ROWS UNBOUNDED PRECEDING)
    ), d AS (
        SELECT c.bucket, c.open, c.high, c.low, c.close, c.ticks, c.j, c.ma21, c.ma50, c.ma200, c.pdi, c.mdi, c.e,
               sum(c.dxv / 14 * power(a, -c.e::float8)) OVER o AS wadx,
               greatest(c.kh16, lag(c.kh16, 10) OVER o) AS kh26,
               greatest(c.kl16, lag(c.kl16, 10) OVER o) AS kl26,
               c.a7, c.b7, c.a14, c.b14, c.a14 + lag(c.a14, 14) OVER o AS a28, c.b14 + lag(c.b14, 14) OVER o AS b28,
               c.obv, c.c1 - lag(c.c1, 50, 0::bigint) OVER o AS s1, c.c2 - lag(c.c2, 50, 0::numeric) OVER o AS s2,
               c.tk, c.kj, lag((c.tk + c.kj) / 2, 25) OVER o AS sa, lag(c.sb, 25) OVER o AS sb25,
               lag(c.close, 25) OVER o AS chikou
        FROM c
        WINDOW o AS (ORDER BY c.bucket ROWS UNBOUNDED PRECEDING)
    ), z AS (
        SELECT d.bucket, d.open, d.high, d.low, d.close, d.ticks, d.ma21, d.ma50, d.ma200,
               CASE WHEN d.j >= 27 THEN power(a, d.e::float8) * coalesce(d.wadx, 0) END,
               d.pdi, d.mdi,
               CASE WHEN d.j >= 25 THEN 4::float8 * (25 - (d.j - (d.kh26 & 1048575))) END,
               CASE WHEN d.j >= 25 THEN 4::float8 * (25 - (d.j - (d.kl26 & 1048575))) END,
               -- A term whose range total is within TA_EPSILON (1e-14) of zero is left out, as TA-Lib does.
               CASE WHEN d.j >= 28 THEN
                   100 * ((CASE WHEN abs(d.b7) < 1e-14 THEN 0 ELSE 4 * (d.a7 / d.b7) END
                           + CASE WHEN abs(d.b14) < 1e-14 THEN 0 ELSE 2 * (d.a14 / d.b14) END
                           + CASE WHEN abs(d.b28) < 1e-14 THEN 0 ELSE d.a28 / d.b28 END) / 7) END,
               CASE WHEN d.j >= 49 AND 50 * d.s2 - d.s1::numeric * d.s1 > 0 THEN
                   (50 * d.obv - d.s1)::float8 / sqrt((50 * d.s2 - d.s1::numeric * d.s1)::float8) END,
               d.tk, d.kj, d.sa, d.sb25, d.chikou
        FROM d ORDER BY d.j DESC LIMIT technicals.n
    )
    SELECT * FROM z ORDER BY 1;
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
