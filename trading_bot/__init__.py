"""The trading bot: SQL indicators (MA-200, Ichimoku, and the whole technicals() set) from
TimescaleDB, signals, optional orders.

It reads what the collector stores and spends IG REST points only when the collector is down
(freshness fallback) or when asked to warm up history, always within the shared budget.

`from trading_bot import get_candles` is the one-line data layer for an existing bot:
`get_candles(pair, timeframe, count=200, include_forming=False)` returns a DataFrame with
columns timestamp, open, high, low, close, volume (UTC, oldest first) from the database.

Modules: `config` (typed settings), `market_hours` (when FX trades), `market_data` (candles,
indicators, technicals and the volume profile as DataFrames; `get_candles`), `strategy` (the
Strategy protocol and the example strategy), `signals` (the signals table), `orders` (dry run or
trading-ig behind limits), `freshness` (REST fallback), `warmup` (history planner), `runner`
(LISTEN candle_closed), `plot` (charts), `cli` (the `trading-bot` command).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .market_data import get_candles

__all__ = ["get_candles"]


def __getattr__(name: str) -> Any:
    # Lazy, so `trading-bot --help` and the collector's imports do not pay for pandas and psycopg.
    if name == "get_candles":
        from .market_data import get_candles

        return get_candles
    raise AttributeError(f"module 'trading_bot' has no attribute {name!r}")
