-- The only way a role other than the collector writes candles: REST candles, validated here,
-- which never overwrite a complete streamed candle. The bot stores what its freshness
-- fallback paid for through this function, so a candle is never bought twice, while it still
-- holds no INSERT/UPDATE privilege on `candles`.
CREATE OR REPLACE FUNCTION store_rest_candles(rows jsonb)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE n integer;
BEGIN
    WITH src AS (
        SELECT * FROM jsonb_to_recordset(rows) AS r(
            pair text, timeframe text, bucket timestamptz,
            bid_open double precision, bid_high double precision, bid_low double precision, bid_close double precision,
            ask_open double precision, ask_high double precision, ask_low double precision, ask_close double precision,
            ticks integer)
    ), ins AS (
        INSERT INTO candles AS c (pair, timeframe, bucket, bid_open, bid_high, bid_low, bid_close,
                                  ask_open, ask_high, ask_low, ask_close, ticks, complete, source, updated_at)
        SELECT pair, timeframe, bucket, bid_open, bid_high, bid_low, bid_close,
               ask_open, ask_high, ask_low, ask_close, ticks, true, 'rest', now()
        FROM src
        WHERE pair IN (SELECT i.pair FROM instruments i)
          AND bid_low <= bid_high AND ask_low <= ask_high AND bid_low > 0 AND ask_low > 0
        ON CONFLICT (pair, timeframe, bucket) DO UPDATE
            SET bid_open = EXCLUDED.bid_open, bid_high = EXCLUDED.bid_high, bid_low = EXCLUDED.bid_low,
                bid_close = EXCLUDED.bid_close, ask_open = EXCLUDED.ask_open, ask_high = EXCLUDED.ask_high,
                ask_low = EXCLUDED.ask_low, ask_close = EXCLUDED.ask_close, ticks = EXCLUDED.ticks,
                complete = true, source = 'rest', updated_at = now(), open_time = NULL, close_time = NULL
            WHERE NOT (c.complete AND c.source = 'stream')
        RETURNING 1
    )
    SELECT count(*) INTO n FROM ins;
    RETURN n;
END $$;

REVOKE ALL ON FUNCTION store_rest_candles(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION store_rest_candles(jsonb) TO collector, trading_bot;
