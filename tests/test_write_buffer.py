"""The write buffer in memory: ticks and their bound, candles and flags coalesced by bucket,
put-back after a failed flush, and rows of a COMMIT whose outcome is unknown."""

from __future__ import annotations

import datetime as dt
import threading

import numpy as np
import pytest

from collector.aggregator import CandleClosed, CandleCorrected, RepairNeeded
from collector.models import Candle, CoverageMark, Flag
from collector.store import WriteBuffer
from collector.store.buffer import Batch, MaybeCommitted

T = int(dt.datetime(2024, 3, 8, 10, 0, tzinfo=dt.UTC).timestamp() * 1000)
S = 1000
PAIRS = ("EURUSD", "USDJPY")
KEY = ("EURUSD", "5m", T)


def cndl(*, n: int = 3, complete: bool = False) -> Candle:
    return Candle("EURUSD", "5m", T, 1.1, 1.3, 1.0, 1.2, 1.11, 1.31, 1.01, 1.21, n, complete, "stream")


def ticks(buf: WriteBuffer, start: int, n: int, code: int = 0) -> None:
    buf.submit_ticks(np.full(n, code), T + start + np.arange(n), np.full(n, 1.1), np.full(n, 1.2))


def times_of(batch: Batch) -> list[int]:
    return [t for c in batch.chunks for t in c.times.tolist()]


def taken(buf: WriteBuffer) -> Batch:
    batch = buf.take()
    assert batch is not None
    return batch


# ---------------------------------------------------------------------------------- ticks
def test_ticks_from_both_paths_are_taken_in_submission_order() -> None:
    buf = WriteBuffer(PAIRS)
    buf.submit_tick(0, T, 1.1, 1.2, received_ms=T + 5)
    ticks(buf, 1, 2)
    batch = taken(buf)
    assert (times_of(batch), [r for c in batch.chunks for r in c.received.tolist()]) == (
        [T, T + 1, T + 2], [T + 5, -1, -1],
    )  # fmt: skip
    assert (buf.depth, buf.ticks_submitted) == (3, 3)


def test_confirming_a_batch_empties_the_buffer() -> None:
    buf = WriteBuffer(PAIRS)
    ticks(buf, 0, 3)
    buf.confirm(taken(buf).rows)
    assert (buf.depth, buf.has_pending(), buf.take()) == (0, False, None)


def test_beyond_the_bound_the_oldest_rows_are_dropped_counted_and_noted_as_a_tick_gap() -> None:
    buf = WriteBuffer(PAIRS, max_ticks=1000)
    for i in range(0, 1500, 100):
        ticks(buf, i, 100)
    batch = taken(buf)
    assert (buf.depth, buf.ticks_dropped, times_of(batch)[0]) == (1000, 500, T + 500)
    assert batch.tick_gaps == {("EURUSD", "buffer_full"): [T, T + 499, 500]}


def test_rows_in_flight_do_not_count_against_the_bound() -> None:
    buf = WriteBuffer(PAIRS, max_ticks=1000)
    ticks(buf, 0, 1000)
    buf.take()
    ticks(buf, 1000, 1000)
    assert (buf.depth, buf.ticks_dropped) == (2000, 0)


def test_a_full_batch_of_waiting_rows_wakes_the_flusher() -> None:
    buf = WriteBuffer(PAIRS, eager_rows=10)
    ticks(buf, 0, 9)
    assert not buf.wakeup.is_set()
    ticks(buf, 9, 1)
    assert buf.wakeup.is_set()


# ---------------------------------------------------------------------------------- candles
def test_a_bucket_changed_many_times_is_written_once_in_its_newest_state() -> None:
    buf = WriteBuffer(PAIRS)
    for n in (1, 2, 3):
        buf.submit_candles([cndl(n=n)], "forming")
    assert taken(buf).candles == {KEY: (cndl(n=3), "forming")}


def test_a_candle_wakes_the_flusher() -> None:
    buf = WriteBuffer(PAIRS)
    buf.submit_candles([cndl()], "forming")
    assert buf.wakeup.is_set()


def test_a_forming_state_never_displaces_a_final_one() -> None:
    buf = WriteBuffer(PAIRS)
    buf.submit_candles([cndl(n=5, complete=True)], "closed")
    buf.submit_candles([cndl(n=6)], "forming")
    batch = taken(buf)
    assert (batch.candles, batch.notify) == ({KEY: (cndl(n=5, complete=True), "closed")}, {KEY: None})


def test_a_correction_of_a_close_not_yet_written_is_still_the_close() -> None:
    buf = WriteBuffer(PAIRS)
    buf.submit_events([CandleClosed(cndl(n=5, complete=True)), CandleCorrected(cndl(n=6, complete=True))])
    assert taken(buf).candles == {KEY: (cndl(n=6, complete=True), "closed")}


def test_an_unknown_candle_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        WriteBuffer(PAIRS).submit_candles([cndl()], "rest")


# ---------------------------------------------------------------------------------- flags, coverage
def test_flags_keep_the_newest_reason_per_bucket() -> None:
    buf = WriteBuffer(PAIRS)
    buf.submit_flags([Flag("EURUSD", "5m", T, "stream_gap"), Flag("EURUSD", "5m", T, "lost_updates")])
    assert buf.unwritten_flags() == ([Flag("EURUSD", "5m", T, "lost_updates")], [])


def test_a_late_ticks_flag_is_never_displaced() -> None:
    buf = WriteBuffer(PAIRS)
    buf.submit_events([RepairNeeded("EURUSD", "5m", T)])
    buf.submit_flags([Flag("EURUSD", "5m", T, "stream_gap")])
    assert buf.unwritten_flags()[0] == [Flag("EURUSD", "5m", T, "late_tick")]


def test_coverage_marks_are_kept_in_order() -> None:
    buf = WriteBuffer(PAIRS)
    marks = [CoverageMark(up=True, at_ms=T), CoverageMark(up=False, at_ms=T + S, reason="outage")]
    for m in marks:
        buf.submit_coverage(m)
    assert taken(buf).coverage == marks


# ---------------------------------------------------------------------------------- put back
def test_a_failed_batch_goes_back_in_front_of_what_came_meanwhile() -> None:
    buf = WriteBuffer(PAIRS)
    ticks(buf, 0, 2)
    buf.submit_candles([cndl(n=2)], "forming")
    batch = taken(buf)
    ticks(buf, 2, 1)
    buf.submit_candles([cndl(n=3)], "forming")
    buf.put_back(batch)
    again = taken(buf)
    assert (times_of(again), again.candles, buf.depth) == ([T, T + 1, T + 2], {KEY: (cndl(n=3), "forming")}, 3)


def test_rows_a_failed_batch_committed_leave_the_buffer() -> None:
    buf = WriteBuffer(PAIRS)
    ticks(buf, 0, 5)
    buf.put_back(taken(buf), committed_rows=3)
    assert (times_of(taken(buf)), buf.depth) == ([T + 3, T + 4], 2)


def test_a_put_back_beyond_the_bound_drops_the_oldest_rows() -> None:
    buf = WriteBuffer(PAIRS, max_ticks=1000)
    ticks(buf, 0, 800)
    batch = taken(buf)
    ticks(buf, 800, 800)
    buf.put_back(batch)
    assert (buf.depth, buf.ticks_dropped, times_of(taken(buf))[0]) == (1000, 600, T + 600)


# ---------------------------------------------------------------------------------- unknown commits
def _dropped_after_unknown_commit(buf: WriteBuffer) -> None:
    """800 rows whose COMMIT (xid 42) had an unknown outcome, then 800 newer: 600 of the
    possibly stored rows are dropped at the bound of 1000."""
    ticks(buf, 0, 800)
    batch = taken(buf)
    ticks(buf, 800, 800)
    buf.put_back(batch, maybe=MaybeCommitted(xid=42, rows=800))


def test_rows_of_an_unknown_commit_dropped_at_the_bound_are_not_counted_yet() -> None:
    buf = WriteBuffer(PAIRS, max_ticks=1000)
    _dropped_after_unknown_commit(buf)
    assert (buf.depth, buf.ticks_dropped, buf.undecided_xids(), buf.has_pending()) == (1000, 0, {42}, True)


def test_when_the_unknown_commit_committed_its_rows_are_neither_dropped_nor_sent_again() -> None:
    buf = WriteBuffer(PAIRS, max_ticks=1000)
    _dropped_after_unknown_commit(buf)
    assert buf.resolve({42: True}) == 200
    batch = taken(buf)
    assert (times_of(batch)[0], batch.rows, batch.tick_gaps, buf.ticks_dropped) == (T + 800, 800, {}, 0)
    assert (buf.depth, buf.undecided_xids()) == (800, set())


def test_when_the_unknown_commit_aborted_its_dropped_rows_are_counted_and_noted() -> None:
    buf = WriteBuffer(PAIRS, max_ticks=1000)
    _dropped_after_unknown_commit(buf)
    assert buf.resolve({42: False}) == 0
    batch = taken(buf)
    assert (times_of(batch)[0], batch.rows, buf.ticks_dropped) == (T + 600, 1000, 600)
    assert batch.tick_gaps == {("EURUSD", "buffer_full"): [T, T + 599, 600]}
    assert buf.undecided_xids() == set()


def test_while_the_unknown_commit_is_still_running_its_drops_stay_undecided() -> None:
    buf = WriteBuffer(PAIRS, max_ticks=1000)
    _dropped_after_unknown_commit(buf)
    assert buf.resolve({42: None}) == 0
    assert (buf.ticks_dropped, buf.undecided_xids(), buf.depth) == (0, {42}, 1000)


def test_rows_of_two_unknown_commits_are_stored_if_either_committed() -> None:
    buf = WriteBuffer(PAIRS, max_ticks=1000)
    ticks(buf, 0, 10)
    buf.put_back(taken(buf), maybe=MaybeCommitted(xid=41, rows=10))
    buf.put_back(taken(buf), maybe=MaybeCommitted(xid=42, rows=10))
    buf.resolve({41: False})
    assert (buf.undecided_xids(), buf.depth) == ({42}, 10)
    assert (buf.resolve({42: True}), buf.depth, buf.has_pending()) == (10, 0, False)


def test_only_the_rows_the_unknown_commit_held_are_tagged() -> None:
    buf = WriteBuffer(PAIRS)
    ticks(buf, 0, 5)
    buf.put_back(taken(buf), committed_rows=2, maybe=MaybeCommitted(xid=7, rows=2))
    assert buf.resolve({7: True}) == 2
    assert times_of(taken(buf)) == [T + 4]


# ---------------------------------------------------------------------------------- waiting
def test_wait_below_gives_up_at_its_timeout() -> None:
    buf = WriteBuffer(PAIRS)
    ticks(buf, 0, 5)
    assert buf.wait_below(4, timeout=0.05) is False
    assert buf.wait_below(5, timeout=0.05) is True


def test_wait_idle_returns_once_a_flusher_confirmed_everything() -> None:
    buf = WriteBuffer(PAIRS)
    ticks(buf, 0, 5)

    def flusher() -> None:
        buf.wakeup.wait(5)
        buf.confirm(taken(buf).rows)

    t = threading.Thread(target=flusher)
    t.start()
    assert buf.wait_idle(timeout=5) is True
    t.join()
