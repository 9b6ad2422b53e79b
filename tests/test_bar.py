"""The OHLC fold of one bucket: per tick, per run of sorted ticks, and to and from a Candle."""

from __future__ import annotations

import numpy as np

from collector.bar import Bar, runs
from collector.models import Candle
from collector.vocabulary import CandleSource

T = 1_709_892_000_000  # 2024-03-08 10:00 UTC, a 5m boundary
S = 1000


def prices(b: Bar) -> tuple:
    return (b.open_ms, b.close_ms, b.bid_open, b.bid_high, b.bid_low, b.bid_close,
            b.ask_open, b.ask_high, b.ask_low, b.ask_close, b.ticks)  # fmt: skip


def test_a_bar_of_one_tick_has_that_tick_for_every_price() -> None:
    assert prices(Bar.of_tick(T, T + 5 * S, 1.1, 1.2)) == (
        T + 5 * S,
        T + 5 * S,
        1.1,
        1.1,
        1.1,
        1.1,
        1.2,
        1.2,
        1.2,
        1.2,
        1,
    )


def test_add_takes_first_max_min_last_and_counts() -> None:
    bar = Bar.of_tick(T, T + 10 * S, 1.10, 1.11)
    bar.add(T + 20 * S, 1.15, 1.16)
    bar.add(T + 30 * S, 1.05, 1.07)
    bar.add(T + 40 * S, 1.12, 1.13)
    assert prices(bar) == (T + 10 * S, T + 40 * S, 1.10, 1.15, 1.05, 1.12, 1.11, 1.16, 1.07, 1.13, 4)


def test_add_of_an_earlier_tick_replaces_the_open_and_not_the_close() -> None:
    bar = Bar.of_tick(T, T + 10 * S, 1.10, 1.11)
    bar.add(T + 5 * S, 1.12, 1.13)
    assert (bar.open_ms, bar.bid_open, bar.ask_open, bar.close_ms, bar.bid_close) == (
        T + 5 * S,
        1.12,
        1.13,
        T + 10 * S,
        1.10,
    )


def test_add_at_the_opens_millisecond_keeps_the_open_and_becomes_the_close() -> None:
    bar = Bar.of_tick(T, T + 10 * S, 1.10, 1.11)
    bar.add(T + 10 * S, 1.12, 1.13)
    assert (bar.bid_open, bar.bid_close, bar.ask_close) == (1.10, 1.12, 1.13)


def test_merge_folds_a_later_bar_like_its_ticks_one_by_one() -> None:
    bar = Bar(T, T + 10 * S, T + 40 * S, 1.10, 1.30, 1.05, 1.20, 1.11, 1.31, 1.06, 1.21, 7)
    bar.merge(Bar(T, T + 5 * S, T + 40 * S, 1.08, 1.35, 1.08, 1.09, 1.09, 1.36, 1.09, 1.10, 3))
    assert prices(bar) == (T + 5 * S, T + 40 * S, 1.08, 1.35, 1.05, 1.09, 1.09, 1.36, 1.06, 1.10, 10)


def test_merge_of_a_bar_inside_keeps_open_close_and_extremes() -> None:
    bar = Bar(T, T + 10 * S, T + 40 * S, 1.10, 1.30, 1.05, 1.20, 1.11, 1.31, 1.06, 1.21, 7)
    bar.merge(Bar(T, T + 20 * S, T + 30 * S, 1.15, 1.16, 1.14, 1.15, 1.16, 1.17, 1.15, 1.16, 2))
    assert prices(bar) == (T + 10 * S, T + 40 * S, 1.10, 1.30, 1.05, 1.20, 1.11, 1.31, 1.06, 1.21, 9)


def test_runs_give_one_bar_per_pair_and_bucket_of_sorted_ticks() -> None:
    codes = np.array([0, 0, 0, 1])
    buckets = np.array([T, T, T + 300 * S, T])
    times = np.array([T + 1 * S, T + 2 * S, T + 301 * S, T + 1 * S])
    bids = np.array([1.10, 1.12, 1.13, 150.0])
    asks = np.array([1.11, 1.13, 1.14, 150.1])
    starts, bars = runs(codes, buckets, times, bids, asks)
    assert starts.tolist() == [0, 2, 3]
    assert [(b.bucket_ms, *prices(b)) for b in bars] == [
        (T, T + 1 * S, T + 2 * S, 1.10, 1.12, 1.10, 1.12, 1.11, 1.13, 1.11, 1.13, 2),
        (T + 300 * S, T + 301 * S, T + 301 * S, 1.13, 1.13, 1.13, 1.13, 1.14, 1.14, 1.14, 1.14, 1),
        (T, T + 1 * S, T + 1 * S, 150.0, 150.0, 150.0, 150.0, 150.1, 150.1, 150.1, 150.1, 1),
    ]


def test_a_bar_leaves_as_a_stream_candle_with_its_open_and_close_times() -> None:
    bar = Bar(T, T + 10 * S, T + 40 * S, 1.10, 1.30, 1.05, 1.20, 1.11, 1.31, 1.06, 1.21, 7)
    assert bar.candle("EURUSD", "5m", complete=True) == Candle(
        "EURUSD", "5m", T, 1.10, 1.30, 1.05, 1.20, 1.11, 1.31, 1.06, 1.21, 7,
        True, CandleSource.STREAM, T + 10 * S, T + 40 * S,
    )  # fmt: skip


def test_a_stored_candle_without_open_and_close_times_is_taken_as_opened_at_its_start() -> None:
    c = Candle("EURUSD", "5m", T, 1.10, 1.30, 1.05, 1.20, 1.11, 1.31, 1.06, 1.21, 7, True)
    bar = Bar.of_candle(c, complete=False)
    assert (bar.open_ms, bar.close_ms, bar.complete, bar.ticks) == (T, T, False, 7)
