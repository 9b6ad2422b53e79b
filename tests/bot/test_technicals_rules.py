"""technicals() and volume_profile() beyond the values: errors, privileges, the profile's rules.

The profile is checked against a plain-Python reference (techkit.reference_profile) on shaped
histories, and on hand-made candles where the tie rules decide.
"""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pandas as pd
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .botkit import insert_candles
from .techkit import mid_frame, reference_profile, rollup_mid, shaped_series

T0 = dt.datetime(2025, 1, 8, tzinfo=dt.UTC)


def profile(conn: psycopg.Connection, pair: str, timeframe: str, *args: object) -> list[tuple]:
    extra = "".join(", %s" for _ in args)
    return conn.execute(f"SELECT * FROM volume_profile(%s, %s{extra})", (pair, timeframe, *args)).fetchall()


def assert_same_profile(got: list[tuple], ref: list[tuple]) -> None:
    assert [(r[0], r[4], r[5]) for r in got] == [(r[0], r[4], r[5]) for r in ref], "rows, POC and value area"
    np.testing.assert_allclose(np.array([r[1:4] for r in got]), np.array([r[1:4] for r in ref]), rtol=0, atol=1e-9)


def flat_candles(conn: psycopg.Connection, prices_ticks: list[tuple[float, int]], pair: str = "EURUSD") -> None:
    """One flat 15m candle (bid = ask = price) per (price, ticks), oldest first."""
    for i, (price, ticks) in enumerate(prices_ticks):
        conn.execute(
            "INSERT INTO candles (pair, timeframe, bucket, bid_open, bid_high, bid_low, bid_close, ask_open, ask_high,"
            " ask_low, ask_close, ticks, complete, source) VALUES (%s, '15m', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " true, 'stream')",
            (pair, T0 + dt.timedelta(minutes=15 * i), *[price] * 8, ticks),
        )


# --- technicals() ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("EURUSD", "15m", -1), "n must be a non-negative number of bars"),
        (("EURUSD", "15m", 100_001), "n must be at most 100000 bars"),
        (("EURUSD", "2h", 10), "unknown timeframe '2h'"),
        (("XXXYYY", "15m", 10), "unknown pair 'XXXYYY'"),
    ],
)
def test_technicals_rejects_bad_arguments_by_name(db: psycopg.Connection, args: tuple, message: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        db.execute("SELECT * FROM technicals(%s, %s, %s)", args)


def test_technicals_of_an_empty_series_or_zero_bars_is_empty(db: psycopg.Connection) -> None:
    assert db.execute("SELECT * FROM technicals('EURUSD', '15m', 300)").fetchall() == []
    insert_candles(db, "EURUSD", "15m", shaped_series(15, 40))
    assert db.execute("SELECT * FROM technicals('EURUSD', '15m', 0)").fetchall() == []


@pytest.mark.parametrize("role", ["trading_bot", "grafana_reader"])
def test_the_bot_and_grafana_may_call_both_functions(db: psycopg.Connection, role: str) -> None:
    insert_candles(db, "EURUSD", "15m", shaped_series(15, 120))
    db.execute(f"SET ROLE {role}")
    try:
        assert len(db.execute("SELECT * FROM technicals('EURUSD', '15m', 50)").fetchall()) == 50
        assert len(db.execute("SELECT * FROM volume_profile('EURUSD', '15m')").fetchall()) == 24
    finally:
        db.execute("RESET ROLE")


# --- volume_profile() -----------------------------------------------------------------------
@pytest.mark.parametrize(("timeframe", "minutes"), [("5m", 5), ("15m", 15)])
def test_profile_equals_the_reference_on_the_last_complete_candles(
    db: psycopg.Connection, timeframe: str, minutes: int
) -> None:
    series = shaped_series(minutes, 400, seed=20 + minutes, outage_at=200, outage_bars=12)
    insert_candles(db, "GBPJPY", timeframe, series, complete=[True] * 399 + [False])
    bars = mid_frame(series).iloc[:-1]  # the forming candle is not in a profile

    assert_same_profile(profile(db, "GBPJPY", timeframe), reference_profile(bars.tail(90)))
    assert_same_profile(profile(db, "GBPJPY", timeframe, 300, 40, 0.5), reference_profile(bars.tail(300), 40, 0.5))
    assert_same_profile(profile(db, "GBPJPY", timeframe, 1000, 7, 1.0), reference_profile(bars, 7, 1.0))


def test_profile_of_a_rollup_uses_its_rolled_up_bars(db: psycopg.Connection) -> None:
    insert_candles(db, "EURCHF", "15m", shaped_series(15, 2000, seed=31))
    bars = rollup_mid(db, "candles_4h", "EURCHF")  # all complete: their periods are long over

    assert_same_profile(profile(db, "EURCHF", "4h", 60, 12), reference_profile(bars.tail(60), 12))


def test_every_tick_is_in_exactly_one_bin_and_the_bins_tile_the_range(db: psycopg.Connection) -> None:
    series = shaped_series(15, 90, seed=32)
    insert_candles(db, "EURUSD", "15m", series)
    rows = profile(db, "EURUSD", "15m")
    bars = mid_frame(series)

    assert sum(r[3] for r in rows) == pytest.approx(series["ticks"].sum(), abs=1e-6)
    assert rows[0][1] == bars["low"].min() and rows[-1][2] == bars["high"].max()
    assert all(a[2] == b[1] for a, b in itertools.pairwise(rows)), "each bin ends where the next starts"
    assert sum(r[4] for r in rows) == 1, "one POC"


def test_a_flat_candle_gives_all_its_ticks_to_its_bin_and_the_top_bin_holds_the_high(db: psycopg.Connection) -> None:
    # Range 1.0 .. 1.4 in 4 bins of 0.1: 1.2 is the lower bound of bin 3, 1.4 the top bin's upper bound.
    flat_candles(db, [(1.0, 5), (1.2, 7), (1.4, 11)])

    rows = profile(db, "EURUSD", "15m", 90, 4)

    assert [r[3] for r in rows] == [5, 0, 7, 11]


def test_poc_is_the_lowest_bin_on_a_tie(db: psycopg.Connection) -> None:
    flat_candles(db, [(1.05, 10), (1.25, 10), (1.35, 3), (1.0, 0), (1.4, 0)])

    rows = profile(db, "EURUSD", "15m", 90, 4)

    assert [r[3] for r in rows] == [10, 0, 10, 3] and [r[4] for r in rows] == [True, False, False, False]


def test_value_area_grows_toward_the_larger_neighbour_and_upward_on_a_tie(db: psycopg.Connection) -> None:
    # Bins (5 of 0.1 from 1.0): 4, 6, 20, 6, 1 ticks, 37 in all. From the POC (bin 3) the
    # neighbours tie at 6: up (bin 4), 26 ticks; then 6 below vs 1 above: down (bin 2), 32 ticks.
    flat_candles(db, [(1.0, 4), (1.15, 6), (1.25, 20), (1.35, 6), (1.5, 1)])

    def area(share: float) -> list[bool]:
        return [r[5] for r in profile(db, "EURUSD", "15m", 90, 5, share)]

    assert [r[3] for r in profile(db, "EURUSD", "15m", 90, 5)] == [4, 6, 20, 6, 1]
    assert area(0.5) == [False, False, True, False, False], "20 of 37 ticks already hold 50 %"
    assert area(0.7) == [False, False, True, True, False], "upward on the tie: 26 >= 25.9"
    assert area(0.8) == [False, True, True, True, False], "then toward the larger neighbour: 32 >= 29.6"
    assert area(1.0) == [True] * 5


def test_profile_of_equal_prices_puts_everything_in_the_top_row(db: psycopg.Connection) -> None:
    flat_candles(db, [(1.1, 3), (1.1, 4)])

    rows = profile(db, "EURUSD", "15m", 90, 3)

    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [(1.1, 1.1, 0, False), (1.1, 1.1, 0, False), (1.1, 1.1, 7, True)]


def test_profile_of_a_pair_without_candles_is_empty(db: psycopg.Connection) -> None:
    assert profile(db, "EURUSD", "15m") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 24, 0.7), "bars must be at least 1 candle"),
        ((90, 0, 0.7), "rows must be at least 1 price bin"),
        ((90, 24, 0.0), r"value_area must be a share of all ticks in \(0, 1\]"),
        ((90, 24, 1.5), r"value_area must be a share of all ticks in \(0, 1\]"),
        ((90, 24, None), r"value_area must be a share of all ticks in \(0, 1\] \(0.70 is the default\), got NULL"),
    ],
)
def test_profile_rejects_bad_arguments_by_name(db: psycopg.Connection, args: tuple, message: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        profile(db, "EURUSD", "15m", *args)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    candles=st.lists(st.tuples(st.integers(0, 300), st.integers(0, 60), st.integers(0, 1000)), min_size=1, max_size=40),
    rows=st.integers(1, 30),
    share=st.floats(0.01, 1.0),
)
def test_profile_equals_the_reference_and_keeps_its_invariants_for_any_candles(
    db: psycopg.Connection, candles: list[tuple[int, int, int]], rows: int, share: float
) -> None:
    # Each candle: low = 1 + a pips, high = low + b pips (b = 0: flat), t ticks; bid = ask = price.
    db.execute("DELETE FROM candles WHERE pair = 'AUDCAD'")
    bars = pd.DataFrame(
        [(1.0 + a * 1e-4, 1.0 + (a + b) * 1e-4, t) for a, b, t in candles], columns=["low", "high", "ticks"]
    )
    for i, r in enumerate(bars.itertuples()):
        db.execute(
            "INSERT INTO candles (pair, timeframe, bucket, bid_open, bid_high, bid_low, bid_close, ask_open,"
            " ask_high, ask_low, ask_close, ticks, complete, source)"
            " VALUES ('AUDCAD', '15m', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, true, 'stream')",
            (T0 + dt.timedelta(minutes=15 * i), r.low, r.high, r.low, r.low, r.low, r.high, r.low, r.low, r.ticks),
        )

    got = profile(db, "AUDCAD", "15m", 30, rows, share)

    assert_same_profile(got, reference_profile(bars.tail(30), rows, share))
    ticks = [r[3] for r in got]
    area = [r[0] for r in got if r[5]]
    assert sum(r[4] for r in got) == 1 and got[[r[4] for r in got].index(True)][5], "one POC, in the value area"
    assert area == list(range(area[0], area[-1] + 1)), "the value area is one run of bins"
    assert sum(ticks[i - 1] for i in area) >= share * sum(ticks) - 1e-9
