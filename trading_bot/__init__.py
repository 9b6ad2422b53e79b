"""The trading bot: SQL indicators (MA-200, Ichimoku) from TimescaleDB, signals, optional orders.

It reads what the collector stores and spends IG REST points only when the collector is down
(freshness fallback) or when asked to warm up history, always within the shared budget.

Modules: `config` (typed settings), `market_hours` (when FX trades), `market_data` (candles
and indicators as DataFrames), `strategy` (the Strategy protocol and the example strategy),
`signals` (the signals table), `orders` (dry run or trading-ig behind limits), `freshness`
(REST fallback), `warmup` (history planner), `runner` (LISTEN candle_closed), `plot` (charts),
`cli` (the `trading-bot` command).
"""
