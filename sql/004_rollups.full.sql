-- 1h / 4h / 1d candles rolled up from 15m as real-time continuous aggregates
-- (materialized_only = false: the newest, not yet materialized buckets are computed at read
-- time, so readers see the forming hour/day). Created WITH NO DATA and refreshed by policies
-- whose windows span more than two buckets and end before now, which avoids the
-- "watermark in the future" trap. Each is built from candles directly rather than stacked:
-- stacking would stop real-time propagation at any materialized layer and the 1d bucket is
-- timezone-aware (variable width), which cannot sit on a fixed-width parent's semantics.
-- 1h and 4h buckets are UTC, epoch-aligned; 1d bars are FX trading days starting at
-- 17:00 New York (DST-aware).
CREATE MATERIALIZED VIEW IF NOT EXISTS candles_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT pair, time_bucket(INTERVAL '1 hour', bucket) AS bucket,
       first(bid_open, candles.bucket) AS bid_open, max(bid_high) AS bid_high,
       min(bid_low) AS bid_low, last(bid_close, candles.bucket) AS bid_close,
       first(ask_open, candles.bucket) AS ask_open, max(ask_high) AS ask_high,
       min(ask_low) AS ask_low, last(ask_close, candles.bucket) AS ask_close,
       sum(ticks)::bigint AS ticks
FROM candles WHERE timeframe = '15m'
GROUP BY pair, time_bucket(INTERVAL '1 hour', candles.bucket)
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS candles_4h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT pair, time_bucket(INTERVAL '4 hours', bucket) AS bucket,
       first(bid_open, candles.bucket) AS bid_open, max(bid_high) AS bid_high,
       min(bid_low) AS bid_low, last(bid_close, candles.bucket) AS bid_close,
       first(ask_open, candles.bucket) AS ask_open, max(ask_high) AS ask_high,
       min(ask_low) AS ask_low, last(ask_close, candles.bucket) AS ask_close,
       sum(ticks)::bigint AS ticks
FROM candles WHERE timeframe = '15m'
GROUP BY pair, time_bucket(INTERVAL '4 hours', candles.bucket)
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS candles_1d
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT pair, time_bucket(INTERVAL '1 day', bucket, 'America/New_York', origin => TIMESTAMPTZ '2000-01-02 17:00:00-05') AS bucket,
       first(bid_open, candles.bucket) AS bid_open, max(bid_high) AS bid_high,
       min(bid_low) AS bid_low, last(bid_close, candles.bucket) AS bid_close,
       first(ask_open, candles.bucket) AS ask_open, max(ask_high) AS ask_high,
       min(ask_low) AS ask_low, last(ask_close, candles.bucket) AS ask_close,
       sum(ticks)::bigint AS ticks
FROM candles WHERE timeframe = '15m'
GROUP BY pair, time_bucket(INTERVAL '1 day', candles.bucket, 'America/New_York', origin => TIMESTAMPTZ '2000-01-02 17:00:00-05')
WITH NO DATA;

-- Windows reach back far enough for late corrections and REST repairs; older changes are
-- picked up by the invalidation log on a manual refresh (ig-collector migrate --refresh).
SELECT add_continuous_aggregate_policy('candles_1h', start_offset => INTERVAL '14 days',
       end_offset => INTERVAL '15 minutes', schedule_interval => INTERVAL '5 minutes', if_not_exists => true);
SELECT add_continuous_aggregate_policy('candles_4h', start_offset => INTERVAL '30 days',
       end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '15 minutes', if_not_exists => true);
SELECT add_continuous_aggregate_policy('candles_1d', start_offset => INTERVAL '90 days',
       end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '1 hour', if_not_exists => true);

GRANT SELECT ON candles_1h, candles_4h, candles_1d TO collector, trading_bot, grafana_reader;
