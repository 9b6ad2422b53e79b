-- 1h / 4h / 1d candles rolled up from 15m, as plain views: the Apache edition has no
-- continuous aggregates, so the same names answer the same queries, computed at read time.
-- 1h and 4h buckets are UTC, epoch-aligned like everything else; 1d bars are FX trading days
-- that start at 17:00 New York (DST-aware), the convention FX platforms chart.
CREATE OR REPLACE VIEW candles_1h AS
SELECT pair, time_bucket(INTERVAL '1 hour', bucket) AS bucket,
       first(bid_open, candles.bucket) AS bid_open, max(bid_high) AS bid_high,
       min(bid_low) AS bid_low, last(bid_close, candles.bucket) AS bid_close,
       first(ask_open, candles.bucket) AS ask_open, max(ask_high) AS ask_high,
       min(ask_low) AS ask_low, last(ask_close, candles.bucket) AS ask_close,
       sum(ticks)::bigint AS ticks
FROM candles WHERE timeframe = '15m'
GROUP BY pair, time_bucket(INTERVAL '1 hour', candles.bucket);

CREATE OR REPLACE VIEW candles_4h AS
SELECT pair, time_bucket(INTERVAL '4 hours', bucket) AS bucket,
       first(bid_open, candles.bucket) AS bid_open, max(bid_high) AS bid_high,
       min(bid_low) AS bid_low, last(bid_close, candles.bucket) AS bid_close,
       first(ask_open, candles.bucket) AS ask_open, max(ask_high) AS ask_high,
       min(ask_low) AS ask_low, last(ask_close, candles.bucket) AS ask_close,
       sum(ticks)::bigint AS ticks
FROM candles WHERE timeframe = '15m'
GROUP BY pair, time_bucket(INTERVAL '4 hours', candles.bucket);

CREATE OR REPLACE VIEW candles_1d AS
SELECT pair, time_bucket(INTERVAL '1 day', bucket, 'America/New_York', origin => TIMESTAMPTZ '2000-01-02 17:00:00-05') AS bucket,
       first(bid_open, candles.bucket) AS bid_open, max(bid_high) AS bid_high,
       min(bid_low) AS bid_low, last(bid_close, candles.bucket) AS bid_close,
       first(ask_open, candles.bucket) AS ask_open, max(ask_high) AS ask_high,
       min(ask_low) AS ask_low, last(ask_close, candles.bucket) AS ask_close,
       sum(ticks)::bigint AS ticks
FROM candles WHERE timeframe = '15m'
GROUP BY pair, time_bucket(INTERVAL '1 day', candles.bucket, 'America/New_York', origin => TIMESTAMPTZ '2000-01-02 17:00:00-05');

GRANT SELECT ON candles_1h, candles_4h, candles_1d TO collector, trading_bot, grafana_reader;
