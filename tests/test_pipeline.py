"""Raw stream updates through validation, aggregator and a sink: counting, pacing, and the
per-update path agreeing with the batch path on raw values."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.aggregator import CandleClosed, Event, RepairNeeded
from collector.config import load_settings
from collector.models import Candle
from collector.pipeline import Pipeline
from collector.validation import Reject

T = int(dt.datetime(2024, 3, 8, 10, 0, tzinfo=dt.UTC).timestamp() * 1000)
S, M = 1000, 60_000
SETTINGS = load_settings(pairs="EURUSD,USDJPY", timeframes="5m,15m")


class Sink:
    """Records what a writer would be asked to store."""

    def __init__(self) -> None:
        self.ticks: list[tuple[int, int, float, float, int | None]] = []
        self.candles: list[tuple[str, Candle]] = []
        self.events: list[Event] = []

    def submit_tick(self, code, time_ms, bid, ask, received_ms=None) -> None:
        self.ticks.append((code, time_ms, bid, ask, received_ms))

    def submit_ticks(self, codes, times, bids, asks, received_ms=None) -> None:
        rec = np.broadcast_to(np.asarray(-1 if received_ms is None else received_ms), np.shape(times))
        for c, t, b, a, r in zip(
            codes.tolist(), times.tolist(), bids.tolist(), asks.tolist(), rec.tolist(), strict=True
        ):
            self.ticks.append((c, t, b, a, None if r == -1 else r))

    def submit_candles(self, candles, kind) -> None:
        self.candles.extend((kind, c) for c in candles)

    def submit_events(self, events) -> None:
        self.events.extend(events)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_accepted_update_reaches_the_writer_with_its_receive_time() -> None:
    sink = Sink()
    p = Pipeline(SETTINGS, sink)
    assert p.feed("EURUSD", "1.1", "1.2", str(T), received_ms=T + 5) is None
    assert sink.ticks == [(0, T, 1.1, 1.2, T + 5)]


def test_unparseable_update_is_counted_and_not_stored() -> None:
    sink = Sink()
    p = Pipeline(SETTINGS, sink)
    assert p.feed("EURUSD", None, "1.2", str(T), received_ms=T) is Reject.MISSING
    assert p.feed("EURUSD", "x", "1.2", str(T), received_ms=T) is Reject.NON_NUMERIC
    st_ = p.aggregator.stats()
    assert (st_.rejected["missing"], st_.rejected["non_numeric"], st_.received, sink.ticks) == (1, 1, 2, [])


def test_a_close_is_handed_to_the_writer_with_the_update_that_moved_the_clock() -> None:
    sink = Sink()
    p = Pipeline(SETTINGS, sink)
    p.feed("EURUSD", "1.1", "1.2", str(T), received_ms=T)
    p.feed("EURUSD", "1.1", "1.2", str(T + 5 * M + 2 * S), received_ms=T + 5 * M + 2 * S)
    assert [(type(e), e.candle.timeframe) for e in sink.events] == [(CandleClosed, "5m")]


def test_tick_closes_on_the_clock_without_updates() -> None:
    sink = Sink()
    p = Pipeline(SETTINGS, sink)
    p.feed("EURUSD", "1.1", "1.2", str(T), received_ms=T)
    p.tick(T + 15 * M + 1500)
    assert [e.candle.timeframe for e in sink.events] == ["5m", "15m"]


def test_forming_candles_are_submitted_at_the_forming_interval() -> None:
    clock, sink = Clock(), Sink()
    p = Pipeline(SETTINGS, sink, clock, forming_interval_s=1.0)
    p.feed("EURUSD", "1.1", "1.2", str(T), received_ms=T)
    clock.t = 0.99
    p.tick(T + 1)
    assert sink.candles == []
    clock.t = 1.0
    p.tick(T + 2)
    assert [(k, c.timeframe, c.ticks) for k, c in sink.candles] == [("forming", "5m", 1), ("forming", "15m", 1)]


def test_forming_candles_are_handed_over_every_50_ms_by_default() -> None:
    clock, sink = Clock(), Sink()
    p = Pipeline(SETTINGS, sink, clock)
    p.feed("EURUSD", "1.1", "1.2", str(T), received_ms=T)
    clock.t = 0.049
    p.tick(T + 1)
    assert (p.forming_interval_s, sink.candles) == (0.05, [])
    clock.t = 0.05
    p.tick(T + 2)
    assert [(k, c.timeframe, c.ticks) for k, c in sink.candles] == [("forming", "5m", 1), ("forming", "15m", 1)]


def test_a_bucket_changed_many_times_within_an_interval_is_handed_over_once_in_its_newest_state() -> None:
    clock, sink = Clock(), Sink()
    p = Pipeline(SETTINGS, sink, clock, forming_interval_s=1.0)
    for i in range(5):
        p.feed("EURUSD", "1.1", "1.2", str(T + i), received_ms=T + i)
        p.tick(T + i)
    clock.t = 1.0
    p.tick(T + 10)
    assert [(c.timeframe, c.ticks) for _, c in sink.candles] == [("5m", 5), ("15m", 5)]


def test_an_unchanged_forming_candle_is_not_handed_over_again() -> None:
    clock, sink = Clock(), Sink()
    p = Pipeline(SETTINGS, sink, clock)
    p.feed("EURUSD", "1.1", "1.2", str(T), received_ms=T)
    clock.t = 0.05
    p.tick(T + 1)
    clock.t = 0.10
    p.tick(T + 2)
    assert len(sink.candles) == 2


def test_finish_can_close_unfinished_buckets() -> None:
    sink = Sink()
    p = Pipeline(SETTINGS, sink)
    p.feed("EURUSD", "1.1", "1.2", str(T), received_ms=T)
    p.finish(close_all=True)
    assert [(e.candle.timeframe, e.candle.complete) for e in sink.events] == [("5m", True), ("15m", True)]


_price = st.sampled_from(["1.1", "1.1002", "1.1001", "", None, "x", "0", "-1", "nan", "1.3"])
_pair = st.sampled_from(["EURUSD", "USDJPY", "GBPUSD", "", None])
_update = st.tuples(
    _pair,
    _price,
    _price,
    st.one_of(st.integers(-2, 400).map(lambda i: str(T + i * 1500)), st.sampled_from(["", None, "1.5", "z"])),
    st.integers(0, 400).map(lambda i: T + i * 1500),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_update, min_size=1, max_size=60), st.integers(1, 20), st.booleans())
def test_per_update_and_batch_paths_agree_on_raw_values(updates, chunk, own_clock) -> None:
    ups = [(*u[:4], None if own_clock else u[4]) for u in updates]
    ups = sorted(ups, key=lambda u: -1 if u[4] is None else u[4])  # receive times only go forward
    one, many = Sink(), Sink()
    p1, p2 = Pipeline(SETTINGS, one), Pipeline(SETTINGS, many)
    reasons1 = [p1.feed(*u) for u in ups]
    reasons2: list[Reject | None] = []
    for i in range(0, len(ups), chunk):
        part = ups[i : i + chunk]
        cols = list(zip(*part, strict=True))
        rec = None if own_clock else np.array(cols[4], dtype=np.int64)
        res = p2.feed_batch(cols[0], cols[1], cols[2], cols[3], rec)
        reasons2.extend(None if r == 0 else Reject(r) for r in res.reason.tolist())
    for p in (p1, p2):
        p.finish()
    assert reasons1 == reasons2
    assert one.ticks == many.ticks
    # (how many dedupe keys each path happens to hold in memory is not a result)
    assert replace(p1.aggregator.stats(), dedupe_keys=0) == replace(p2.aggregator.stats(), dedupe_keys=0)
    assert sorted(p1.aggregator.open_candles(), key=repr) == sorted(p2.aggregator.open_candles(), key=repr)

    def finals(sink: Sink) -> dict:
        out = {}
        for e in sink.events:
            if not isinstance(e, RepairNeeded):
                out[(e.candle.pair, e.candle.timeframe, e.candle.bucket_ms)] = e.candle
        return out

    assert finals(one) == finals(many)
