-- What the trading bot decided, and why: one row per strategy, pair, timeframe and bar, so a
-- re-evaluation of the same bar (a repeated NOTIFY, the safety poll, a restart) never doubles a
-- signal or an order. `indicators` holds the values that justified the signal, as the strategy
-- saw them, for audits and Grafana annotations.
CREATE TABLE IF NOT EXISTS signals (
    time        timestamptz NOT NULL DEFAULT now(),   -- when the bot decided
    pair        text NOT NULL CHECK (pair ~ '^[A-Z]{6}$'),
    timeframe   text NOT NULL CHECK (timeframe ~ '^[0-9]+(m|h|d)$'),
    bucket      timestamptz NOT NULL,                 -- the bar the decision was taken on (its start)
    strategy    text NOT NULL,
    side        text NOT NULL CHECK (side IN ('buy', 'sell')),
    price       double precision NOT NULL CHECK (price > 0),   -- mid close of the bar
    indicators  jsonb NOT NULL DEFAULT '{}'::jsonb,
    reason      text NOT NULL DEFAULT '',
    dry_run     boolean NOT NULL DEFAULT true,        -- true: recorded only, no order was sent
    order_status text CHECK (order_status IN ('placed', 'rejected', 'skipped', 'failed')),
    order_ref   text,                                 -- IG deal reference when an order was sent
    order_note  text,                                 -- why an order was skipped, rejected or failed
    PRIMARY KEY (strategy, pair, timeframe, bucket)
);
-- "Latest signals of a pair" for the CLI and Grafana.
CREATE INDEX IF NOT EXISTS signals_pair_timeframe_bucket_idx ON signals (pair, timeframe, bucket DESC);
CREATE INDEX IF NOT EXISTS signals_time_idx ON signals (time DESC);

GRANT SELECT, INSERT ON signals TO trading_bot;
GRANT UPDATE (order_status, order_ref, order_note) ON signals TO trading_bot;
GRANT SELECT ON signals TO grafana_reader;
