"""The consumer, built from its explicit parts (a real pipeline into an in-memory sink, a real
repair book and gap tracker): what reaches the candles, the repair book and the coverage record,
in queue order. One behaviour per test; no thread is started (drain() is what the thread runs)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading

import numpy as np

from collector.aggregator import CandleClosed, Event
from collector.config import load_settings
from collector.consumer import Consumer
from collector.gaps import GapTracker
from collector.ig_stream import LostUpdates, RawUpdate
from collector.metrics import Metrics
from collector.models import Candle, CoverageMark, Flag
from collector.pipeline import Pipeline
from collector.repairs import PartialAwareSink, RepairBook
from collector.vocabulary import CandleKind, CoverageEnd, FlagReason

T = int(dt.datetime(2024, 3, 8, 10, 0, tzinfo=dt.UTC).timestamp() * 1000)  # a Friday, market open
S, M = 1000, 60_000
SETTINGS = load_settings(pairs="EURUSD,USDJPY", timeframes="5m")


class Sink:
    """Records what the writer would be asked to store, flags included."""

    def __init__(self) -> None:
        self.ticks: list[int] = []
        self.candles: list[tuple[str, Candle]] = []
        self.events: list[Event] = []
        self.flags: list[Flag] = []

    def submit_tick(self, code: int, time_ms: int, bid: float, ask: float, received_ms: int | None = None) -> None:
        self.ticks.append(time_ms)

    def submit_ticks(self, codes, times, bids, asks, received_ms=None) -> None:  # type: ignore[no-untyped-def]
        self.ticks.extend(np.asarray(times).tolist())

    def submit_candles(self, candles, kind) -> None:  # type: ignore[no-untyped-def]
        self.candles.extend((kind, c) for c in candles)

    def submit_events(self, events) -> None:  # type: ignore[no-untyped-def]
        self.events.extend(events)

    def submit_flags(self, flags) -> None:  # type: ignore[no-untyped-def]
        self.flags.extend(flags)


@dataclasses.dataclass
class Rig:
    consumer: Consumer
    sink: Sink
    book: RepairBook
    coverage: list[CoverageMark]
    wakes: list[int]
    now: list[int]
    stopping: threading.Event
    metrics: Metrics


def rig(now_ms: int = T) -> Rig:
    sink, coverage, wakes, now = Sink(), [], [], [now_ms]
    book = RepairBook(sink)
    pipeline = Pipeline(SETTINGS, PartialAwareSink(sink, book))
    gaps = GapTracker(SETTINGS.pairs, SETTINGS.timeframes, repair_horizon_ms=6 * 3_600_000)
    metrics, stopping = Metrics(), threading.Event()
    metrics.init_labels(SETTINGS.pairs, SETTINGS.timeframes)
    c = Consumer(
        pipeline, gaps, book, metrics=metrics, now_ms=lambda: now[0], write_coverage=coverage.append,
        wake_repairs=lambda: wakes.append(1), stopping=stopping,
    )  # fmt: skip
    return Rig(c, sink, book, coverage, wakes, now, stopping, metrics)


def tick(t: int, pair: str = "EURUSD", *, snapshot: bool = False, bid: str = "1.1", ofr: str = "1.2") -> RawUpdate:
    return RawUpdate(pair, bid, ofr, str(t), received_ms=t + 50, snapshot=snapshot)


def lost(r: Rig, reason: str) -> float | None:
    return r.metrics.registry.get_sample_value("ig_collector_updates_lost_total", {"reason": reason})


def flagged(r: Rig) -> set[tuple[str, str, int, str]]:
    return {(f.pair, f.timeframe, f.bucket_ms, f.reason) for f in r.sink.flags}


def test_accepted_updates_reach_the_writer_in_queue_order() -> None:
    r = rig()
    r.consumer.updates.extend([tick(T + S), tick(T + 2 * S), tick(T + 3 * S, "USDJPY", bid="150.1", ofr="150.2")])
    assert r.consumer.drain() == 3
    assert r.sink.ticks == [T + S, T + 2 * S, T + 3 * S]


def test_received_updates_are_counted_per_pair() -> None:
    r = rig()
    r.consumer.updates.extend([tick(T + S), tick(T + 2 * S), tick(T + 3 * S, "USDJPY")])
    r.consumer.drain()
    assert (r.consumer.received, r.consumer.received_by_pair) == (3, {"EURUSD": 2, "USDJPY": 1})


def test_an_accepted_update_sets_the_arrival_the_stale_watchdog_reads() -> None:
    r = rig()
    r.consumer.updates.append(tick(T + S))
    r.consumer.drain()
    assert r.consumer.last_arrival_ms == T + S + 50


def test_a_rejected_update_moves_neither_the_arrival_nor_the_newest_ig_time() -> None:
    r = rig()
    r.consumer.updates.append(tick(T + S, bid="1.3", ofr="1.2"))  # crossed
    r.consumer.drain()
    assert (r.consumer.last_arrival_ms, r.consumer.last_tick_ms()) == (0, None)


def test_the_first_live_tick_after_a_start_flags_its_bucket_before_it_is_fed() -> None:
    r = rig()
    r.consumer.gaps.resume(None)
    r.consumer.updates.append(tick(T + 7 * M))
    r.consumer.drain()
    assert flagged(r) == {(p, "5m", T + 5 * M, FlagReason.FIRST_START) for p in SETTINGS.pairs}
    assert r.coverage == [CoverageMark(up=True, at_ms=T + 7 * M)]
    assert r.wakes == [1]


def test_a_snapshot_does_not_end_a_gap() -> None:
    r = rig()
    r.consumer.gaps.resume(T)
    r.consumer.updates.append(tick(T + M, snapshot=True))
    r.consumer.drain()
    assert (r.coverage, r.consumer.gaps.awaiting_first) == ([], True)


def test_a_first_starts_snapshot_in_the_bucket_before_the_first_live_tick_is_flagged() -> None:
    r = rig()
    r.consumer.gaps.resume(None)
    r.consumer.updates.extend([tick(T + 4 * M, snapshot=True), tick(T + 7 * M)])
    r.consumer.drain()
    assert ("EURUSD", "5m", T, FlagReason.FIRST_START) in flagged(r)
    assert ("USDJPY", "5m", T, FlagReason.FIRST_START) not in flagged(r)


def test_a_snapshot_after_another_pairs_live_tick_closed_the_gap_is_flagged() -> None:
    r = rig()
    r.consumer.gaps.resume(None)
    r.consumer.updates.append(tick(T + 7 * M))
    r.consumer.drain()
    r.consumer.updates.append(tick(T + 11 * M, "USDJPY", snapshot=True, bid="150.1", ofr="150.2"))
    r.consumer.drain()
    assert ("USDJPY", "5m", T + 10 * M, FlagReason.FIRST_START) in flagged(r)


def test_a_snapshot_repeating_a_tick_already_seen_flags_nothing() -> None:
    r = rig()
    r.consumer.updates.append(tick(T + S))
    r.consumer.drain()
    before = set(flagged(r))
    r.consumer.updates.append(tick(T + S, snapshot=True))
    r.consumer.drain()
    assert flagged(r) == before


def test_a_down_marker_records_where_coverage_ended() -> None:
    r = rig()
    r.consumer.updates.append(tick(T + 4 * S))
    r.now[0] = T + 9 * S
    r.consumer.mark(up=False)
    r.consumer.drain()
    assert r.coverage == [CoverageMark(up=False, at_ms=T + 4 * S, reason=CoverageEnd.OUTAGE)]


def test_a_down_marker_while_stopping_records_a_stop() -> None:
    r = rig()
    r.stopping.set()
    r.consumer.mark(up=False)
    r.consumer.drain()
    assert r.coverage == [CoverageMark(up=False, at_ms=T, reason=CoverageEnd.STOPPED)]


def test_an_outage_flags_its_buckets_and_the_close_is_written_incomplete_without_notify() -> None:
    r = rig()
    r.consumer.updates.append(tick(T + 4 * M))
    r.consumer.mark(up=False)
    r.consumer.mark(up=True)
    r.consumer.updates.append(tick(T + 6 * M))
    r.consumer.drain()
    assert flagged(r) == {(p, "5m", b, FlagReason.STREAM_GAP) for p in SETTINGS.pairs for b in (T, T + 5 * M)}
    r.consumer.pipeline.tick(T + 11 * M)  # both buckets closed
    assert [e for e in r.sink.events if isinstance(e, CandleClosed)] == []
    closed = [(kind, c.bucket_ms, c.complete) for kind, c in r.sink.candles if c.bucket_ms == T]
    assert (CandleKind.FORMING, T, False) in closed


def test_server_dropped_updates_are_counted_and_flag_the_pairs_buckets() -> None:
    r = rig()
    r.consumer.updates.append(tick(T + 4 * M))
    r.consumer.updates.append(LostUpdates("EURUSD", 7, T + 6 * M))
    r.consumer.drain()
    assert flagged(r) == {("EURUSD", "5m", T, FlagReason.LOST_UPDATES), ("EURUSD", "5m", T + 5 * M, "lost_updates")}
    assert lost(r, "server_dropped") == 7


def test_dropped_updates_of_a_pair_not_collected_are_not_counted() -> None:
    r = rig()
    r.consumer.updates.append(LostUpdates("GBPUSD", 7, T))
    r.consumer.drain()
    assert (r.sink.flags, lost(r, "server_dropped")) == ([], 0)


def test_an_update_lost_at_the_queue_bound_is_flagged_at_the_next_drain() -> None:
    r = rig()
    r.consumer.overflow(tick(T + 7 * M))
    assert r.sink.flags == []
    r.consumer.drain()
    assert r.sink.flags == [Flag("EURUSD", "5m", T + 5 * M, FlagReason.QUEUE_OVERFLOW)]
    assert lost(r, "queue_full") == 1


def test_a_batch_the_pipeline_raises_on_is_flagged_and_the_marker_behind_it_still_seen() -> None:
    r = rig()

    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("a bug")

    r.consumer.pipeline.feed_batch = broken  # type: ignore[method-assign]
    r.consumer.updates.extend([tick(T + M), tick(T + 6 * M)])
    r.consumer.mark(up=False)
    r.consumer.drain()
    assert flagged(r) == {("EURUSD", "5m", b, FlagReason.CONSUMER_ERROR) for b in (T, T + 5 * M)}
    assert [m.up for m in r.coverage] == [False]


def test_the_queue_depth_is_reported_after_each_drain() -> None:
    r = rig()
    r.consumer.updates.append(tick(T + S))
    r.consumer.drain()
    assert r.metrics.registry.get_sample_value("ig_collector_queue_depth") == 0
