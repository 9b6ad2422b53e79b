"""Gap detection (docs/design.md §6), one behaviour per test: which buckets the stream saw only
in part, from its updates and state markers alone, and the coverage marks that bracket them."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from collector.gaps import GapTracker
from collector.models import CoverageMark, Flag
from collector.vocabulary import CoverageEnd, FlagReason

UTC = dt.UTC
T = int(dt.datetime(2024, 3, 8, 10, 0, tzinfo=UTC).timestamp() * 1000)  # a Friday, market open, a 15m boundary
S, M, H = 1000, 60_000, 3_600_000
PAIRS = ("EURUSD", "USDJPY")
HORIZON = 6 * H


def tracker(pairs: tuple[str, ...] = PAIRS, timeframes: tuple[str, ...] = ("5m",)) -> GapTracker:
    return GapTracker(pairs, timeframes, repair_horizon_ms=HORIZON)


def streaming(last_ms: int, pair: str = "EURUSD") -> GapTracker:
    """A tracker whose stream is up, with `last_ms` the newest accepted tick of `pair`."""
    g = tracker()
    g.accepted([pair], [str(last_ms)], [0])
    return g


def keys(flags: tuple[Flag, ...] | list[Flag] | None) -> set[tuple[str, str, int]]:
    return {(f.pair, f.timeframe, f.bucket_ms) for f in flags or ()}


# --------------------------------------------------------------------------------- a start
def test_a_first_start_flags_the_bucket_of_the_first_live_tick_for_every_pair() -> None:
    g = tracker()
    g.resume(None)
    closed = g.live_tick(str(T + 7 * M), now_ms=T + 7 * M)
    assert closed is not None
    assert closed.reason == FlagReason.FIRST_START
    assert keys(closed.flags) == {("EURUSD", "5m", T + 5 * M), ("USDJPY", "5m", T + 5 * M)}


def test_an_accepted_snapshot_flags_its_own_pairs_bucket() -> None:
    g = tracker()
    g.resume(None)
    flags = g.snapshot_flags(["USDJPY"], [str(T + 4 * M)], [0])
    assert [(f.pair, f.timeframe, f.bucket_ms, f.reason) for f in flags] == [
        ("USDJPY", "5m", T, FlagReason.FIRST_START)
    ]


def test_a_snapshot_after_a_restart_is_flagged_as_part_of_the_stream_gap() -> None:
    g = tracker()
    g.resume(T)
    assert [f.reason for f in g.snapshot_flags(["EURUSD"], [str(T + M)], [0])] == [FlagReason.STREAM_GAP]


def test_a_restart_flags_from_the_last_committed_tick_to_the_first_new_one() -> None:
    g = tracker()
    g.resume(T + 2 * M)
    closed = g.live_tick(str(T + 11 * M), now_ms=T + 11 * M)
    assert closed is not None
    assert (closed.reason, closed.start_ms, closed.end_ms) == (FlagReason.STREAM_GAP, T + 2 * M, T + 11 * M)
    assert {b for _, _, b in keys(closed.flags)} == {T, T + 5 * M, T + 10 * M}


def test_the_first_live_tick_marks_coverage_up_at_its_ig_time() -> None:
    g = tracker()
    g.resume(T)
    closed = g.live_tick(str(T + 3 * M), now_ms=T + 3 * M)
    assert closed is not None
    assert closed.coverage == CoverageMark(up=True, at_ms=T + 3 * M)


def test_the_gap_is_closed_once() -> None:
    g = tracker()
    g.resume(T)
    assert g.live_tick(str(T + M), now_ms=T + M) is not None
    assert (g.awaiting_first, g.gap_start) == (False, None)


def test_an_unusable_ig_time_leaves_the_gap_open_for_the_next_tick() -> None:
    g = tracker()
    g.resume(T)
    assert g.live_tick("not a time", now_ms=T + M) is None
    assert (g.awaiting_first, g.gap_start) == (True, T)


# --------------------------------------------------------------------------------- outages
def test_the_stream_going_down_starts_the_gap_at_the_newest_ig_time_seen() -> None:
    g = streaming(T + 90 * S)
    mark = g.stream_down(at_ms=T + 200 * S, stopping=False)
    assert mark == CoverageMark(up=False, at_ms=T + 90 * S, reason=CoverageEnd.OUTAGE)
    assert g.gap_start == T + 90 * S


def test_the_stream_going_down_with_no_tick_seen_starts_the_gap_at_the_clock() -> None:
    g = tracker()
    assert g.stream_down(at_ms=T + 5 * S, stopping=False) == CoverageMark(False, T + 5 * S, CoverageEnd.OUTAGE)


def test_the_stream_going_down_while_the_daemon_stops_ends_coverage_as_stopped() -> None:
    g = streaming(T)
    mark = g.stream_down(at_ms=T + S, stopping=True)
    assert mark is not None
    assert mark.reason == CoverageEnd.STOPPED


def test_a_second_down_marker_keeps_the_gap_start_and_marks_nothing() -> None:
    g = streaming(T)
    g.stream_down(at_ms=T + S, stopping=False)
    g.accepted(["EURUSD"], [str(T + 30 * S)], [0])
    assert g.stream_down(at_ms=T + 40 * S, stopping=False) is None
    assert g.gap_start == T


def test_the_gap_stays_open_until_the_stream_is_up_again() -> None:
    g = streaming(T)
    g.stream_down(at_ms=T + S, stopping=False)
    assert g.awaiting_first is False


def test_the_stream_coming_back_waits_for_a_live_tick_to_end_the_gap() -> None:
    g = streaming(T)
    g.stream_down(at_ms=T + S, stopping=False)
    g.stream_up()
    assert (g.awaiting_first, g.gap_start) == (True, T)


def test_a_stream_up_with_no_gap_open_changes_nothing() -> None:
    g = streaming(T)
    g.stream_up()
    assert (g.awaiting_first, g.gap_start) == (False, None)


def test_an_outage_flags_every_bucket_from_the_last_tick_before_it_to_the_first_after_it() -> None:
    g = streaming(T + 4 * M)
    g.stream_down(at_ms=T + 4 * M + S, stopping=False)
    g.stream_up()
    closed = g.live_tick(str(T + 16 * M), now_ms=T + 16 * M)
    assert closed is not None
    assert closed.reason == FlagReason.STREAM_GAP
    assert {b for _, _, b in keys(closed.flags)} == {T, T + 5 * M, T + 10 * M, T + 15 * M}


def test_a_first_tick_older_than_the_gap_start_flags_from_its_own_bucket() -> None:
    g = streaming(T + 9 * M)
    g.stream_down(at_ms=T + 9 * M, stopping=False)
    g.stream_up()
    closed = g.live_tick(str(T + 3 * M), now_ms=T + 10 * M)
    assert closed is not None
    assert (closed.start_ms, closed.end_ms) == (T + 3 * M, T + 3 * M)


def test_an_outage_over_the_weekend_flags_no_closed_market_bucket() -> None:
    friday_close = int(dt.datetime(2024, 3, 1, 22, 0, tzinfo=UTC).timestamp() * 1000)  # 17:00 New York
    sunday_open = int(dt.datetime(2024, 3, 3, 22, 0, tzinfo=UTC).timestamp() * 1000)
    g = GapTracker(PAIRS, ("5m",), repair_horizon_ms=7 * 24 * H)
    g.accepted(["EURUSD"], [str(friday_close - 2 * M)], [0])
    g.stream_down(at_ms=friday_close, stopping=False)
    g.stream_up()
    closed = g.live_tick(str(sunday_open + M), now_ms=sunday_open + M)
    assert closed is not None
    assert {b for _, _, b in keys(closed.flags)} == {friday_close - 5 * M, sunday_open}


def test_a_gap_older_than_the_repair_horizon_is_flagged_from_the_horizon_only() -> None:
    g = tracker()
    g.resume(T - 10 * H)
    closed = g.live_tick(str(T), now_ms=T)
    assert closed is not None
    assert (closed.clipped_from_ms, closed.start_ms) == (T - 10 * H, T - HORIZON)
    assert min(b for _, _, b in keys(closed.flags)) == T - HORIZON


def test_a_gap_wholly_beyond_the_horizon_is_flagged_nowhere() -> None:
    g = tracker()
    g.resume(T - 10 * H)
    closed = g.live_tick(str(T - 9 * H), now_ms=T)
    assert closed is not None
    assert (closed.flags, closed.coverage) == ((), CoverageMark(up=True, at_ms=T - 9 * H))


# --------------------------------------------------------------------------------- newest IG time
def test_only_accepted_updates_move_the_newest_ig_time() -> None:
    g = tracker()
    g.accepted(["EURUSD", "EURUSD", "USDJPY"], [str(T + S), str(T + 9 * S), str(T + 2 * S)], [0, 2])
    assert g.last_utm == {"EURUSD": T + S, "USDJPY": T + 2 * S}


def test_an_older_accepted_tick_does_not_move_the_newest_ig_time_back() -> None:
    g = streaming(T + 5 * S)
    g.accepted(["EURUSD"], [str(T + S)], [0])
    assert g.last_tick_ms() == T + 5 * S


def test_a_clean_stop_while_streaming_ends_coverage_at_the_last_tick() -> None:
    g = streaming(T + 7 * S)
    assert g.stopped() == CoverageMark(up=False, at_ms=T + 7 * S, reason=CoverageEnd.STOPPED)


def test_a_stop_during_an_outage_marks_nothing_more() -> None:
    g = streaming(T)
    g.stream_down(at_ms=T + S, stopping=False)
    assert g.stopped() is None


# --------------------------------------------------------------------------------- updates lost on the way in
def test_server_dropped_updates_flag_from_the_pairs_last_tick_to_the_notice() -> None:
    g = streaming(T + 4 * M)
    flags = g.lost("EURUSD", at_ms=T + 6 * M)
    assert keys(flags) == {("EURUSD", "5m", T), ("EURUSD", "5m", T + 5 * M)}
    assert {f.reason for f in flags or ()} == {FlagReason.LOST_UPDATES}


def test_server_dropped_updates_of_a_pair_never_seen_flag_the_notices_bucket() -> None:
    assert keys(tracker().lost("USDJPY", at_ms=T + 6 * M)) == {("USDJPY", "5m", T + 5 * M)}


def test_dropped_updates_of_a_pair_not_collected_are_not_a_loss() -> None:
    assert tracker().lost("GBPUSD", at_ms=T) is None


def test_a_failed_batch_flags_each_pairs_span_of_buckets() -> None:
    flags = tracker().failed_batch(
        ["EURUSD", "EURUSD", "USDJPY", "GBPUSD"], [str(T + M), str(T + 11 * M), "junk", str(T)]
    )
    assert keys(flags) == {("EURUSD", "5m", T), ("EURUSD", "5m", T + 5 * M), ("EURUSD", "5m", T + 10 * M)}
    assert {f.reason for f in flags} == {FlagReason.CONSUMER_ERROR}


def test_an_overflowed_update_owes_its_bucket_in_every_timeframe() -> None:
    g = tracker(timeframes=("5m", "15m"))
    assert g.overflow_buckets("EURUSD", str(T + 7 * M)) == [("EURUSD", "5m", T + 5 * M), ("EURUSD", "15m", T)]
    assert g.overflow_buckets("EURUSD", None) == []


def test_overflowed_buckets_are_flagged_as_queue_overflow() -> None:
    assert GapTracker.overflow_flags([("EURUSD", "5m", T)]) == [Flag("EURUSD", "5m", T, FlagReason.QUEUE_OVERFLOW)]


# --------------------------------------------------------------------------------- the property
@given(
    last=st.integers(0, 4 * H),
    down_after=st.integers(0, 10 * M),
    outage=st.integers(1, 2 * H),
    timeframe=st.sampled_from(("1m", "5m", "15m")),
)
def test_flags_cover_every_bucket_between_the_last_tick_before_an_outage_and_the_first_after(
    last: int, down_after: int, outage: int, timeframe: str
) -> None:
    # Wednesday 2024-03-06 00:00 UTC: the whole window below is inside market hours.
    base = int(dt.datetime(2024, 3, 6, tzinfo=UTC).timestamp() * 1000)
    g = tracker(timeframes=(timeframe,))
    g.accepted(["EURUSD"], [str(base + last)], [0])
    g.stream_down(at_ms=base + last + down_after, stopping=False)
    g.stream_up()
    first = base + last + down_after + outage
    closed = g.live_tick(str(first), now_ms=first)
    assert closed is not None
    tf_ms = {"1m": M, "5m": 5 * M, "15m": 15 * M}[timeframe]
    owed = range((base + last) // tf_ms * tf_ms, first + 1, tf_ms)
    assert keys(closed.flags) == {(p, timeframe, b) for p in PAIRS for b in owed}
