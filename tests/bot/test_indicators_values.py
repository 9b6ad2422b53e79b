"""indicators() returns exactly docs/design.md §8's values, for every timeframe it serves.

Each series crosses weekends, quiet buckets and a collector outage, so a window that counted
time instead of bars, or skipped the wrong rows, would show. References are computed on the
whole stored series; SQL reads only the slice it needs, so equality also proves the slice is
long enough. Tolerance 1e-9 on prices around 1.1.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import psycopg
import pytest

from .botkit import insert_candles, market_series, mid_bars, reference_indicators, rollup_bars, sql_indicators

COLUMNS = ["open", "high", "low", "close", "ma_200", "tenkan", "kijun", "senkou_a", "senkou_b", "chikou_ref"]


def assert_same(sql: pd.DataFrame, ref: pd.DataFrame) -> None:
    assert list(sql.index) == list(ref.index), "same bars, oldest first"
    for col in COLUMNS:
        np.testing.assert_allclose(sql[col].to_numpy(), ref[col].to_numpy(), rtol=0, atol=1e-9, err_msg=col)


@pytest.mark.parametrize(("timeframe", "minutes"), [("5m", 5), ("15m", 15)])
def test_candle_timeframes_match_the_reference_across_weekends_and_gaps(
    db: psycopg.Connection, timeframe: str, minutes: int
) -> None:
    series = market_series(minutes, 1400, seed=minutes, outage_at=500, outage_bars=40)
    assert series["bucket"].diff().max() > pd.Timedelta(days=1), "the series crosses a weekend"
    insert_candles(db, "EURUSD", timeframe, series)
    ref = reference_indicators(mid_bars(series))

    assert_same(sql_indicators(db, "EURUSD", timeframe, 300), ref.tail(300))
    assert_same(sql_indicators(db, "EURUSD", timeframe, 1400), ref)
    assert_same(sql_indicators(db, "EURUSD", timeframe, 2000), ref)


@pytest.mark.parametrize("timeframe", ["1h", "4h", "1d"])
def test_rollup_timeframes_match_the_reference_on_the_rolled_up_bars(db: psycopg.Connection, timeframe: str) -> None:
    # 15m candles over ~56 weeks: enough 1d bars for MA-200 and a full cloud.
    series = market_series(15, 27_000, seed=3, outage_at=9000, outage_bars=30)
    insert_candles(db, "GBPUSD", "15m", series)
    bars = mid_bars(rollup_bars(db, f"candles_{timeframe}", "GBPUSD"))
    assert len(bars) >= 277, "enough rolled-up bars for every window"
    ref = reference_indicators(bars)
    assert ref["ma_200"].notna().sum() > 50

    assert_same(sql_indicators(db, "GBPUSD", timeframe, 60), ref.tail(60))
    assert_same(sql_indicators(db, "GBPUSD", timeframe, len(bars)), ref)


def test_displacement_is_a_parameter_shifting_cloud_and_chikou_by_d_minus_1(db: psycopg.Connection) -> None:
    series = market_series(15, 600, seed=11)
    insert_candles(db, "USDJPY", "15m", series)
    ref = reference_indicators(mid_bars(series), displacement=30)

    assert_same(sql_indicators(db, "USDJPY", "15m", 400, False, 30), ref.tail(400))


def test_the_four_argument_call_uses_displacement_26(db: psycopg.Connection) -> None:
    series = market_series(5, 400, seed=12)
    insert_candles(db, "AUDUSD", "5m", series)

    four = sql_indicators(db, "AUDUSD", "5m", 200, False)
    five = sql_indicators(db, "AUDUSD", "5m", 200, False, 26)
    pd.testing.assert_frame_equal(four, five)
    assert_same(four, reference_indicators(mid_bars(series)).tail(200))


@pytest.mark.full_edition
@pytest.mark.parametrize("timeframe", ["1h", "4h"])
def test_rollups_half_materialized_match_the_reference(db: psycopg.Connection, full_edition, timeframe: str) -> None:
    # In the year 2000: the refresh moves the rollup's watermark, and every other test's bars
    # (2025 and later) must stay above it, where the rollups aggregate in real time.
    series = market_series(15, 6000, start=dt.datetime(2000, 1, 5, tzinfo=dt.UTC), seed=8)
    insert_candles(db, "EURGBP", "15m", series)
    view = f"candles_{timeframe}"
    # Materialize the older half: reads then join materialized buckets and real-time aggregation.
    db.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, %s)", (series["bucket"].iloc[3000],))
    try:
        bars = mid_bars(rollup_bars(db, view, "EURGBP"))
        ref = reference_indicators(bars)

        assert_same(sql_indicators(db, "EURGBP", timeframe, 300), ref.tail(300))
        assert_same(sql_indicators(db, "EURGBP", timeframe, len(bars)), ref)
    finally:
        db.execute("DELETE FROM candles WHERE pair = 'EURGBP'")
        db.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, %s)", (series["bucket"].iloc[3000],))
