"""The runner joins technicals() into the frame of a strategy that asks for it."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import psycopg
from psycopg_pool import ConnectionPool

from trading_bot.config import load_bot_settings
from trading_bot.market_data import TECHNICAL_COLUMNS, MarketData
from trading_bot.orders import OrderExecutor
from trading_bot.runner import Runner
from trading_bot.signals import SignalStore
from trading_bot.strategy import Signal

from .botkit import insert_candles
from .techkit import shaped_series
from .test_runner import LIMITS


@dataclass
class Watching:
    name: str = "watching"
    bars_needed: int = 3
    technicals: bool = True
    frames: list[pd.DataFrame] = field(default_factory=list)

    def evaluate(self, frame: pd.DataFrame) -> Signal | None:
        self.frames.append(frame)
        return None


def test_a_strategy_asking_for_technicals_sees_them_beside_the_indicators(
    db: psycopg.Connection, db_url: str, pool: ConnectionPool, market: MarketData
) -> None:
    insert_candles(db, "EURUSD", "15m", shaped_series(15, 400, seed=60))
    settings = load_bot_settings(database_url=db_url, bot_pairs=("EURUSD",), bot_timeframes=("15m",))
    strategy = Watching()
    runner = Runner(settings, market, SignalStore(pool), strategy, OrderExecutor(LIMITS, dry_run=True))

    runner.evaluate("EURUSD", "15m")

    (seen,) = strategy.frames
    assert set(TECHNICAL_COLUMNS) | {"ma_200", "tenkan"} <= set(seen.columns) and len(seen) == 3
    tech = market.technicals("EURUSD", "15m", 3)
    pd.testing.assert_frame_equal(seen[["adx_14", "ultosc", "obv_z_50"]], tech[["adx_14", "ultosc", "obv_z_50"]])
    assert seen.attrs == {"pair": "EURUSD", "timeframe": "15m", "displacement": 26}
