"""Composition of coarse candles from fine ones: a 15m candle is exactly its three 5m candles,
equal to what IG (the simulator, from the same ticks) serves as its own 15m candle."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.compose import compose
from collector.config import load_settings
from collector.ig_rest import RestClient
from collector.models import Candle
from collector.simulator.server import Simulator
from collector.vocabulary import CandleSource

FIVE_MIN = 300_000
QUARTER = 900_000
T0 = int(dt.datetime(2025, 1, 15, 9, 0, tzinfo=dt.UTC).timestamp() * 1000)


def c5(bucket_ms: int, o: float, h: float, lo: float, cl: float, ticks: int = 3, **kw: object) -> Candle:
    return Candle("EURUSD", "5m", bucket_ms, o, h, lo, cl, o + 1e-4, h + 1e-4, lo + 1e-4, cl + 1e-4, ticks, True, **kw)


def test_a_15m_candle_takes_open_of_the_first_close_of_the_last_the_extremes_and_the_tick_sum() -> None:
    parts = [
        c5(T0, 1.10, 1.12, 1.09, 1.11, 4),
        c5(T0 + FIVE_MIN, 1.11, 1.15, 1.105, 1.14, 5),
        c5(T0 + 2 * FIVE_MIN, 1.14, 1.145, 1.08, 1.13, 6),
    ]
    (c,) = compose(reversed(parts), "15m")
    assert (c.pair, c.timeframe, c.bucket_ms, c.complete, c.source) == ("EURUSD", "15m", T0, True, CandleSource.STREAM)
    assert (c.bid_open, c.bid_high, c.bid_low, c.bid_close) == (1.10, 1.15, 1.08, 1.13)
    assert (c.ask_open, c.ask_high, c.ask_low, c.ask_close) == (1.10 + 1e-4, 1.15 + 1e-4, 1.08 + 1e-4, 1.13 + 1e-4)
    assert c.ticks == 15


def test_a_bucket_missing_one_of_its_5m_candles_is_not_composed() -> None:
    assert compose([c5(T0, 1, 1, 1, 1), c5(T0 + 2 * FIVE_MIN, 1, 1, 1, 1)], "15m") == []


def test_an_incomplete_5m_candle_keeps_its_bucket_from_being_composed() -> None:
    parts = [c5(T0, 1, 1, 1, 1), c5(T0 + FIVE_MIN, 1, 1, 1, 1), c5(T0 + 2 * FIVE_MIN, 1, 1, 1, 1)]
    parts[1] = Candle(*[getattr(parts[1], f) for f in ("pair", "timeframe", "bucket_ms")], *[1.0] * 8, 3, False)
    assert compose(parts, "15m") == []


def test_the_composed_source_is_the_weakest_of_its_inputs() -> None:
    parts = [
        c5(T0, 1, 1, 1, 1),
        c5(T0 + FIVE_MIN, 1, 1, 1, 1, source=CandleSource.REST),
        c5(T0 + 2 * FIVE_MIN, 1, 1, 1, 1),
    ]
    assert compose(parts, "15m")[0].source == CandleSource.REST
    parts[0] = c5(T0, 1, 1, 1, 1, source=CandleSource.IMPORT)
    assert compose(parts, "15m")[0].source == CandleSource.IMPORT


@pytest.mark.parametrize(
    ("candles", "message"),
    [
        ([c5(T0, 1, 1, 1, 1), c5(T0, 1, 1, 1, 1)], "given twice"),
        ([c5(T0 + 1, 1, 1, 1, 1)], "not aligned"),
        ([c5(T0, 1, 1, 1, 1)], "not a multiple"),
    ],
)
def test_bad_inputs_are_refused_with_the_reason(candles: list[Candle], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compose(candles, "5m" if message == "not a multiple" else "15m")


@given(st.lists(st.tuples(st.floats(1.0, 2.0), st.floats(1.0, 2.0), st.integers(0, 50)), min_size=9, max_size=9))
def test_composing_in_two_steps_equals_composing_in_one(quotes: list[tuple[float, float, int]]) -> None:
    fine = []
    for i, (a, b, n) in enumerate(quotes):
        lo, hi = min(a, b), max(a, b)
        fine.append(c5(T0 + i * FIVE_MIN, a, hi, lo, b, n))
    assert compose(compose(fine, "15m"), "45m") == compose(fine, "45m")


def test_15m_composed_from_the_simulators_5m_rest_candles_equals_its_15m_rest_candles() -> None:
    start = int(dt.datetime(2025, 1, 15, 12, 0, tzinfo=dt.UTC).timestamp() * 1000)
    with Simulator(
        pairs=("EURUSD", "USDJPY"), start_ms=start, ticks_per_second=0.0, seed=3,
        history_ms=6 * 3_600_000, history_ticks=20_000,
    ) as sim:  # fmt: skip
        settings = load_settings(
            ig_username=sim.username, ig_password=sim.password, ig_api_key=sim.api_key, ig_api_url=sim.url
        )
        client = RestClient(settings, spender="test", db_url="", now_ms=sim.now_ms)
        lo, hi = start - 6 * 3_600_000, start - QUARTER
        try:
            for pair in ("EURUSD", "USDJPY"):
                fives = client.fetch_candles(pair, "5m", lo, hi + 2 * FIVE_MIN, "test")
                quarters = client.fetch_candles(pair, "15m", lo, hi, "test")
                assert len(fives) == 72 and len(quarters) == 24
                assert compose(fives, "15m") == quarters
        finally:
            client.logout()
