-- Imported history (`ig-collector import`): candles the trader already had (a SQLite cache of a
-- REST-polling bot, MT4/MT5 or HistData exports) are stored with source = 'import', so they cost
-- no REST points and are told apart from what IG's stream or REST delivered.
--
-- Precedence, weakest first: import < rest < stream (complete).
-- * The importer never overwrites a stream or REST row (its own INSERT ... ON CONFLICT guard).
-- * store_rest_candles() (006) already replaces every row that is not a complete stream row, so a
--   REST candle replaces an imported one without a change here.
-- * The stream's candle upsert (collector/store.py) replaces an imported row: the stream is the
--   authority for any bucket it saw.
-- Idempotent: the CHECK is dropped and re-added with the same name.
ALTER TABLE candles DROP CONSTRAINT IF EXISTS candles_source_check;
ALTER TABLE candles ADD CONSTRAINT candles_source_check CHECK (source IN ('stream', 'rest', 'import'));

COMMENT ON COLUMN candles.source IS
    'stream (built from streamed ticks), rest (bought from IG REST or composed from REST 5m candles) '
    'or import (brought in by ig-collector import: never overwrites stream or rest, replaced by both)';
