-- One REST budget shared by the collector (gap backfill) and the bot (freshness fallback):
-- the last allowance IG reported and every spend, so neither spends what the other needs.
CREATE TABLE IF NOT EXISTS rest_allowance (
    id           boolean PRIMARY KEY DEFAULT true CHECK (id),   -- a single row
    remaining    integer NOT NULL,
    total        integer NOT NULL,
    expires_at   timestamptz NOT NULL,      -- when IG resets the allowance
    exhausted    boolean NOT NULL DEFAULT false,  -- IG answered 403 exceeded-...-allowance
    updated_at   timestamptz NOT NULL DEFAULT now(),
    updated_by   text NOT NULL
);

CREATE TABLE IF NOT EXISTS rest_spend (
    id          bigserial PRIMARY KEY,
    time        timestamptz NOT NULL DEFAULT now(),
    spender     text NOT NULL,              -- 'collector' | 'trading_bot' | 'backfill'
    pair        text,
    resolution  text,
    range_from  timestamptz,
    range_to    timestamptz,
    points      integer NOT NULL CHECK (points >= 0),
    purpose     text NOT NULL               -- 'gap', 'repair', 'warmup', 'freshness', ...
);
CREATE INDEX IF NOT EXISTS rest_spend_time_idx ON rest_spend (time);

GRANT SELECT, INSERT, UPDATE ON rest_allowance TO collector, trading_bot;
GRANT SELECT, INSERT ON rest_spend TO collector, trading_bot;
GRANT USAGE ON SEQUENCE rest_spend_id_seq TO collector, trading_bot;
GRANT SELECT ON rest_allowance, rest_spend TO grafana_reader;
