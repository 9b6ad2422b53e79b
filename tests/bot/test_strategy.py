"""The example strategy: Tenkan/Kijun crosses, traded only with MA-200, the cloud and Chikou."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from trading_bot.strategy import IchimokuMa200, Strategy, strategy_by_name

BARS = pd.DatetimeIndex(["2025-01-08 10:00", "2025-01-08 10:15"], tz="UTC", name="bucket")


def frame(prev: dict[str, float], bar: dict[str, float]) -> pd.DataFrame:
    base = {"open": 1.1, "high": 1.12, "low": 1.09, "close": 1.11}
    f = pd.DataFrame([{**base, **prev}, {**base, **bar}], index=BARS)
    f.attrs.update(pair="EURUSD", timeframe="15m", displacement=26)
    return f


BULL = {"close": 1.12, "ma_200": 1.10, "senkou_a": 1.105, "senkou_b": 1.10, "chikou_ref": 1.11}
BEAR = {"close": 1.08, "ma_200": 1.10, "senkou_a": 1.095, "senkou_b": 1.10, "chikou_ref": 1.09}


def test_it_satisfies_the_strategy_protocol() -> None:
    assert isinstance(strategy_by_name("ichimoku_ma200"), Strategy)
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        strategy_by_name("nope")


def test_buys_when_tenkan_crosses_above_kijun_above_ma200_cloud_and_chikou() -> None:
    f = frame({**BULL, "tenkan": 1.100, "kijun": 1.101}, {**BULL, "tenkan": 1.103, "kijun": 1.102})

    signal = IchimokuMa200().evaluate(f)

    assert signal is not None
    assert (signal.pair, signal.timeframe, signal.side, signal.price) == ("EURUSD", "15m", "buy", 1.12)
    assert signal.bucket == BARS[-1].to_pydatetime()
    assert signal.indicators["tenkan"] == 1.103 and signal.indicators["prev_kijun"] == 1.101
    assert "crossed above" in signal.reason


def test_sells_on_the_mirror_image() -> None:
    f = frame({**BEAR, "tenkan": 1.100, "kijun": 1.099}, {**BEAR, "tenkan": 1.097, "kijun": 1.098})

    signal = IchimokuMa200().evaluate(f)

    assert signal is not None and signal.side == "sell"


@pytest.mark.parametrize(
    "change",
    [
        {"ma_200": 1.13},  # close below MA-200: against the trend
        {"senkou_a": 1.125},  # close inside the cloud
        {"chikou_ref": 1.125},  # price lower than D-1 bars ago
    ],
)
def test_a_cross_against_any_filter_is_not_a_signal(change: dict[str, float]) -> None:
    f = frame({**BULL, "tenkan": 1.100, "kijun": 1.101}, {**BULL, "tenkan": 1.103, "kijun": 1.102, **change})

    assert IchimokuMa200().evaluate(f) is None


def test_no_cross_no_signal() -> None:
    f = frame({**BULL, "tenkan": 1.103, "kijun": 1.101}, {**BULL, "tenkan": 1.104, "kijun": 1.102})

    assert IchimokuMa200().evaluate(f) is None


def test_no_signal_while_a_window_is_incomplete() -> None:
    f = frame({**BULL, "tenkan": 1.100, "kijun": 1.101}, {**BULL, "tenkan": 1.103, "kijun": 1.102, "ma_200": math.nan})

    assert IchimokuMa200().evaluate(f) is None


def test_the_technicals_in_the_frame_are_recorded_with_the_signal() -> None:
    tech = {"adx_14": 31.5, "aroon_up_25": 96.0, "ultosc": 58.2, "obv_z_50": 1.4}
    f = frame({**BULL, "tenkan": 1.100, "kijun": 1.101}, {**BULL, "tenkan": 1.103, "kijun": 1.102, **tech})

    signal = IchimokuMa200().evaluate(f)

    assert signal is not None and IchimokuMa200().technicals
    assert {k: signal.indicators[k] for k in tech} == tech
    assert (
        "adx_14"
        not in IchimokuMa200()
        .evaluate(frame({**BULL, "tenkan": 1.1, "kijun": 1.101}, {**BULL, "tenkan": 1.103, "kijun": 1.102}))
        .indicators
    )
