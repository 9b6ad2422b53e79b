"""The one-line data layer (`from trading_bot import get_candles`) and the technicals frames."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import psycopg
import pytest

from trading_bot.market_data import MarketData

from .botkit import insert_candles
from .techkit import TECHNICAL_COLUMNS, mid_frame, reference_profile, shaped_series, sql_technicals


def test_get_candles_is_the_proposals_frame_from_the_database(db: psycopg.Connection, db_url: str) -> None:
    from trading_bot import get_candles

    series = shaped_series(15, 300, seed=40)
    insert_candles(db, "EURUSD", "15m", series, complete=[True] * 299 + [False])

    frame = get_candles("EURUSD", "15m", database_url=db_url)

    assert list(frame.columns) == ["timestamp", "open", "high", "low", "close", "volume"]
    assert len(frame) == 200 and isinstance(frame.index, pd.RangeIndex)
    assert str(frame["timestamp"].dt.tz) == "UTC" and frame["timestamp"].is_monotonic_increasing
    expected = mid_frame(series).iloc[-201:-1]  # the forming candle is left out
    assert list(frame["timestamp"]) == list(expected.index)
    np.testing.assert_array_equal(frame[["open", "high", "low", "close"]].to_numpy(), expected.iloc[:, :4].to_numpy())
    assert frame["volume"].dtype == np.int64 and list(frame["volume"]) == list(series["ticks"].iloc[-201:-1])


def test_get_candles_counts_and_includes_the_forming_bar_when_asked(db: psycopg.Connection, db_url: str) -> None:
    from trading_bot import get_candles

    series = shaped_series(5, 60, seed=41)
    insert_candles(db, "GBPUSD", "5m", series, complete=[True] * 59 + [False])

    assert len(get_candles("GBPUSD", "5m", count=10, database_url=db_url)) == 10
    assert get_candles("GBPUSD", "5m", 10, True, database_url=db_url)["timestamp"].iloc[-1] == series["bucket"].iloc[-1]
    assert len(get_candles("GBPUSD", "5m", 500, database_url=db_url)) == 59, "all complete bars there are"


def test_get_candles_reads_database_url_from_the_environment(
    db: psycopg.Connection, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trading_bot import get_candles

    insert_candles(db, "EURUSD", "15m", shaped_series(15, 30, seed=42))
    monkeypatch.setenv("DATABASE_URL", db_url)

    assert len(get_candles("EURUSD", "15m", 5)) == 5


def test_get_candles_names_a_bad_timeframe(db_url: str) -> None:
    from trading_bot import get_candles

    with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown timeframe '2h'"):
        get_candles("EURUSD", "2h", database_url=db_url)


def test_importing_the_package_does_not_import_pandas() -> None:
    code = "import sys, trading_bot; assert 'pandas' not in sys.modules; trading_bot.get_candles; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_technicals_frame_is_the_sql_function_on_a_utc_index(db: psycopg.Connection, market: MarketData) -> None:
    insert_candles(db, "AUDJPY", "15m", shaped_series(15, 400, seed=43, price=95.0))

    frame = market.technicals("AUDJPY", "15m", 120)

    assert list(frame.columns) == list(TECHNICAL_COLUMNS) and frame.index.name == "bucket"
    assert frame.attrs == {"pair": "AUDJPY", "timeframe": "15m", "displacement": 26}
    pd.testing.assert_frame_equal(frame, sql_technicals(db, "AUDJPY", "15m", 120), check_names=False)


def test_volume_profile_frame_has_one_row_per_bin_with_flags(db: psycopg.Connection, market: MarketData) -> None:
    series = shaped_series(5, 200, seed=44)
    insert_candles(db, "EURUSD", "5m", series)

    frame = market.volume_profile("EURUSD", "5m", bars=90, rows=12)

    assert list(frame.columns) == ["row", "price_low", "price_high", "ticks", "poc", "in_value_area"]
    assert frame["poc"].dtype == bool and frame["poc"].sum() == 1 and len(frame) == 12
    ref = reference_profile(mid_frame(series).tail(90), 12)
    np.testing.assert_allclose(frame["ticks"].to_numpy(), [r[3] for r in ref], rtol=0, atol=1e-9)
    assert frame.attrs["bars"] == 90
