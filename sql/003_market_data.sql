-- Ticks and candles: the two hypertables every reader depends on (DESIGN section 8).

CREATE TABLE IF NOT EXISTS ticks (
    time        timestamptz NOT NULL,          -- IG UTM (UTC, ms precision)
    pair        text NOT NULL,
    bid         double precision NOT NULL CHECK (bid > 0),
    ask         double precision NOT NULL CHECK (ask > 0),
    received_at timestamptz,                   -- when the collector received it (NULL when replayed)
    CHECK (bid <= ask)
);
SELECT create_hypertable('ticks', 'time', chunk_time_interval => INTERVAL '1 day', if_not_exists => true);
-- A re-subscription snapshot repeats the last tick: the same (pair, time, bid, ask) is stored once.
-- Two different quotes in the same millisecond are both kept.
CREATE UNIQUE INDEX IF NOT EXISTS ticks_pair_time_quote_key ON ticks (pair, time, bid, ask);

CREATE TABLE IF NOT EXISTS candles (
    pair       text NOT NULL,
    timeframe  text NOT NULL CHECK (timeframe ~ '^[0-9]+(m|h|d)$'),
    bucket     timestamptz NOT NULL,           -- bucket start, UTC, epoch-aligned like time_bucket
    bid_open   double precision NOT NULL,
    bid_high   double precision NOT NULL,
    bid_low    double precision NOT NULL,
    bid_close  double precision NOT NULL,
    ask_open   double precision NOT NULL,
    ask_high   double precision NOT NULL,
    ask_low    double precision NOT NULL,
    ask_close  double precision NOT NULL,
    ticks      integer NOT NULL CHECK (ticks >= 0),   -- FX has no volume: tick count is the volume
    complete   boolean NOT NULL DEFAULT false,
    source     text NOT NULL DEFAULT 'stream' CHECK (source IN ('stream', 'rest')),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- IG times of the ticks that set open and close: lets a restarted collector resume the
    -- open bucket exactly even when ticks arrive out of order. NULL for REST candles.
    open_time  timestamptz,
    close_time timestamptz,
    PRIMARY KEY (pair, timeframe, bucket),
    CHECK (bid_low <= bid_high AND ask_low <= ask_high)
);
SELECT create_hypertable('candles', 'bucket', chunk_time_interval => INTERVAL '30 days', if_not_exists => true);
-- "Last N candles of a pair and timeframe" is a backward scan of the primary key.

-- Mid prices: (bid + ask) / 2 field by field, one rule for streamed and REST candles.
CREATE OR REPLACE VIEW candles_mid AS
SELECT pair, timeframe, bucket,
       (bid_open + ask_open) / 2   AS open,
       (bid_high + ask_high) / 2   AS high,
       (bid_low + ask_low) / 2     AS low,
       (bid_close + ask_close) / 2 AS close,
       ticks, complete, source
FROM candles;

-- Buckets the collector must replace from REST once they close: they overlapped an outage,
-- a restart, a buffer overflow or a tick that came too late. Survives kill -9.
CREATE TABLE IF NOT EXISTS candle_repairs (
    pair        text NOT NULL,
    timeframe   text NOT NULL,
    bucket      timestamptz NOT NULL,
    reason      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text,
    resolved_at timestamptz,
    resolution  text,            -- 'rest' (replaced), 'empty' (REST had no data), 'unrecoverable'
    PRIMARY KEY (pair, timeframe, bucket)
);
CREATE INDEX IF NOT EXISTS candle_repairs_open_idx ON candle_repairs (bucket) WHERE resolved_at IS NULL;

GRANT SELECT, INSERT, UPDATE, DELETE ON ticks, candles, candle_repairs TO collector;
GRANT SELECT ON ticks, candles, candles_mid, candle_repairs TO trading_bot, grafana_reader;
