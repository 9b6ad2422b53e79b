"""indicators() rules beyond the values: NULLs, forming bars, no look-ahead, errors, privileges."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import psycopg
import pytest

from .botkit import insert_candles, market_series, sql_indicators


def leading_nulls(frame: pd.DataFrame) -> dict[str, int]:
    """Per column, how many rows from the oldest are NULL before the first value (and none after)."""
    out = {}
    for col in ("ma_200", "tenkan", "kijun", "senkou_a", "senkou_b", "chikou_ref"):
        isna = frame[col].isna().to_numpy()
        first = int(isna.argmin()) if not isna.all() else len(isna)
        assert not isna[first:].any(), f"{col} has a NULL after its first value"
        out[col] = first
    return out


def test_every_value_is_null_until_its_whole_window_exists(db: psycopg.Connection) -> None:
    insert_candles(db, "EURUSD", "15m", market_series(15, 230))

    frame = sql_indicators(db, "EURUSD", "15m", 230)

    assert leading_nulls(frame) == {
        "ma_200": 199,  # 200 bars
        "tenkan": 8,  # 9 bars
        "kijun": 25,  # 26 bars
        "senkou_a": 50,  # kijun's 26 bars, taken 25 bars later
        "senkou_b": 76,  # 52 bars, taken 25 bars later
        "chikou_ref": 25,  # the close 25 bars earlier
    }


def test_a_short_request_still_reads_the_history_its_windows_need(db: psycopg.Connection) -> None:
    insert_candles(db, "EURUSD", "5m", market_series(5, 201))

    frame = sql_indicators(db, "EURUSD", "5m", 3)

    assert len(frame) == 3
    assert frame["ma_200"].isna().tolist() == [True, False, False], "bars 199, 200, 201 of 201"
    assert frame[["tenkan", "kijun", "senkou_a", "senkou_b", "chikou_ref"]].notna().all().all()


def test_with_fewer_bars_than_asked_all_stored_bars_come_back_oldest_first(db: psycopg.Connection) -> None:
    series = market_series(5, 40)
    insert_candles(db, "EURUSD", "5m", series)

    frame = sql_indicators(db, "EURUSD", "5m", 300)

    assert list(frame.index) == list(series["bucket"])
    assert frame["ma_200"].isna().all() and frame["senkou_b"].isna().all()


def test_no_value_changes_when_a_later_bar_is_appended(db: psycopg.Connection) -> None:
    series = market_series(15, 701, seed=5)
    insert_candles(db, "EURUSD", "15m", series.iloc[:700])
    before = sql_indicators(db, "EURUSD", "15m", 400)

    insert_candles(db, "EURUSD", "15m", series.iloc[700:])
    after = sql_indicators(db, "EURUSD", "15m", 401)

    assert after.index[-1] == series["bucket"].iloc[-1]
    pd.testing.assert_frame_equal(after.iloc[:-1], before, check_exact=True)


def test_forming_5m_and_15m_candles_are_left_out_unless_asked_for(db: psycopg.Connection) -> None:
    series = market_series(5, 250)
    insert_candles(db, "EURUSD", "5m", series, complete=[True] * 249 + [False])

    closed = sql_indicators(db, "EURUSD", "5m", 5)
    forming = sql_indicators(db, "EURUSD", "5m", 5, True)

    assert closed.index[-1] == series["bucket"].iloc[-2]
    assert forming.index[-1] == series["bucket"].iloc[-1]
    assert list(forming.index[:-1]) == list(closed.index[1:])


def _hour(t: dt.datetime) -> dt.datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def test_a_rollup_bar_is_forming_until_its_period_is_over(db: psycopg.Connection) -> None:
    # 15m candles up to the one forming now: the current hour is not over.
    now = dt.datetime.now(dt.UTC)
    current_15m = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
    start = current_15m - dt.timedelta(minutes=15 * 99)
    series = market_series(15, 100, start=start, quiet=0.0)
    series["bucket"] = pd.date_range(start, periods=100, freq="15min", tz="UTC")
    insert_candles(db, "EURUSD", "15m", series, complete=[True] * 99 + [False])

    closed = sql_indicators(db, "EURUSD", "1h", 3)
    forming = sql_indicators(db, "EURUSD", "1h", 3, True)

    assert forming.index[-1] == _hour(current_15m)
    assert closed.index[-1] == _hour(current_15m) - dt.timedelta(hours=1)


def test_a_past_rollup_bar_is_forming_while_one_of_its_15m_candles_is_open(db: psycopg.Connection) -> None:
    series = market_series(15, 80, quiet=0.0)  # in January 2025: every hour is long over
    last_hour = _hour(series["bucket"].iloc[-1].to_pydatetime())
    complete = [True] * 80
    complete[-1] = False
    insert_candles(db, "EURUSD", "15m", series, complete=complete)

    assert sql_indicators(db, "EURUSD", "1h", 1).index[-1] < last_hour
    assert sql_indicators(db, "EURUSD", "1h", 1, True).index[-1] == last_hour
    db.execute("UPDATE candles SET complete = true WHERE pair = 'EURUSD'")
    assert sql_indicators(db, "EURUSD", "1h", 1).index[-1] == last_hour


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("indicators('EURUSD', '2h', 10)", "unknown timeframe '2h': indicators are served for 5m, 15m, 1h, 4h and 1d"),
        ("indicators('EURUSD', '15M', 10)", "unknown timeframe '15M'"),
        ("indicators('XXXYYY', '15m', 10)", "unknown pair 'XXXYYY'"),
        ("indicators('EURUSD', '15m', -1)", "n must be a non-negative number of bars, got -1"),
        ("indicators('EURUSD', '15m', 10, false, 0)", "displacement must be at least 1 bar"),
    ],
)
def test_bad_arguments_raise_a_clear_error(db: psycopg.Connection, call: str, message: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        db.execute(f"SELECT * FROM {call}")


def test_the_bot_and_grafana_may_execute_it_but_the_bot_may_not_write_candles(db: psycopg.Connection) -> None:
    insert_candles(db, "EURUSD", "15m", market_series(15, 30))
    for role in ("trading_bot", "grafana_reader"):
        with db.transaction():
            db.execute(f"SET LOCAL ROLE {role}")
            assert len(db.execute("SELECT * FROM indicators('EURUSD', '1h', 5)").fetchall()) == 5
            assert len(db.execute("SELECT * FROM last_candles('EURUSD', '15m', 5)").fetchall()) == 5
    with pytest.raises(psycopg.errors.InsufficientPrivilege), db.transaction():
        db.execute("SET LOCAL ROLE trading_bot")
        db.execute("UPDATE candles SET ticks = 0 WHERE pair = 'EURUSD'")


def test_signals_are_written_by_the_bot_and_only_read_by_grafana(db: psycopg.Connection) -> None:
    insert = (
        "INSERT INTO signals (pair, timeframe, bucket, strategy, side, price) "
        "VALUES ('EURUSD', '15m', '2025-01-08 10:00Z', 'test', 'buy', 1.1)"
    )
    with db.transaction():
        db.execute("SET LOCAL ROLE trading_bot")
        db.execute(insert)
        assert db.execute("SELECT count(*) FROM signals").fetchone() == (1,)
    with pytest.raises(psycopg.errors.InsufficientPrivilege), db.transaction():
        db.execute("SET LOCAL ROLE grafana_reader")
        db.execute(insert.replace("'test'", "'other'"))
