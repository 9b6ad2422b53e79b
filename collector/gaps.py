"""Gap detection: which buckets the stream saw only in part, in IG time.

The stream going down and coming back brackets an interval whose buckets are owed a REST
repair (docs/design.md §6). The interval runs from the newest IG time seen before the outage
to the first live tick after it, whatever the clocks say in between: a bucket counts as seen
only if the stream was up for all of it. A start is an outage too (from the last committed
tick, or a first start mid-bucket), and so are updates lost on the way in (the server's `OV`,
our own queue bound, a batch the consumer failed on).

`GapTracker` is pure: updates and state markers in, flags and coverage marks out. It owns no
thread, writes nothing and counts nothing, and every clock value is passed in, so each rule
is a unit test; the consumer turns its answers into writes, wake-ups and log lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from . import timeframes as tfs
from .models import CoverageMark, Flag
from .repairs import flags_for_interval
from .vocabulary import CoverageEnd, FlagReason


@dataclass(frozen=True, slots=True)
class GapClosed:
    """The first live tick after an outage (or a start): the stream covers the market again
    from `coverage.at_ms`, and `flags` are the buckets of [start_ms, end_ms] it did not see."""

    coverage: CoverageMark
    flags: tuple[Flag, ...]
    start_ms: int
    end_ms: int
    reason: FlagReason
    # Where the outage really began when that is older than the repair horizon: the buckets
    # before `start_ms` are left to `ig-collector backfill --since`.
    clipped_from_ms: int | None = None


def _ig_ms(utm: object) -> int | None:
    """IG's UTM field as epoch ms; None when the server sent something that is not a number
    (validation rejects that update; it must not end or extend a gap either)."""
    try:
        return int(utm)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


class GapTracker:
    """The stream's coverage in IG time, fed in queue order by one thread (the consumer)."""

    def __init__(self, pairs: Sequence[str], timeframes: Sequence[str], *, repair_horizon_ms: int) -> None:
        """`repair_horizon_ms` (COLLECTOR_BACKFILL_MAX_AGE_S): an outage older than this is not
        repaired automatically, so a week-long stop does not spend a week of REST points."""
        self.pairs = tuple(pairs)
        self.timeframes = tuple(timeframes)
        self.repair_horizon_ms = repair_horizon_ms
        self.last_utm: dict[str, int] = {}  # newest accepted IG time per pair
        self.gap_start: int | None = None  # IG time the stream went down; None while up
        self.awaiting_first = False  # down -> up seen (or a start): the gap ends at the next live tick
        self.first_start = True  # no tick was ever committed: partial buckets are the first start's

    def resume(self, last_tick_ms: int | None) -> None:
        """At start, before any update: whatever happened since the last committed tick (a
        restart, kill -9) is a gap; with no tick at all it is a first start mid-bucket."""
        self.gap_start = last_tick_ms
        self.awaiting_first = True
        self.first_start = last_tick_ms is None

    def last_tick_ms(self) -> int | None:
        return max(self.last_utm.values(), default=None)

    # --- state markers --------------------------------------------------------------------------
    def stream_down(self, at_ms: int, *, stopping: bool) -> CoverageMark | None:
        """The stream stopped at clock time `at_ms`; the gap starts at the newest IG time seen
        (the clock's `at_ms` only when no tick came at all). None when already down."""
        self.awaiting_first = False
        if self.gap_start is not None:
            return None
        self.gap_start = self.last_tick_ms() or at_ms
        return CoverageMark(
            up=False, at_ms=self.gap_start, reason=CoverageEnd.STOPPED if stopping else CoverageEnd.OUTAGE
        )

    def stream_up(self) -> None:
        """Connected again: the gap is still open until a live tick says where it ends (a
        snapshot repeats an old tick and proves nothing)."""
        if self.gap_start is not None:
            self.awaiting_first = True

    def stopped(self) -> CoverageMark | None:
        """A clean stop while streaming: coverage ends at the last tick seen."""
        last = self.last_tick_ms()
        if last is None or self.gap_start is not None:
            return None
        return CoverageMark(up=False, at_ms=last, reason=CoverageEnd.STOPPED)

    # --- updates --------------------------------------------------------------------------------
    def live_tick(self, utm: object, now_ms: int) -> GapClosed | None:
        """A non-snapshot update while `awaiting_first`: it ends the gap, and the bucket it falls
        in is partial whatever the clocks say. None when its time is unusable (the gap stays
        open for the next one)."""
        end = _ig_ms(utm)
        if end is None:
            return None
        self.awaiting_first = False
        start, self.gap_start = self.gap_start, None
        if start is None:  # a first start: the bucket it began in was seen only in part
            start, reason = end, FlagReason.FIRST_START
        else:
            start, reason = min(start, end), FlagReason.STREAM_GAP
            self.first_start = False
        floor = now_ms - self.repair_horizon_ms
        clipped = start if start < floor else None
        start = max(start, floor)
        flags = flags_for_interval(self.pairs, self.timeframes, start, end, reason) if end >= start else []
        return GapClosed(CoverageMark(up=True, at_ms=end), tuple(flags), start, end, reason, clipped)

    def snapshot_flags(self, pairs: Sequence[str], utms: Sequence[object], indices: Iterable[int]) -> list[Flag]:
        """Snapshot updates at `indices` that entered the candles. A snapshot repeats a pair's
        last tick; one the duplicate filter let through was never seen before, so the stream
        was not watching that pair when it happened and its bucket is partial. This covers the
        bucket before a first start's first live tick, and a pair whose snapshot comes after
        another pair's live tick closed the gap."""
        reason = FlagReason.FIRST_START if self.first_start else FlagReason.STREAM_GAP
        out: list[Flag] = []
        for i in indices:
            t = _ig_ms(utms[i])
            if t is not None and pairs[i] in self.pairs:
                out.extend(flags_for_interval([pairs[i]], self.timeframes, t, t, reason))
        return out

    def accepted(self, pairs: Sequence[str], utms: Sequence[object], indices: Iterable[int]) -> None:
        """The updates at `indices` entered the candles: they move each pair's newest IG time."""
        last = self.last_utm
        for i in indices:
            t = _ig_ms(utms[i])
            if t is not None and t > last.get(pairs[i], 0):
                last[pairs[i]] = t

    # --- updates lost on the way in -------------------------------------------------------------
    def lost(self, pair: str, at_ms: int) -> list[Flag] | None:
        """The server dropped updates of `pair` between its last delivered tick and `at_ms`.
        None for a pair not collected: its updates were never going to be kept, so nothing
        was lost."""
        if pair not in self.pairs:
            return None
        start = self.last_utm.get(pair, at_ms)
        return flags_for_interval([pair], self.timeframes, min(start, at_ms), at_ms, FlagReason.LOST_UPDATES)

    def failed_batch(self, pairs: Sequence[str], utms: Sequence[object]) -> list[Flag]:
        """The consumer raised on these updates: they are out of the queue and not in the
        candles, so every bucket from each pair's earliest to its latest is short of them."""
        span: dict[str, tuple[int, int]] = {}
        for pair, raw in zip(pairs, utms, strict=True):
            t = _ig_ms(raw)
            if t is None:
                continue
            lo, hi = span.get(pair, (t, t))
            span[pair] = (min(lo, t), max(hi, t))
        return [
            f
            for pair, (lo, hi) in span.items()
            if pair in self.pairs
            for f in flags_for_interval([pair], self.timeframes, lo, hi, FlagReason.CONSUMER_ERROR)
        ]

    def overflow_buckets(self, pair: str, utm: object) -> list[tuple[str, str, int]]:
        """The buckets an update dropped at the queue bound belongs to. Reads only what
        `__init__` set, so the library's thread may call it while the consumer runs."""
        t = _ig_ms(utm)
        if t is None:
            return []
        return [(pair, tf, tfs.bucket_start(t, tfs.length_ms(tf))) for tf in self.timeframes]

    @staticmethod
    def overflow_flags(keys: Iterable[tuple[str, str, int]]) -> list[Flag]:
        return [Flag(p, tf, b, FlagReason.QUEUE_OVERFLOW) for p, tf, b in keys]
