"""Market data as the bot sees it: DataFrames with a UTC index, oldest first, NULL as NaN."""

from __future__ import annotations

import datetime as dt

import numpy as np
import psycopg

from trading_bot.market_data import MarketData

from .botkit import insert_candles, market_series, mid_bars


def test_candles_are_mid_prices_on_a_utc_index_oldest_first(db: psycopg.Connection, market: MarketData) -> None:
    series = market_series(15, 50)
    insert_candles(db, "EURUSD", "15m", series, complete=[True] * 49 + [False])

    frame = market.candles("EURUSD", "15m", 10)

    assert str(frame.index.tz) == "UTC" and frame.index.name == "bucket"
    assert frame.index.is_monotonic_increasing and len(frame) == 10
    assert frame.index[-1] == series["bucket"].iloc[-2], "the forming candle is left out"
    expected = mid_bars(series).iloc[-11:-1]
    np.testing.assert_allclose(frame[["open", "high", "low", "close"]].to_numpy(), expected.to_numpy(), atol=1e-12)
    assert frame.attrs == {"pair": "EURUSD", "timeframe": "15m"}
    assert market.candles("EURUSD", "15m", 10, include_forming=True).index[-1] == series["bucket"].iloc[-1]


def test_indicators_frame_names_its_series_and_has_nan_for_incomplete_windows(
    db: psycopg.Connection, market: MarketData
) -> None:
    insert_candles(db, "USDJPY", "5m", market_series(5, 100, price=150.0))

    frame = market.indicators("USDJPY", "5m", 100, displacement=26)

    assert frame.attrs == {"pair": "USDJPY", "timeframe": "5m", "displacement": 26}
    assert list(frame.columns) == [
        "open", "high", "low", "close", "ma_200", "tenkan", "kijun", "senkou_a", "senkou_b", "chikou_ref",
    ]  # fmt: skip
    assert frame["ma_200"].isna().all() and frame["tenkan"].isna().sum() == 8


def test_an_empty_series_is_an_empty_frame(db: psycopg.Connection, market: MarketData) -> None:
    frame = market.indicators("NZDCAD", "15m", 5)

    assert frame.empty and str(frame.index.tz) == "UTC"


def test_series_state_counts_bars_up_to_a_limit_with_oldest_and_newest(
    db: psycopg.Connection, market: MarketData
) -> None:
    series = market_series(15, 30)
    insert_candles(db, "EURUSD", "15m", series)

    states = {(s.pair, s.timeframe): s for s in market.series_state(["EURUSD", "GBPUSD"], ["15m"], limit=20)}

    eur = states[("EURUSD", "15m")]
    assert (eur.bars, eur.oldest, eur.newest) == (20, series["bucket"].iloc[10], series["bucket"].iloc[-1])
    assert states[("GBPUSD", "15m")].bars == 0 and states[("GBPUSD", "15m")].newest is None
    assert market.newest_complete(["EURUSD", "GBPUSD"], ["15m"]) == {
        ("EURUSD", "15m"): series["bucket"].iloc[-1].to_pydatetime().astimezone(dt.UTC)
    }
