-- The 28 FX pairs. `epic` is rewritten by the collector at start from IG_EPIC_SUFFIX
-- (.CFD.IP / .MINI.IP / .TODAY.IP depend on the account) after it checked the epic via REST.
CREATE TABLE IF NOT EXISTS instruments (
    pair       text PRIMARY KEY CHECK (pair ~ '^[A-Z]{6}$'),
    epic       text NOT NULL UNIQUE,
    pip_size   double precision NOT NULL CHECK (pip_size > 0),
    enabled    boolean NOT NULL DEFAULT true,
    updated_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO instruments (pair, epic, pip_size)
SELECT p, 'CS.D.' || p || '.CFD.IP', CASE WHEN p LIKE '%JPY' THEN 0.01 ELSE 0.0001 END
FROM unnest(ARRAY[
    'EURUSD','GBPUSD','USDJPY','USDCHF','AUDUSD','NZDUSD','USDCAD',
    'EURGBP','EURJPY','EURCHF','EURAUD','EURNZD','EURCAD',
    'GBPJPY','GBPCHF','GBPAUD','GBPNZD','GBPCAD',
    'AUDJPY','NZDJPY','CADJPY','CHFJPY',
    'AUDCHF','NZDCHF','CADCHF','AUDNZD','AUDCAD','NZDCAD']) AS p
ON CONFLICT (pair) DO NOTHING;

GRANT SELECT ON instruments TO collector, trading_bot, grafana_reader;
GRANT UPDATE (epic, enabled, updated_at) ON instruments TO collector;
