"""Ticks in, candles out: the pure, deterministic multi-timeframe aggregator (docs/design.md §4).

No I/O, no threads, no wall clock: every call that can close a candle takes the clock as an
argument (`now_ms`, epoch ms; or None for "the ticks' own clock", i.e. the running maximum of
the valid tick times, which is what replay uses). The same instance serves the per-tick path
(`add`, what the live consumer calls per Lightstreamer update) and the vectorised numpy path
(`add_batch`, for replay, queue drains and benchmarks); the two can be interleaved freely and
produce the same candles, counters and repairs as a plain sort-and-group of the same ticks
(tests/reference.py is that reference).

A tick goes through, in this order: the stateless value checks (collector.validation), the
future check against the clock, the duplicate filter (collector.dedupe), and then each
timeframe's bucket (collector.buckets: open, correctable or too late; collector.bar: the OHLC
rule). Buckets are UTC, epoch-aligned and keyed by start; a tick goes to the bucket of its IG
time. Rejects, in this order: missing, non_numeric, unknown_pair, non_positive, crossed, future
(IG time > now + `future_tolerance_ms`), duplicate, too_late (dropped by every timeframe: not
stored).

Forming candles are not pushed per tick: `take_dirty()` returns those changed since the last
call. Closes, corrections and repairs queue as events for `drain_events()`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .bar import Bar
from .buckets import NEVER, Buckets
from .candle_events import CandleClosed, CandleCorrected, Event, RepairNeeded
from .dedupe import DuplicateFilter
from .models import Candle, RecentTicks, Tick
from .validation import N_CODES, Reject, check_values, check_values_batch

if TYPE_CHECKING:
    from .config import Settings

__all__ = [
    "Aggregator",
    "AggregatorStats",
    "BatchResult",
    "CandleClosed",
    "CandleCorrected",
    "Event",
    "RepairNeeded",
]

_NO_CLOCK = -NEVER


@dataclass(frozen=True)
class BatchResult:
    """Per input tick: 0 when accepted (stored and in at least one candle), else a Reject code."""

    reason: np.ndarray

    @property
    def accepted(self) -> np.ndarray:
        return self.reason == 0


@dataclass(frozen=True)
class AggregatorStats:
    received: int
    accepted: int
    rejected: dict[str, int]  # by Reject label, zero counts included
    late_corrected: dict[str, int]  # by timeframe
    late_dropped: dict[str, int]  # by timeframe
    accepted_by_pair: dict[str, int]
    open_candles: int
    dedupe_keys: int


class Aggregator:
    def __init__(
        self,
        pairs: Sequence[str],
        timeframes: Sequence[str],
        *,
        close_grace_ms: int = 1500,
        lateness_ms: int = 60_000,
        future_tolerance_ms: int = 30_000,
        dedupe_window_ms: int = 60_000,
    ) -> None:
        if not pairs or not timeframes:
            raise ValueError("at least one pair and one timeframe")
        if len(pairs) >= 1 << 19:  # a pair code must fit the duplicate filter's int64 key
            raise ValueError("too many pairs")
        self.pairs: tuple[str, ...] = tuple(pairs)
        self.timeframes: tuple[str, ...] = tuple(timeframes)
        self.pair_codes: dict[str, int] = {p: i for i, p in enumerate(self.pairs)}
        self._tf_index = {tf: i for i, tf in enumerate(self.timeframes)}
        self.close_grace_ms = close_grace_ms
        self.lateness_ms = lateness_ms
        self.future_tolerance_ms = future_tolerance_ms
        self.dedupe_window_ms = dedupe_window_ms

        self._now = _NO_CLOCK
        self._buckets = Buckets(self.pairs, self.timeframes, close_grace_ms=close_grace_ms, lateness_ms=lateness_ms)
        self._dedupe = DuplicateFilter(len(self.pairs), dedupe_window_ms)

        # Counters: plain attributes so the metrics layer can read them without a lock.
        self.received = 0
        self.accepted = 0
        self.rejected = [0] * N_CODES  # indexed by Reject code
        self.accepted_by_pair = [0] * len(self.pairs)
        self.late_corrected = self._buckets.late_corrected  # indexed like self.timeframes
        self.late_dropped = self._buckets.late_dropped

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: int) -> Aggregator:
        kw = {
            "close_grace_ms": settings.close_grace_ms,
            "lateness_ms": settings.lateness_ms,
            "future_tolerance_ms": settings.future_tolerance_ms,
        }
        kw.update(overrides)
        return cls(settings.pairs, settings.timeframes, **kw)

    # ------------------------------------------------------------------ clock and closing
    @property
    def now_ms(self) -> int | None:
        return None if self._now == _NO_CLOCK else self._now

    def advance(self, now_ms: int) -> list[Candle]:
        """Move the clock (never backwards) and close every bucket whose end + grace has come.

        Returns the candles closed by this call; they are also queued as `CandleClosed`.
        """
        if now_ms > self._now:
            self._now = now_ms
        return self._buckets.advance(self._now)

    def close_all(self) -> list[Candle]:
        """Close every open bucket now, ended or not (replay --close-at-end)."""
        return self._buckets.close_all()

    # ------------------------------------------------------------------ per-tick path
    def add(self, pair: str, time_ms: int, bid: float, ask: float, now_ms: int | None = None) -> Reject | None:
        """One typed tick. Returns None when accepted, else the reason (also counted)."""
        self.received += 1
        code = self.pair_codes.get(pair)
        reject = check_values(code is not None, time_ms, bid, ask)
        if now_ms is None:
            now = time_ms if reject is None and time_ms > self._now else self._now
        else:
            now = now_ms if now_ms > self._now else self._now
        if now > self._now:
            self._now = now
        buckets = self._buckets
        if now >= buckets.next_close or now > buckets.next_evict:
            buckets.advance(now)
        if reject is None:
            assert code is not None
            if time_ms > now + self.future_tolerance_ms:
                reject = Reject.FUTURE
            elif not self._dedupe.admit(code, time_ms, bid, ask):
                reject = Reject.DUPLICATE
            elif not buckets.fold_tick(code, time_ms, bid, ask, now):
                reject = Reject.TOO_LATE
            else:
                self.accepted += 1
                self.accepted_by_pair[code] += 1
                return None
        self.rejected[reject] += 1
        return reject

    def add_tick(self, tick: Tick, now_ms: int | None = None) -> Reject | None:
        return self.add(tick.pair, tick.time_ms, tick.bid, tick.ask, now_ms)

    def count_reject(self, reason: Reject, n: int = 1) -> None:
        """Count ticks refused before they reached the aggregator (unparseable stream values),
        so all rejects live in one set of counters."""
        self.received += n
        self.rejected[reason] += n

    # ------------------------------------------------------------------ batch path
    def add_batch(
        self,
        codes: np.ndarray | Sequence[int],
        times: np.ndarray | Sequence[int],
        bids: np.ndarray | Sequence[float],
        asks: np.ndarray | Sequence[float],
        now_ms: int | np.ndarray | None = None,
    ) -> BatchResult:
        """Many ticks in arrival order: pair codes (index into `pairs`, -1 = unknown), IG times,
        bids, asks, and the clock per tick (an array), for the whole batch (an int), or None
        for the ticks' own clock. Same outcome as calling `add` for each tick in order."""
        codes = np.asarray(codes, dtype=np.int64)
        times = np.asarray(times, dtype=np.int64)
        bids = np.asarray(bids, dtype=np.float64)
        asks = np.asarray(asks, dtype=np.float64)
        n = len(times)
        if not (len(codes) == len(bids) == len(asks) == n):
            raise ValueError("codes, times, bids and asks must have the same length")
        if n == 0:
            return BatchResult(np.zeros(0, np.int8))
        self.received += n
        reason = check_values_batch(codes, len(self.pairs), times, bids, asks)
        valid = reason == 0
        if now_ms is None:
            clock = np.where(valid, times, self._now)
        else:
            clock = np.broadcast_to(np.asarray(now_ms, dtype=np.int64), (n,))
        now = np.maximum.accumulate(np.maximum(clock, self._now))  # the clock at each arrival
        future = valid & (times > now + self.future_tolerance_ms)
        reason[future] = Reject.FUTURE
        idx = np.flatnonzero(valid & ~future)
        if len(idx):
            c, t, b, a = codes[idx], times[idx], bids[idx], asks[idx]
            duplicate, order = self._dedupe.admit_batch(c, t, b, a)
            reason[idx[duplicate]] = Reject.DUPLICATE
            sel = order[~duplicate[order]]  # the new ticks, sorted by (pair, time, arrival)
            if len(sel):
                kept = self._buckets.fold_sorted(c[sel], t[sel], b[sel], a[sel], now[idx[sel]])
                reason[idx[sel[~kept]]] = Reject.TOO_LATE
        self.advance(int(now[-1]))
        counts = np.bincount(reason, minlength=N_CODES)
        for code in range(1, N_CODES):
            self.rejected[code] += int(counts[code])
        accepted = n - int(counts[1:].sum())
        self.accepted += accepted
        if accepted:
            by_pair = np.bincount(codes[reason == 0], minlength=len(self.pairs))
            for i in np.flatnonzero(by_pair).tolist():
                self.accepted_by_pair[i] += int(by_pair[i])
        return BatchResult(reason)

    # ------------------------------------------------------------------ outputs
    def take_dirty(self) -> list[Candle]:
        """Forming candles changed since the last call (complete=False), in key order."""
        return self._buckets.take_dirty()

    def open_candles(self) -> list[Candle]:
        """Every forming candle, whether changed or not (shutdown, tests)."""
        return self._buckets.open_candles()

    @property
    def has_events(self) -> bool:
        return self._buckets.has_events

    def drain_events(self) -> list[Event]:
        """Closes in the order they happened, then corrections (current state, one per bucket),
        then repairs (one per bucket)."""
        return self._buckets.drain_events()

    # ------------------------------------------------------------------ resume
    def resume(
        self,
        open_candles: Iterable[Candle] = (),
        closed_candles: Iterable[Candle] = (),
        last_ticks: Iterable[Tick] | RecentTicks = (),
    ) -> int:
        """Continue from stored state after a restart; call before feeding ticks.

        `open_candles` are the stored forming rows (their open_ms/close_ms make open and close
        exact); `closed_candles` are recently closed rows that late ticks may still correct
        (a stored row with complete=False stays incomplete: the collector saw it only in part);
        `last_ticks` seed the duplicate filter so a re-subscription snapshot is not counted
        twice. Rows for pairs or timeframes not configured are ignored; returns how many
        candles were taken.
        """
        taken = 0
        for candles, is_open in ((open_candles, True), (closed_candles, False)):
            for c in candles:
                code, tfi = self.pair_codes.get(c.pair), self._tf_index.get(c.timeframe)
                if code is None or tfi is None:
                    continue
                bar = Bar.of_candle(c, complete=True if is_open else c.complete)
                self._buckets.restore(code, tfi, bar, is_open=is_open)
                taken += 1
        rt = last_ticks if isinstance(last_ticks, RecentTicks) else RecentTicks.of(last_ticks)
        if len(rt):
            lut = np.array([self.pair_codes.get(p, -1) for p in rt.pairs], dtype=np.int64)
            codes = lut[rt.pair_index]
            known = codes >= 0
            self._dedupe.seed(codes[known], rt.time_ms[known], rt.bid[known], rt.ask[known])
        return taken

    # ------------------------------------------------------------------ counters
    def stats(self) -> AggregatorStats:
        return AggregatorStats(
            received=self.received,
            accepted=self.accepted,
            rejected={r.label: self.rejected[r] for r in Reject},
            late_corrected=dict(zip(self.timeframes, self.late_corrected, strict=True)),
            late_dropped=dict(zip(self.timeframes, self.late_dropped, strict=True)),
            accepted_by_pair=dict(zip(self.pairs, self.accepted_by_pair, strict=True)),
            open_candles=self._buckets.open_count(),
            dedupe_keys=len(self._dedupe),
        )
