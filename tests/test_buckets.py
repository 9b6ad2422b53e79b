"""The bucket book on its own: open until end + grace, correctable for the lateness window, then
forgotten (a tick for it is dropped and a repair owed)."""

from __future__ import annotations

import numpy as np

from collector.bar import Bar
from collector.buckets import NEVER, Buckets
from collector.candle_events import CandleClosed, CandleCorrected, RepairNeeded
from collector.vocabulary import FlagReason

T = 1_709_892_000_000  # 2024-03-08 10:00 UTC, a 15m boundary
S, M = 1000, 60_000
GRACE, LATE = 1500, 60_000
CLOSE = T + 5 * M + GRACE  # when the 5m bucket at T closes


def book() -> Buckets:
    return Buckets(("EURUSD", "USDJPY"), ("5m",), close_grace_ms=GRACE, lateness_ms=LATE)


def test_a_first_tick_opens_its_bucket_and_schedules_its_close() -> None:
    b = book()
    before = b.next_close
    assert b.fold_tick(0, T + 1 * M, 1.1, 1.2, now=T + 1 * M) is True
    assert before == NEVER
    assert (b.next_close, b.open_count(), [c.ticks for c in b.take_dirty()]) == (CLOSE, 1, [1])


def test_the_bucket_closes_at_end_plus_grace_and_not_before() -> None:
    b = book()
    b.fold_tick(0, T + 1 * M, 1.1, 1.2, now=T + 1 * M)
    assert b.advance(CLOSE - 1) == []
    (closed,) = b.advance(CLOSE)
    assert (closed.bucket_ms, closed.complete, b.next_close, b.drain_events()) == (
        T, True, NEVER, [CandleClosed(closed)],
    )  # fmt: skip


def test_a_tick_up_to_the_end_of_the_lateness_window_corrects_the_closed_bucket() -> None:
    b = book()
    b.fold_tick(0, T + 1 * M, 1.1, 1.2, now=T + 1 * M)
    b.advance(CLOSE + LATE)
    b.drain_events()
    assert b.fold_tick(0, T + 2 * M, 1.0, 1.05, now=CLOSE + LATE) is True
    (ev,) = b.drain_events()
    assert isinstance(ev, CandleCorrected)
    assert (ev.candle.bid_low, ev.candle.bid_close, ev.candle.ticks, b.late_corrected) == (1.0, 1.0, 2, [1])


def test_a_tick_after_the_lateness_window_is_dropped_and_a_repair_owed() -> None:
    b = book()
    b.fold_tick(0, T + 1 * M, 1.1, 1.2, now=T + 1 * M)
    b.advance(CLOSE + LATE + 1)
    b.drain_events()
    assert b.fold_tick(0, T + 2 * M, 1.0, 1.05, now=CLOSE + LATE + 1) is False
    assert (b.drain_events(), b.late_dropped) == ([RepairNeeded("EURUSD", "5m", T, FlagReason.LATE_TICK)], [1])


def test_a_late_tick_for_a_bucket_that_closed_empty_creates_it_as_a_correction() -> None:
    b = book()
    b.advance(CLOSE)
    b.fold_tick(1, T + 4 * M, 150.0, 150.1, now=CLOSE)
    (ev,) = b.drain_events()
    assert (type(ev), ev.candle.pair, ev.candle.ticks, ev.candle.complete) == (CandleCorrected, "USDJPY", 1, True)


def test_in_a_batch_a_late_tick_whose_bucket_is_still_open_closes_with_it() -> None:
    b = book()
    kept = b.fold_sorted(
        np.array([0, 0]), np.array([T + 1 * M, T + 2 * M]), np.array([1.1, 1.0]), np.array([1.2, 1.05]),
        now=np.array([T + 1 * M, CLOSE]),
    )  # fmt: skip
    (closed,) = b.advance(CLOSE)
    assert (kept.tolist(), closed.ticks, closed.bid_close, b.late_corrected) == ([True, True], 2, 1.0, [1])
    assert b.drain_events() == [CandleClosed(closed)]


def test_in_a_batch_ticks_past_the_window_are_dropped_with_one_repair_per_bucket() -> None:
    b = book()
    now = CLOSE + LATE + 1
    kept = b.fold_sorted(
        np.array([0, 0, 1]), np.array([T + 1 * M, T + 2 * M, T + 6 * M]), np.array([1.1, 1.0, 150.0]),
        np.array([1.2, 1.05, 150.1]), now=np.array([now, now, now]),
    )  # fmt: skip
    assert (kept.tolist(), b.late_dropped) == ([False, False, True], [2])
    assert b.drain_events() == [RepairNeeded("EURUSD", "5m", T)]


def test_a_restored_partial_bucket_stays_incomplete_when_corrected() -> None:
    b = book()
    b.restore(
        0, 0, Bar(T, T + 10 * S, T + 40 * S, 1.1, 1.3, 1.05, 1.2, 1.11, 1.31, 1.06, 1.21, 7, False), is_open=False
    )
    b.fold_tick(0, T + 4 * M, 1.0, 1.01, now=CLOSE + S)
    (ev,) = b.drain_events()
    assert (ev.candle.complete, ev.candle.ticks, ev.candle.bid_low) == (False, 8, 1.0)


def test_a_closed_bucket_is_held_to_the_end_of_its_lateness_window_then_forgotten() -> None:
    b = book()
    b.fold_tick(0, T + 1 * M, 1.1, 1.2, now=T + 1 * M)
    b.advance(CLOSE + LATE)
    held = b.closed_count()
    b.advance(CLOSE + LATE + 1)
    assert (held, b.closed_count()) == (1, 0)
