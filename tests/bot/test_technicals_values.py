"""technicals() equals TA-Lib, NULLs included, to 1e-9, for every timeframe it serves.

The histories switch between trends, ranges, bursts and flat bars (techkit.shaped_series) on
the FX calendar: weekends absent, quiet buckets, a collector outage; the 1d series crosses both
2025 DST changes. References run TA-Lib on the whole stored series (ADX and the DIs on the slice
technicals() seeds them on: the n returned bars and up to 250 before), so equality also proves
SQL reads enough history and never looks ahead.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import psycopg
import pytest

from .botkit import insert_candles, sql_indicators
from .techkit import (
    assert_same_technicals,
    mid_frame,
    reference_technicals,
    rollup_mid,
    shaped_series,
    sql_technicals,
)

ICHIMOKU = ("open", "high", "low", "close", "ma_200", "tenkan", "kijun", "senkou_a", "senkou_b", "chikou_ref")


@pytest.mark.parametrize(("timeframe", "minutes"), [("5m", 5), ("15m", 15)])
def test_candle_timeframes_match_talib_across_weekends_gaps_and_flat_bars(
    db: psycopg.Connection, timeframe: str, minutes: int
) -> None:
    series = shaped_series(minutes, 1400, seed=minutes, outage_at=500, outage_bars=40)
    assert series["bucket"].diff().max() > pd.Timedelta(days=1), "the series crosses a weekend"
    insert_candles(db, "EURUSD", timeframe, series)
    bars = mid_frame(series)
    assert (bars["high"] == bars["low"]).sum() > 20, "flat bars are in the history"

    for n in (1, 30, 300, 1149, 1400, 2000):
        assert_same_technicals(sql_technicals(db, "EURUSD", timeframe, n), reference_technicals(bars, n))


@pytest.mark.parametrize("timeframe", ["1h", "4h", "1d"])
def test_rollup_timeframes_match_talib_on_the_rolled_up_bars(db: psycopg.Connection, timeframe: str) -> None:
    # 15m candles over ~56 weeks of 2025: enough 1d bars for MA-200 and both DST changes.
    series = shaped_series(15, 27_000, seed=3, outage_at=9000, outage_bars=30)
    insert_candles(db, "GBPUSD", "15m", series)
    bars = rollup_mid(db, f"candles_{timeframe}", "GBPUSD")
    assert len(bars) >= 280
    if timeframe == "1d":
        starts = set(bars.index.hour)
        assert starts == {21, 22}, "1d bars start 17:00 New York: 21:00 UTC in summer, 22:00 in winter"

    for n in (20, 200, len(bars)):
        assert_same_technicals(sql_technicals(db, "GBPUSD", timeframe, n), reference_technicals(bars, n))


def test_a_short_history_is_null_until_each_window_exists(db: psycopg.Connection) -> None:
    series = shaped_series(15, 60, seed=4)
    insert_candles(db, "EURUSD", "15m", series)

    frame = sql_technicals(db, "EURUSD", "15m", 300)

    assert_same_technicals(frame, reference_technicals(mid_frame(series), 300))
    first_value = {c: int(frame[c].isna().to_numpy().argmin()) for c in frame.columns if frame[c].notna().any()}
    assert first_value == {
        "open": 0, "high": 0, "low": 0, "close": 0, "ticks": 0, "ma_21": 20, "ma_50": 49,
        "plus_di_14": 14, "minus_di_14": 14, "adx_14": 27, "aroon_up_25": 25, "aroon_down_25": 25,
        "ultosc": 28, "obv_z_50": 49, "tenkan": 8, "kijun": 25, "senkou_a": 50, "chikou_ref": 25,
    }  # fmt: skip
    assert frame["ma_200"].isna().all() and frame["senkou_b"].isna().all(), "no 200-bar / 77-bar window yet"


def test_a_long_flat_run_keeps_the_dis_and_nulls_the_obv_z_score(db: psycopg.Connection) -> None:
    # 400 identical bars: the smoothed range only decays (TA-Lib keeps the DIs' ratio), the DIs'
    # sum stays far from zero, the OBV stops moving, every window's range is 0.
    series = shaped_series(5, 900, seed=9, flat_run_at=300, flat_run=400)
    insert_candles(db, "USDJPY", "5m", series)

    frame = sql_technicals(db, "USDJPY", "5m", 450)

    assert_same_technicals(frame, reference_technicals(mid_frame(series), 450))
    run = frame.iloc[200:250]  # bars 650..699, the end of the flat run (the frame starts at bar 450)
    assert np.ptp(run["plus_di_14"]) < 1e-9 and run["plus_di_14"].iloc[0] > 0, "the ratio of two decaying sums"
    assert run["obv_z_50"].isna().all(), "NULL when OBV's deviation is 0"
    assert (run["aroon_up_25"] == 100).all() and (run["aroon_down_25"] == 100).all(), "ties: the newest bar"
    assert (run["ultosc"] == 0).all(), "terms over a zero range are left out"


def test_a_history_starting_flat_has_zero_dis_and_adx_until_a_bar_moves(db: psycopg.Connection) -> None:
    series = shaped_series(15, 120, seed=10, flat_run_at=0, flat_run=60)
    insert_candles(db, "NZDUSD", "15m", series)

    frame = sql_technicals(db, "NZDUSD", "15m", 120)

    assert_same_technicals(frame, reference_technicals(mid_frame(series), 120))
    assert (frame["plus_di_14"].iloc[14:60] == 0).all() and (frame["adx_14"].iloc[27:60] == 0).all()
    assert frame["plus_di_14"].iloc[61:].gt(0).any()


def test_the_forming_bar_is_in_the_slice_only_when_asked(db: psycopg.Connection) -> None:
    series = shaped_series(15, 600, seed=6)
    insert_candles(db, "AUDUSD", "15m", series, complete=[True] * 599 + [False])
    bars = mid_frame(series)

    assert_same_technicals(sql_technicals(db, "AUDUSD", "15m", 300), reference_technicals(bars.iloc[:-1], 300))
    assert_same_technicals(sql_technicals(db, "AUDUSD", "15m", 300, True), reference_technicals(bars, 300))


def test_ichimoku_and_ma_200_are_bit_for_bit_those_of_indicators(db: psycopg.Connection) -> None:
    series = shaped_series(15, 900, seed=7, outage_at=100, outage_bars=10)
    insert_candles(db, "EURJPY", "15m", series)

    for n in (1, 100, 900):
        tech = sql_technicals(db, "EURJPY", "15m", n)[list(ICHIMOKU)]
        pd.testing.assert_frame_equal(tech, sql_indicators(db, "EURJPY", "15m", n), check_exact=True)


def test_adx_is_seeded_250_bars_before_the_first_returned_bar(db: psycopg.Connection) -> None:
    series = shaped_series(5, 900, seed=8)
    insert_candles(db, "EURGBP", "5m", series)
    bars = mid_frame(series)

    short, long = sql_technicals(db, "EURGBP", "5m", 1), sql_technicals(db, "EURGBP", "5m", 600)

    assert short["adx_14"].iloc[-1] != long["adx_14"].iloc[-1], "a different seed, a (slightly) different value"
    assert abs(short["adx_14"].iloc[-1] - long["adx_14"].iloc[-1]) < 1e-3
    assert_same_technicals(short, reference_technicals(bars, 1))
    assert_same_technicals(long, reference_technicals(bars, 600))
    other = [c for c in short.columns if c not in ("adx_14", "plus_di_14", "minus_di_14")]
    np.testing.assert_array_equal(short[other].to_numpy(), long[other].tail(1).to_numpy())


def test_obv_z_score_stays_exact_with_tick_counts_in_the_millions(db: psycopg.Connection) -> None:
    # 400 bars of ~2 million ticks: OBV's squares pass bigint's sums, so SQL switches to numeric.
    series = shaped_series(5, 400, seed=13)
    series["ticks"] = np.random.default_rng(13).integers(1_000_000, 3_000_000, len(series))
    insert_candles(db, "CADJPY", "5m", series)
    close, ticks = mid_frame(series)["close"].to_numpy(), series["ticks"].to_numpy()

    frame = sql_technicals(db, "CADJPY", "5m", 300)

    # Exact reference in Python integers: z = (50 x - S1) / sqrt(50 S2 - S1^2) over 50 bars.
    obv = [0]
    for k in range(1, len(close)):
        obv.append(
            obv[-1] + (int(ticks[k]) if close[k] > close[k - 1] else -int(ticks[k]) if close[k] < close[k - 1] else 0)
        )
    want = []
    for t in range(len(close) - 300, len(close)):
        window = obv[t - 49 : t + 1]
        s1, s2 = sum(window), sum(x * x for x in window)
        q = 50 * s2 - s1 * s1
        want.append(float(50 * obv[t] - s1) / np.sqrt(float(q)) if q > 0 else np.nan)
    np.testing.assert_allclose(frame["obv_z_50"].to_numpy(), want, rtol=0, atol=1e-12)
    ref = reference_technicals(mid_frame(series), 300)["obv_z_50"].to_numpy()
    np.testing.assert_allclose(frame["obv_z_50"].to_numpy(), ref, rtol=0, atol=1e-6)  # TA-Lib's float variance


@pytest.mark.full_edition
def test_half_materialized_rollups_match_talib(db: psycopg.Connection, full_edition) -> None:
    # As in test_indicators_values: the year 2000 keeps every other test's bars above the watermark.
    series = shaped_series(15, 6000, start=dt.datetime(2000, 1, 5, tzinfo=dt.UTC), seed=14)
    insert_candles(db, "EURGBP", "15m", series)
    db.execute("CALL refresh_continuous_aggregate('candles_4h', NULL, %s)", (series["bucket"].iloc[3000],))
    try:
        bars = rollup_mid(db, "candles_4h", "EURGBP")
        assert_same_technicals(sql_technicals(db, "EURGBP", "4h", 300), reference_technicals(bars, 300))
    finally:
        db.execute("DELETE FROM candles WHERE pair = 'EURGBP'")
        db.execute("CALL refresh_continuous_aggregate('candles_4h', NULL, %s)", (series["bucket"].iloc[3000],))
