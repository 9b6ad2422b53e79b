"""The aggregator's candle rules (docs/design.md §4), one behaviour per test, and the property
that any batching and advance schedule equals the reference aggregation (tests/reference.py)."""

from __future__ import annotations

import datetime as dt
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector import timeframes as tfs
from collector.aggregator import Aggregator, CandleClosed, CandleCorrected, RepairNeeded
from collector.models import Candle, RecentTicks, Tick
from collector.validation import Reject
from collector.vocabulary import CandleSource
from tests.reference import Arrival, Rules, aggregate

UTC = dt.UTC
T = int(dt.datetime(2024, 3, 8, 10, 0, tzinfo=UTC).timestamp() * 1000)  # a 15m boundary
S, M = 1000, 60_000
PAIRS = ("EURUSD", "USDJPY")
GRACE, LATE = 1500, 60_000


def agg(**kw) -> Aggregator:
    kw.setdefault("close_grace_ms", GRACE)
    kw.setdefault("lateness_ms", LATE)
    return Aggregator(PAIRS, ("5m", "15m"), **kw)


def candle(ag: Aggregator, tf: str, bucket: int, pair: str = "EURUSD") -> Candle:
    found = [c for c in ag.open_candles() if (c.pair, c.timeframe, c.bucket_ms) == (pair, tf, bucket)]
    assert len(found) == 1
    return found[0]


def ohlc(c: Candle) -> tuple:
    return (c.bid_open, c.bid_high, c.bid_low, c.bid_close, c.ask_open, c.ask_high, c.ask_low, c.ask_close, c.ticks)


# ---------------------------------------------------------------------------------- buckets
def test_tick_goes_to_the_utc_epoch_aligned_bucket_of_its_ig_time() -> None:
    ag = agg()
    ag.add("EURUSD", T + 7 * M + 30_123, 1.1, 1.2, now_ms=T + 8 * M)
    assert {(c.timeframe, c.bucket_ms) for c in ag.open_candles()} == {("5m", T + 5 * M), ("15m", T)}


def test_bucket_is_chosen_by_ig_time_not_arrival() -> None:
    ag = agg()
    ag.add("EURUSD", T + 4 * M + 59_999, 1.1, 1.2, now_ms=T + 5 * M + 800)  # arrives in the next bucket
    assert candle(ag, "5m", T).ticks == 1


def test_candle_does_not_close_before_end_plus_grace() -> None:
    ag = agg()
    ag.add("EURUSD", T + 1 * M, 1.1, 1.2, now_ms=T + 1 * M)
    assert ag.advance(T + 5 * M + GRACE - 1) == []


def test_candle_closes_on_the_clock_without_a_later_tick() -> None:
    ag = agg()
    ag.add("EURUSD", T + 1 * M, 1.1, 1.2, now_ms=T + 1 * M)
    closed = ag.advance(T + 5 * M + GRACE)
    assert [(c.timeframe, c.bucket_ms, c.complete, c.ticks) for c in closed] == [("5m", T, True, 1)]


def test_close_is_also_queued_as_an_event() -> None:
    ag = agg()
    ag.add("EURUSD", T + 1 * M, 1.1, 1.2, now_ms=T + 1 * M)
    closed = ag.advance(T + 15 * M + GRACE)
    assert ag.drain_events() == [CandleClosed(c) for c in closed]


def test_empty_bucket_produces_no_candle() -> None:
    ag = agg()
    ag.add("EURUSD", T + 1 * M, 1.1, 1.2, now_ms=T + 1 * M)
    ag.add("EURUSD", T + 11 * M, 1.1, 1.2, now_ms=T + 11 * M)
    ag.advance(T + 20 * M)
    buckets = [e.candle.bucket_ms for e in ag.drain_events() if e.candle.timeframe == "5m"]
    assert buckets == [T, T + 10 * M]


def test_candle_values_are_first_max_min_last_and_count() -> None:
    ag = agg()
    for i, (b, a) in enumerate([(1.10, 1.11), (1.15, 1.16), (1.05, 1.07), (1.12, 1.13)]):
        ag.add("EURUSD", T + i * S, b, a, now_ms=T + i * S)
    assert ohlc(candle(ag, "5m", T)) == (1.10, 1.15, 1.05, 1.12, 1.11, 1.16, 1.07, 1.13, 4)


def test_out_of_order_ticks_keep_open_earliest_and_close_latest() -> None:
    ag = agg()
    ag.add("EURUSD", T + 20 * S, 1.20, 1.21, now_ms=T + 20 * S)
    ag.add("EURUSD", T + 10 * S, 1.10, 1.11, now_ms=T + 21 * S)  # older: becomes the open
    ag.add("EURUSD", T + 30 * S, 1.30, 1.31, now_ms=T + 31 * S)
    ag.add("EURUSD", T + 25 * S, 1.25, 1.26, now_ms=T + 32 * S)  # not the newest: not the close
    c = candle(ag, "5m", T)
    assert (c.bid_open, c.bid_close, c.open_ms, c.close_ms) == (1.10, 1.30, T + 10 * S, T + 30 * S)


def test_equal_timestamps_keep_arrival_order() -> None:
    ag = agg()
    ag.add("EURUSD", T + 5 * S, 1.1, 1.2, now_ms=T + 5 * S)
    ag.add("EURUSD", T + 5 * S, 1.3, 1.4, now_ms=T + 5 * S)
    c = candle(ag, "5m", T)
    assert (c.bid_open, c.bid_close) == (1.1, 1.3)


# ---------------------------------------------------------------------------------- lateness
def test_late_tick_within_window_corrects_the_closed_candle() -> None:
    ag = agg()
    ag.add("EURUSD", T + 1 * M, 1.1, 1.2, now_ms=T + 1 * M)
    ag.advance(T + 5 * M + GRACE)
    ag.drain_events()
    assert ag.add("EURUSD", T + 4 * M, 1.0, 1.05, now_ms=T + 5 * M + GRACE + LATE) is None
    (ev,) = [e for e in ag.drain_events() if e.candle.timeframe == "5m"]
    assert isinstance(ev, CandleCorrected)
    assert (ev.candle.complete, ev.candle.bid_low, ev.candle.bid_close, ev.candle.ticks) == (True, 1.0, 1.0, 2)


def test_late_correction_is_counted_per_timeframe() -> None:
    ag = agg()
    ag.add("EURUSD", T + 1 * M, 1.1, 1.2, now_ms=T + 1 * M)
    ag.add("EURUSD", T + 4 * M, 1.0, 1.05, now_ms=T + 5 * M + GRACE)
    assert ag.stats().late_corrected == {"5m": 1, "15m": 0}


def test_tick_later_than_the_window_is_dropped_counted_and_repair_emitted() -> None:
    ag = agg()
    ag.add("EURUSD", T + 1 * M, 1.1, 1.2, now_ms=T + 1 * M)
    r = ag.add("EURUSD", T + 2 * M, 1.0, 1.05, now_ms=T + 15 * M + GRACE + LATE + 1)
    events = ag.drain_events()
    assert r is Reject.TOO_LATE
    assert ag.stats().late_dropped == {"5m": 1, "15m": 1}
    assert [e for e in events if isinstance(e, RepairNeeded)] == [
        RepairNeeded("EURUSD", "5m", T),
        RepairNeeded("EURUSD", "15m", T),
    ]
    assert [e.candle.ticks for e in events if isinstance(e, CandleClosed)] == [1, 1]


def test_too_late_for_5m_still_counts_in_the_open_15m_bucket() -> None:
    ag = agg()
    r = ag.add("EURUSD", T + 1 * M, 1.1, 1.2, now_ms=T + 5 * M + GRACE + LATE + 1)
    assert r is None
    assert candle(ag, "15m", T).ticks == 1
    assert ag.drain_events() == [RepairNeeded("EURUSD", "5m", T)]


def test_late_tick_for_a_bucket_that_closed_empty_creates_its_candle_as_a_correction() -> None:
    ag = agg()
    ag.advance(T + 6 * M)
    ag.add("EURUSD", T + 4 * M, 1.1, 1.2, now_ms=T + 6 * M)
    (ev,) = [e for e in ag.drain_events() if e.candle.timeframe == "5m"]
    assert isinstance(ev, CandleCorrected) and ev.candle.ticks == 1 and ev.candle.complete


# ---------------------------------------------------------------------------------- rejects
@pytest.mark.parametrize(
    ("pair", "t", "bid", "ask", "reason"),
    [
        ("EURUSD", T, float("nan"), 1.2, Reject.NON_NUMERIC),
        ("EURUSD", -5, 1.1, 1.2, Reject.NON_NUMERIC),
        ("GBPUSD", T, 1.1, 1.2, Reject.UNKNOWN_PAIR),
        ("EURUSD", T, 0.0, 1.2, Reject.NON_POSITIVE),
        ("EURUSD", T, 1.1, -1.2, Reject.NON_POSITIVE),
        ("EURUSD", T, 1.3, 1.2, Reject.CROSSED),
        ("EURUSD", T + 30_001, 1.1, 1.2, Reject.FUTURE),
    ],
)
def test_each_rejection_is_returned_counted_and_the_next_tick_still_accepted(pair, t, bid, ask, reason) -> None:
    ag = agg()
    assert ag.add(pair, t, bid, ask, now_ms=T) is reason
    assert ag.add("EURUSD", T, 1.1, 1.2, now_ms=T) is None
    st_ = ag.stats()
    assert (st_.rejected[reason.label], sum(st_.rejected.values()), st_.accepted) == (1, 1, 1)


def test_tick_at_the_future_tolerance_is_accepted() -> None:
    assert agg().add("EURUSD", T + 30_000, 1.1, 1.2, now_ms=T) is None


def test_count_reject_counts_unparseable_updates() -> None:
    ag = agg()
    ag.count_reject(Reject.MISSING, 3)
    assert (ag.stats().rejected["missing"], ag.received) == (3, 3)


# ---------------------------------------------------------------------------------- duplicates
def test_repeated_tick_is_a_duplicate_and_not_counted_twice() -> None:
    ag = agg()
    ag.add("EURUSD", T + 1 * S, 1.1, 1.2, now_ms=T + 1 * S)
    ag.add("EURUSD", T + 2 * S, 1.1, 1.2, now_ms=T + 2 * S)
    assert ag.add("EURUSD", T + 1 * S, 1.1, 1.2, now_ms=T + 3 * S) is Reject.DUPLICATE
    assert candle(ag, "5m", T).ticks == 2


def test_same_millisecond_with_another_price_is_not_a_duplicate() -> None:
    ag = agg()
    ag.add("EURUSD", T, 1.1, 1.2, now_ms=T)
    assert ag.add("EURUSD", T, 1.1, 1.3, now_ms=T) is None


def test_same_quote_on_another_pair_is_not_a_duplicate() -> None:
    ag = agg()
    ag.add("EURUSD", T, 1.1, 1.2, now_ms=T)
    assert ag.add("USDJPY", T, 1.1, 1.2, now_ms=T) is None


def test_repeat_older_than_the_dedupe_window_is_accepted_again() -> None:
    ag = agg(dedupe_window_ms=10 * S)
    ag.add("EURUSD", T, 1.1, 1.2, now_ms=T)
    ag.add("EURUSD", T + 11 * S, 1.1, 1.2, now_ms=T + 11 * S)
    assert ag.add("EURUSD", T, 1.1, 1.2, now_ms=T + 12 * S) is None


def test_batch_finds_duplicates_inside_the_batch_and_against_earlier_ticks() -> None:
    ag = agg()
    ag.add("EURUSD", T, 1.1, 1.2, now_ms=T)
    res = ag.add_batch([0, 0, 0, 1], [T, T + S, T + S, T + S], [1.1, 1.1, 1.1, 1.1], [1.2] * 4, T + S)
    assert res.reason.tolist() == [Reject.DUPLICATE, 0, Reject.DUPLICATE, 0]


# ---------------------------------------------------------------------------------- outputs
def test_take_dirty_returns_changed_forming_candles_once() -> None:
    ag = agg()
    ag.add("EURUSD", T, 1.1, 1.2, now_ms=T)
    first = ag.take_dirty()
    assert [(c.timeframe, c.ticks, c.complete) for c in first] == [("5m", 1, False), ("15m", 1, False)]
    assert ag.take_dirty() == []


def test_take_dirty_leaves_out_candles_closed_since() -> None:
    ag = agg()
    ag.add("EURUSD", T, 1.1, 1.2, now_ms=T)
    ag.advance(T + 5 * M + GRACE)
    assert [c.timeframe for c in ag.take_dirty()] == ["15m"]


def test_clock_never_goes_backwards() -> None:
    ag = agg()
    ag.advance(T + 10 * M)
    ag.advance(T)
    assert ag.now_ms == T + 10 * M


def test_own_clock_closes_buckets_by_the_ticks_times() -> None:
    ag = agg()
    ag.add("EURUSD", T + 1 * M, 1.1, 1.2)
    ag.add("EURUSD", T + 5 * M + GRACE, 1.1, 1.2)
    assert [(e.candle.timeframe, e.candle.bucket_ms) for e in ag.drain_events()] == [("5m", T)]


def test_close_all_closes_unfinished_buckets() -> None:
    ag = agg()
    ag.add("EURUSD", T, 1.1, 1.2, now_ms=T)
    assert [(c.timeframe, c.complete) for c in ag.close_all()] == [("5m", True), ("15m", True)]


# ---------------------------------------------------------------------------------- resume
def _stored(tf: str, bucket: int, *, complete: bool = False) -> Candle:
    return Candle(
        "EURUSD", tf, bucket, 1.10, 1.30, 1.05, 1.20, 1.11, 1.31, 1.06, 1.21, 7,
        complete, CandleSource.STREAM, bucket + 10 * S, bucket + 40 * S,
    )  # fmt: skip


def test_resumed_bucket_keeps_high_low_open_and_count() -> None:
    ag = agg()
    ag.resume(open_candles=[_stored("5m", T)])
    ag.add("EURUSD", T + 50 * S, 1.15, 1.16, now_ms=T + 50 * S)
    assert ohlc(candle(ag, "5m", T)) == (1.10, 1.30, 1.05, 1.15, 1.11, 1.31, 1.06, 1.16, 8)


def test_resumed_open_wins_a_tie_and_an_earlier_tick_replaces_it() -> None:
    ag = agg()
    ag.resume(open_candles=[_stored("5m", T)])
    ag.add("EURUSD", T + 10 * S, 1.12, 1.13, now_ms=T + 50 * S)  # same ms as the stored open
    assert candle(ag, "5m", T).bid_open == 1.10
    ag.add("EURUSD", T + 9 * S, 1.12, 1.13, now_ms=T + 50 * S)
    assert candle(ag, "5m", T).bid_open == 1.12


def test_resume_seeds_the_duplicate_filter_with_the_last_stored_tick() -> None:
    ag = agg()
    ag.resume(last_ticks=[Tick("EURUSD", T + 40 * S, 1.2, 1.21)])
    assert ag.add("EURUSD", T + 40 * S, 1.2, 1.21, now_ms=T + 41 * S) is Reject.DUPLICATE


def test_resume_from_columns_filters_stored_ticks_and_ignores_unconfigured_pairs() -> None:
    stored = RecentTicks(
        ("EURUSD", "XAUUSD", "USDJPY"),
        np.array([0, 1, 2, 0]),
        np.array([T + 10 * S, T + 20 * S, T + 30 * S, T + 40 * S]),
        np.array([1.1, 1900.0, 150.3, 1.2]),
        np.array([1.11, 1901.0, 150.31, 1.21]),
    )
    ag = agg()
    ag.resume(last_ticks=stored)
    now = T + 41 * S
    assert [
        ag.add("EURUSD", T + 40 * S, 1.2, 1.21, now_ms=now),
        ag.add("EURUSD", T + 10 * S, 1.1, 1.11, now_ms=now),
        ag.add("USDJPY", T + 30 * S, 150.3, 150.31, now_ms=now),
        ag.add("USDJPY", T + 30 * S, 150.3, 150.32, now_ms=now),  # same time, another quote
    ] == [Reject.DUPLICATE, Reject.DUPLICATE, Reject.DUPLICATE, None]


def test_recent_ticks_round_trip_through_columns() -> None:
    ticks = [Tick("GBPUSD", T, 1.3, 1.31), Tick("EURUSD", T + S, 1.1, 1.11)]
    rt = RecentTicks.of(ticks)
    assert (list(rt), len(rt), rt.newest_ms(), RecentTicks.of([]).newest_ms()) == (ticks, 2, T + S, None)


def test_resumed_closed_candle_is_corrected_not_replaced() -> None:
    ag = agg()
    ag.resume(closed_candles=[_stored("5m", T, complete=True)])
    ag.add("EURUSD", T + 4 * M, 1.0, 1.01, now_ms=T + 5 * M + GRACE + S)
    (ev,) = [e for e in ag.drain_events() if e.candle.timeframe == "5m"]
    assert ohlc(ev.candle) == (1.10, 1.30, 1.0, 1.0, 1.11, 1.31, 1.01, 1.01, 8)


def test_resumed_partial_candle_stays_incomplete_when_corrected() -> None:
    ag = agg()
    ag.resume(closed_candles=[_stored("5m", T, complete=False)])
    ag.add("EURUSD", T + 4 * M, 1.0, 1.01, now_ms=T + 5 * M + GRACE + S)
    (ev,) = [e for e in ag.drain_events() if e.candle.timeframe == "5m"]
    assert ev.candle.complete is False


# ---------------------------------------------------------------------------------- property
RULES = dict(close_grace_ms=1500, lateness_ms=20_000, future_tolerance_ms=30_000, dedupe_window_ms=10_000)
TFS = ("1m", "5m")
PRICES = (1.1000, 1.1001, 1.1002, 1.1003)


@st.composite
def streams(draw) -> list[Arrival]:
    """Arrivals with a monotone clock and every kind of trouble: out-of-order, equal times,
    repeats (resubscription snapshots and older ones), crossed, non-positive, unknown pair,
    future, and late ticks near and past the lateness window."""
    n = draw(st.integers(1, 80))
    clock = T + draw(st.integers(0, 59_999))
    out: list[Arrival] = []
    for _ in range(n):
        clock += draw(st.sampled_from((0, 1, 250, 1000, 7000, 30_000, 61_000)))
        kind = draw(st.sampled_from(("ok",) * 8 + ("ooo", "late", "repeat", "bad", "future")))
        pair = draw(st.sampled_from(PAIRS))
        bid = draw(st.sampled_from(PRICES))
        ask = bid + draw(st.sampled_from((0.0, 0.0002)))
        t = clock - draw(st.sampled_from((0, 0, 1, 500)))
        if kind == "ooo":
            t = clock - draw(st.integers(0, 70_000))
        elif kind == "late":
            t = clock - draw(st.integers(60_000, 200_000))
        elif kind == "future":
            t = clock + draw(st.sampled_from((29_999, 30_000, 30_001, 90_000)))
        elif kind == "repeat" and out:
            a = draw(st.sampled_from(out[-12:]))
            pair, t, bid, ask = a.pair, a.time_ms, a.bid, a.ask
        elif kind == "bad":
            pair, bid, ask = draw(
                st.sampled_from((("GBPUSD", bid, ask), (pair, ask + 0.001, ask), (pair, 0.0, ask), (pair, bid, -1.0)))
            )
        out.append(Arrival(pair, t, bid, ask, clock))
    return out


def _run(arrivals: list[Arrival], plan: list[tuple[int, str, bool, bool]], own_clock: bool):
    """Feed through an arbitrary mix of per-tick and batch calls, advances and dirty-takes;
    collect the final candle of every bucket the way a writer would store it."""
    ag = Aggregator(PAIRS, TFS, **RULES)
    stored: dict[tuple[str, str, int], Candle] = {}
    reasons: list[str | None] = []
    repairs: set[tuple[str, str, int]] = set()

    def collect() -> None:
        for c in ag.take_dirty():
            stored[(c.pair, c.timeframe, c.bucket_ms)] = c
        for e in ag.drain_events():
            if isinstance(e, RepairNeeded):
                repairs.add((e.pair, e.timeframe, e.bucket_ms))
            else:
                stored[(e.candle.pair, e.candle.timeframe, e.candle.bucket_ms)] = e.candle

    i = 0
    for size, mode, advance, take in plan:
        chunk = arrivals[i : i + size]
        i += size
        if not chunk:
            break
        if mode == "single":
            for a in chunk:
                r = ag.add(a.pair, a.time_ms, a.bid, a.ask, None if own_clock else a.now_ms)
                reasons.append(None if r is None else r.label)
        else:
            res = ag.add_batch(
                [ag.pair_codes.get(a.pair, -1) for a in chunk],
                [a.time_ms for a in chunk],
                [a.bid for a in chunk],
                [a.ask for a in chunk],
                None if own_clock else np.array([a.now_ms for a in chunk]),
            )
            reasons.extend(None if r == 0 else Reject(r).label for r in res.reason.tolist())
        if advance and not own_clock and i < len(arrivals):
            ag.advance(arrivals[i].now_ms)  # up to the next arrival's clock: changes no decision
        if take:
            collect()
    final_now = max(a.now_ms for a in arrivals) + 2 * M
    ag.advance(final_now)
    collect()
    for c in ag.open_candles():
        stored[(c.pair, c.timeframe, c.bucket_ms)] = c
    return ag, stored, reasons, repairs, final_now


plans = st.lists(
    st.tuples(st.integers(1, 40), st.sampled_from(("single", "batch")), st.booleans(), st.booleans()),
    min_size=1,
    max_size=20,
)


def _reference(arrivals: list[Arrival], final_now: int, own_clock: bool):
    rules = Rules(PAIRS, TFS, **RULES)
    if own_clock:
        arrivals = [Arrival(a.pair, a.time_ms, a.bid, a.ask, None) for a in arrivals]
    return aggregate(rules, arrivals, final_now)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), plans, st.booleans())
def test_any_batching_and_schedule_equals_the_reference(arrivals, plan, own_clock) -> None:
    plan = [*plan, (len(arrivals), "batch", False, True)]  # whatever the plan left over
    ag, stored, reasons, repairs, final_now = _run(arrivals, plan, own_clock)
    ref = _reference(arrivals, final_now, own_clock)
    assert reasons == ref.reasons
    assert stored == ref.candles
    assert repairs == ref.repairs
    st_ = ag.stats()
    assert st_.rejected == ref.rejected
    assert (st_.late_corrected, st_.late_dropped) == (ref.late_corrected, ref.late_dropped)
    assert st_.accepted == sum(r is None for r in ref.reasons)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.integers(0, 80), st.integers(0, 2**32))
def test_restart_from_stored_state_equals_the_reference(arrivals, cut, seed) -> None:
    """Stop after `cut` arrivals, keep only what a writer stores (forming, closed and corrected
    rows, accepted ticks), start a new aggregator from it as the writer's load does, and
    carry on: the candles equal an uninterrupted reference run."""
    cut = min(cut, len(arrivals))
    rng = random.Random(seed)
    rules = Rules(PAIRS, TFS, **RULES)
    final_now = max(a.now_ms for a in arrivals) + 2 * M

    first = Aggregator(PAIRS, TFS, **RULES)
    stored: dict[tuple[str, str, int], Candle] = {}
    ticks: list[Tick] = []
    for a in arrivals[:cut]:
        if first.add(a.pair, a.time_ms, a.bid, a.ask, a.now_ms) is None:
            ticks.append(Tick(a.pair, a.time_ms, a.bid, a.ask))
        if rng.random() < 0.2:
            first.advance(a.now_ms)
    for c in first.take_dirty():
        stored[(c.pair, c.timeframe, c.bucket_ms)] = c
    for e in first.drain_events():
        if not isinstance(e, RepairNeeded):
            stored[(e.candle.pair, e.candle.timeframe, e.candle.bucket_ms)] = e.candle
    now = first.now_ms

    second = Aggregator(PAIRS, TFS, **RULES)
    if now is not None:
        grace, late = RULES["close_grace_ms"], RULES["lateness_ms"]

        def close_of(c: Candle) -> int:
            return c.bucket_ms + tfs.length_ms(c.timeframe) + grace

        newest = {p: max((t.time_ms for t in ticks if t.pair == p), default=None) for p in PAIRS}
        second.resume(
            open_candles=[c for c in stored.values() if not c.complete and close_of(c) > now],
            closed_candles=[c for c in stored.values() if c.complete and close_of(c) + late >= now],
            last_ticks=[t for t in ticks if t.time_ms >= newest[t.pair] - RULES["dedupe_window_ms"]],
        )
    for a in arrivals[cut:]:
        second.add(a.pair, a.time_ms, a.bid, a.ask, a.now_ms)
    second.advance(final_now)
    for c in second.take_dirty():
        stored[(c.pair, c.timeframe, c.bucket_ms)] = c
    for e in second.drain_events():
        if not isinstance(e, RepairNeeded):
            stored[(e.candle.pair, e.candle.timeframe, e.candle.bucket_ms)] = e.candle
    for c in second.open_candles():
        stored[(c.pair, c.timeframe, c.bucket_ms)] = c

    assert stored == aggregate(rules, arrivals, final_now).candles
