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
-- Why one plpgsql loop over arrays (measured on the 2-core development machine, one series of
-- 300 bars + the 250-bar warm-up, best of 60 calls; tests/benchmarks/bench_technicals.py times
-- 56 series in one query):
-- * The first version was pure SQL window functions: Wilder's recursion S_t = a*S_{t-1} + x_t
--   (a = 13/14) has the closed form S_t = a^t * sum_{k<=t} x_k a^-k, a running sum(); Aroon the
--   max of (dense rank, bar number) keys; Ichimoku's doubling lags as in indicators(). Exact, but
--   8.3-8.9 ms a series: every lag() and every window level copies and deforms a wide row (~65 window
--   calls a bar; narrowing the rows gained 7 %). A custom aggregate would add a plpgsql call per
--   bar and per smoothed series on top of that.
-- * This loop reads the slice once into arrays and runs TA-Lib's own recursions (Wilder as
--   S - S/14 + x, OBV, the 50-bar OBV window as running exact sums): 3.7-3.9 ms, 0.45 of that;
--   56 series in one query take ~210 ms in the database (README's figures table). A plpgsql
--   statement costs ~0.1-0.2 us here, so the loop is written for few statements a bar: bars
--   older than the windows of the returned bars (77 back) only run the Wilder and close sums;
--   the sliding highs and lows of 9 and 26 bars take two lookups a bar (van Herk / Gil-Werman
--   blocks; TA-Lib's AROON rescans a window whenever its extreme leaves it, 40 statements a bar
--   in a trend), 52 bars are two 26-bar windows; ULTOSC's 7/14/28-bar sums are differences of
--   running sums.
-- * Exactness: max and min are exact, so Tenkan/Kijun/Senkou equal indicators() bit for bit;
--   SMAs are differences of exact integer sums (closes in units of 1e-10, as MA-200 in
--   indicators()); OBV's mean and variance use exact integers (bigint, numeric when tick counts
--   could overflow it), so the z-score does not lose digits to OBV's offset as TA-Lib's
--   E[x^2] - E[x]^2 in floating point does; the Wilder recursions are TA-Lib's, operation for
--   operation. ULTOSC's windowed differences carry ~1e-16 of the running sum, far inside 1e-9.

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
SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
    warmup constant integer := 250;   -- bars read before the first returned bar
    bk timestamptz[]; o float8[]; h float8[]; l float8[]; c float8[]; v bigint[];
    nb integer;                       -- bars in the slice; i below runs 1..nb, TA-Lib's index is i - 1
    first integer;                    -- first returned bar
    cs bigint[];                      -- running sum of closes in units of 1e-10 (as indicators())
    ca float8[]; cb float8[];         -- running sums of ULTOSC's buying pressure and true range
    obva bigint[];                    -- OBV per bar, relative to the slice's first bar (0 before it)
    tks float8[];                     -- raw Tenkan per bar
    dp float8; dm float8; tr float8;
    sp float8 := 0; sm float8 := 0; st float8 := 0;   -- Wilder-smoothed +DM, -DM, TR
    sdx float8 := 0; adx float8;
    -- OBV's window sums: s2 (squares) in bigint while |OBV| cannot pass 4e8 (the slice's ticks),
    -- else in numeric (s2n): exact either way, the numeric path only for huge tick counts.
    s1 bigint := 0; s2 bigint := 0; s2n numeric := 0; big boolean; q numeric;
    -- Sliding highest high / lowest low over 9 and 26 bars (van Herk / Gil-Werman): the slice
    -- from i0 is cut into blocks of the window's length; a window is the suffix (to its block's
    -- end) of its first bar plus the prefix (from its block's start) of its last bar: two lookups
    -- a bar whatever the prices do. 9 keeps values; 26 keeps bar numbers for Aroon (the newest
    -- extreme on a tie); 52 bars are two adjacent 26-bar windows.
    p9h float8[]; s9h float8[]; p9l float8[]; s9l float8[];
    hh float8[]; ll float8[];         -- highest high / lowest low of the 26 bars to each bar
    p26h integer[]; s26h integer[]; p26l integer[]; s26l integer[];
    hi26 integer; lo26 integer;
    -- Bars before i0 feed only the running sums (closes, Wilder): the windowed columns of the
    -- returned bars reach at most 77 bars back (Senkou B: 52 bars, 25 bars earlier).
    i0 integer;
    total_ticks numeric;
BEGIN
    IF technicals.n > 100000 THEN   -- the arrays hold the whole slice in memory
        RAISE EXCEPTION 'n must be at most 100000 bars, got %', technicals.n
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF technicals.n IS NULL OR technicals.n < 0 THEN
        RAISE EXCEPTION 'n must be a non-negative number of bars, got %', coalesce(technicals.n::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- One read; last_candles() names a bad pair or timeframe.
    SELECT array_agg(m.bucket), array_agg(m.open), array_agg(m.high), array_agg(m.low), array_agg(m.close),
           array_agg(m.ticks), count(*), sum(m.ticks)
      INTO bk, o, h, l, c, v, nb, total_ticks
    FROM (SELECT * FROM last_candles(technicals.pair, technicals.timeframe, technicals.n + warmup,
                                     technicals.include_forming) x ORDER BY x.bucket) m;
    IF nb = 0 THEN
        RETURN;
    END IF;
    first := greatest(1, nb - technicals.n + 1);
    big := total_ticks >= 400000000;
    i0 := greatest(1, first - 77);
    p9h := array_fill(NULL::float8, ARRAY[nb]);
    s9h := p9h; p9l := p9h; s9l := p9h; hh := p9h; ll := p9h;
    p26h := array_fill(NULL::integer, ARRAY[nb]);
    s26h := p26h; p26l := p26h; s26l := p26h;
    FOR i IN REVERSE nb..i0 LOOP
        s9h[i] := CASE WHEN (i - i0) % 9 = 8 OR i = nb THEN h[i] ELSE greatest(h[i], s9h[i + 1]) END;
        s9l[i] := CASE WHEN (i - i0) % 9 = 8 OR i = nb THEN l[i] ELSE least(l[i], s9l[i + 1]) END;
        s26h[i] := CASE WHEN (i - i0) % 26 = 25 OR i = nb OR h[i] > h[s26h[i + 1]] THEN i ELSE s26h[i + 1] END;
        s26l[i] := CASE WHEN (i - i0) % 26 = 25 OR i = nb OR l[i] < l[s26l[i + 1]] THEN i ELSE s26l[i + 1] END;
    END LOOP;
    cs := array_fill(0::bigint, ARRAY[nb + 1], ARRAY[0]);
    obva := array_fill(0::bigint, ARRAY[nb + 51], ARRAY[-50]);
    ca := array_fill(0::float8, ARRAY[nb + 30], ARRAY[-29]);
    cb := ca;
    tks := array_fill(0::float8, ARRAY[nb]);
    FOR i IN 1..nb LOOP
        cs[i] := cs[i - 1] + round(c[i] * 1e10)::bigint;
        -- TA-Lib's terms: +DM/-DM, TRUE_RANGE, ULTOSC's buying pressure, OBV's step. Bar 1 has no
        -- previous bar: its DMs and OBV step are 0 (NULL comparisons), its range is kept out of the
        -- seed, and its ULTOSC terms cancel in every window difference the output reads.
        dp := h[i] - h[i - 1];
        dm := l[i - 1] - l[i];
        tr := greatest(h[i] - l[i], abs(c[i - 1] - h[i]), abs(c[i - 1] - l[i]));
        IF i <= 14 THEN   -- TA-Lib's bars 1..13: summed into the seed
            sp := sp + CASE WHEN dp > 0 AND dp > dm THEN dp ELSE 0 END;
            sm := sm + CASE WHEN dm > 0 AND dp < dm THEN dm ELSE 0 END;
            st := st + CASE WHEN i = 1 THEN 0 ELSE tr END;
        ELSE              -- Wilder: S - S/14 + x, as TA-Lib writes it
            sp := sp - sp / 14 + CASE WHEN dp > 0 AND dp > dm THEN dp ELSE 0 END;
            sm := sm - sm / 14 + CASE WHEN dm > 0 AND dp < dm THEN dm ELSE 0 END;
            st := st - st / 14 + tr;
        END IF;
        IF i >= 15 THEN
            -- DIs: 0 where the smoothed range is 0 (no bar since the seed moved). DX: where the DIs'
            -- sum is not within TA_EPSILON (1e-14) of 0; elsewhere ADX neither counts nor updates.
            plus_di_14 := CASE WHEN st = 0 THEN 0 ELSE 100 * (sp / st) END;
            minus_di_14 := CASE WHEN st = 0 THEN 0 ELSE 100 * (sm / st) END;
            IF i <= 28 THEN
                sdx := sdx + CASE WHEN st <> 0 AND abs(minus_di_14 + plus_di_14) >= 1e-14
                                  THEN 100 * (abs(minus_di_14 - plus_di_14) / (minus_di_14 + plus_di_14)) ELSE 0 END;
                IF i = 28 THEN
                    adx_14 := sdx / 14;
                END IF;
            ELSIF st <> 0 AND abs(minus_di_14 + plus_di_14) >= 1e-14 THEN
                adx_14 := (adx_14 * 13 + 100 * (abs(minus_di_14 - plus_di_14) / (minus_di_14 + plus_di_14))) / 14;
            END IF;
        END IF;
        CONTINUE WHEN i < i0;
        -- ULTOSC's buying pressure and true range as running sums; a window is a difference.
        ca[i] := ca[i - 1] + (c[i] - least(l[i], c[i - 1]));
        cb[i] := cb[i - 1] + tr;
        obva[i] := obva[i - 1] + CASE WHEN c[i] > c[i - 1] THEN v[i] WHEN c[i] < c[i - 1] THEN -v[i] ELSE 0 END;
        s1 := s1 + obva[i] - obva[i - 50];
        IF big THEN
            s2n := s2n + obva[i]::numeric * obva[i] - obva[i - 50]::numeric * obva[i - 50];
        ELSE
            s2 := s2 + obva[i] * obva[i] - obva[i - 50] * obva[i - 50];
        END IF;
        p9h[i] := CASE WHEN (i - i0) % 9 = 0 THEN h[i] ELSE greatest(p9h[i - 1], h[i]) END;
        p9l[i] := CASE WHEN (i - i0) % 9 = 0 THEN l[i] ELSE least(p9l[i - 1], l[i]) END;
        p26h[i] := CASE WHEN (i - i0) % 26 = 0 OR h[i] >= h[p26h[i - 1]] THEN i ELSE p26h[i - 1] END;
        p26l[i] := CASE WHEN (i - i0) % 26 = 0 OR l[i] <= l[p26l[i - 1]] THEN i ELSE p26l[i - 1] END;
        -- Tenkan, and the 26-bar extremes (52 bars are two 26-bar windows). A partial window near i0
        -- yields a value the NULL rules below never read.
        tks[i] := (greatest(p9h[i], s9h[i - 8]) + least(p9l[i], s9l[i - 8])) / 2;
        hh[i] := greatest(h[p26h[i]], h[s26h[i - 25]]);
        ll[i] := least(l[p26l[i]], l[s26l[i - 25]]);
        CONTINUE WHEN i < first;
        bucket := bk[i]; open := o[i]; high := h[i]; low := l[i]; close := c[i]; ticks := v[i];
        ma_21 := CASE WHEN i >= 21 THEN (cs[i] - cs[i - 21]) / 21e10::float8 END;
        ma_50 := CASE WHEN i >= 50 THEN (cs[i] - cs[i - 50]) / 50e10::float8 END;
        ma_200 := CASE WHEN i >= 200 THEN (cs[i] - cs[i - 200]) / 2e12::float8 END;
        hi26 := CASE WHEN h[p26h[i]] >= h[s26h[i - 25]] OR s26h[i - 25] IS NULL THEN p26h[i] ELSE s26h[i - 25] END;
        lo26 := CASE WHEN l[p26l[i]] <= l[s26l[i - 25]] OR s26l[i - 25] IS NULL THEN p26l[i] ELSE s26l[i - 25] END;
        aroon_up_25 := CASE WHEN i >= 26 THEN 4::float8 * (25 - (i - hi26)) END;
        aroon_down_25 := CASE WHEN i >= 26 THEN 4::float8 * (25 - (i - lo26)) END;
        -- A term whose range total is within TA_EPSILON (1e-14) of zero is left out, as TA-Lib does.
        ultosc := CASE WHEN i >= 29 THEN
            100 * ((CASE WHEN abs(cb[i] - cb[i - 7]) < 1e-14 THEN 0 ELSE 4 * ((ca[i] - ca[i - 7]) / (cb[i] - cb[i - 7])) END
                    + CASE WHEN abs(cb[i] - cb[i - 14]) < 1e-14 THEN 0
                           ELSE 2 * ((ca[i] - ca[i - 14]) / (cb[i] - cb[i - 14])) END
                    + CASE WHEN abs(cb[i] - cb[i - 28]) < 1e-14 THEN 0
                           ELSE (ca[i] - ca[i - 28]) / (cb[i] - cb[i - 28]) END) / 7) END;
        q := 50 * CASE WHEN big THEN s2n ELSE s2::numeric END - s1::numeric * s1;
        obv_z_50 := CASE WHEN i >= 50 AND q > 0 THEN (50 * obva[i] - s1)::float8 / sqrt(q::float8) END;
        tenkan := CASE WHEN i >= 9 THEN tks[i] END;
        kijun := CASE WHEN i >= 26 THEN (hh[i] + ll[i]) / 2 END;
        senkou_a := CASE WHEN i >= 51 THEN (tks[i - 25] + (hh[i - 25] + ll[i - 25]) / 2) / 2 END;
        senkou_b := CASE WHEN i >= 77 THEN (greatest(hh[i - 25], hh[i - 51]) + least(ll[i - 25], ll[i - 51])) / 2 END;
        chikou_ref := CASE WHEN i >= 26 THEN c[i - 25] END;
        RETURN NEXT;
    END LOOP;
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
