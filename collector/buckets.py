"""The bucket book: every bucket the aggregator still holds, from its first tick until no tick can
change it any more (docs/design.md §4).

A bucket's life, per (pair, timeframe, bucket start):

* open (forming) from its first tick until the clock reaches end + `close_grace_ms`, when it
  closes, with or without a later tick;
* closed but correctable for `lateness_ms` after that: a tick for it then corrects it (counted
  in `late_corrected`, emitted as `CandleCorrected`);
* forgotten after that: a tick for it is dropped for that timeframe (counted in
  `late_dropped`, and one `RepairNeeded` per bucket so REST can replace it).

Timeframes decide separately: a tick can be too late for 5m yet still inside an open 15m
bucket. The per-tick path (`fold_tick`) and the batch path (`fold_sorted`) are twins, side by
side so that a change to one is seen beside the other; tests/test_aggregator.py proves them
equal to a plain sort-and-group of the same ticks.

Buckets are addressed by slot (pair code * number of timeframes + timeframe index) and bucket
start: plain ints, because the hot path touches them per tick and per timeframe.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import timeframes as tfs
from .bar import Bar, runs
from .candle_events import CandleClosed, CandleCorrected, Event, RepairNeeded
from .models import Candle

NEVER = 1 << 62  # "no close or eviction due"; negated, "no clock yet"

Key = tuple[int, int]  # (slot, bucket start)


class Buckets:
    def __init__(
        self, pairs: Sequence[str], timeframes: Sequence[str], *, close_grace_ms: int, lateness_ms: int
    ) -> None:
        self.pairs, self.timeframes = tuple(pairs), tuple(timeframes)
        self.close_grace_ms, self.lateness_ms = close_grace_ms, lateness_ms
        self._lengths = tuple(tfs.length_ms(tf) for tf in self.timeframes)
        self._ntf = len(self._lengths)
        # (index, length, close offset) per timeframe: the per-tick loop's constants, computed once.
        self._tf_rules = tuple((i, n, n + close_grace_ms) for i, n in enumerate(self._lengths))
        self._open: list[dict[int, Bar]] = [{} for _ in range(len(self.pairs) * self._ntf)]  # by slot, start
        self._closed: dict[Key, Bar] = {}  # closed, still correctable
        self._dirty: set[Key] = set()  # open buckets changed since `take_dirty`
        self._corrected: dict[Key, Bar] = {}
        self._repairs: dict[Key, None] = {}  # an ordered set
        self._closes: list[Event] = []
        # The earliest close and eviction due, so the clock can move per tick without a scan
        # (the aggregator's per-tick path reads them before it calls `advance`).
        self.next_close = NEVER
        self.next_evict = NEVER
        # Per timeframe index; plain lists so the metrics layer can read them without a lock.
        self.late_corrected = [0] * self._ntf
        self.late_dropped = [0] * self._ntf

    # ------------------------------------------------------------------ ticks in
    def fold_tick(self, code: int, time_ms: int, bid: float, ask: float, now: int) -> bool:
        """One accepted tick into each timeframe's bucket, the clock at `now` with everything due
        closed. False when every timeframe found it too late."""
        kept = False
        late = self.lateness_ms
        first_slot = code * self._ntf
        open_bars, dirty = self._open, self._dirty
        for tfi, length, close_offset in self._tf_rules:
            bucket = time_ms - time_ms % length
            close_at = bucket + close_offset
            slot = first_slot + tfi
            if now < close_at:
                bars = open_bars[slot]
                bar = bars.get(bucket)
                if bar is None:
                    bars[bucket] = Bar.of_tick(bucket, time_ms, bid, ask)
                    if close_at < self.next_close:
                        self.next_close = close_at
                else:
                    bar.add(time_ms, bid, ask)
                dirty.add((slot, bucket))
                kept = True
            elif now <= close_at + late:
                self.late_corrected[tfi] += 1
                key = (slot, bucket)
                bar = self._closed.get(key)
                if bar is None:  # the bucket had closed empty
                    bar = self._closed[key] = Bar.of_tick(bucket, time_ms, bid, ask)
                    self.next_evict = min(self.next_evict, close_at + late)
                else:
                    bar.add(time_ms, bid, ask)
                self._corrected[key] = bar
                kept = True
            else:
                self.late_dropped[tfi] += 1
                self._repairs[(slot, bucket)] = None
        return kept

    def fold_sorted(
        self, codes: np.ndarray, times: np.ndarray, bids: np.ndarray, asks: np.ndarray, now: np.ndarray
    ) -> np.ndarray:
        """The batch twin of `fold_tick`: accepted ticks sorted by (pair, time, arrival), `now` the
        clock at each one's arrival. Returns, per tick, whether any timeframe kept it.

        Nothing closes inside a batch (the caller advances the clock after it), so a late tick
        may still find its bucket open; it merges there and the close that follows carries it:
        the same final candle as the per-tick path's close-then-correct."""
        kept = np.zeros(len(codes), dtype=bool)
        grace, late = self.close_grace_ms, self.lateness_ms
        for tfi, length in enumerate(self._lengths):
            buckets = times - times % length
            close_at = buckets + (length + grace)
            is_late = now >= close_at
            drop = now > close_at + late
            if not drop.any():
                kept[:] = True
                self.late_corrected[tfi] += int(is_late.sum())
                self._merge_runs(tfi, codes, buckets, times, bids, asks, is_late)
                continue
            self.late_dropped[tfi] += int(drop.sum())
            for code, bucket in zip(codes[drop].tolist(), buckets[drop].tolist(), strict=True):
                self._repairs[(code * self._ntf + tfi, bucket)] = None
            keep = ~drop
            kept |= keep
            self.late_corrected[tfi] += int((is_late & keep).sum())
            pos = np.flatnonzero(keep)
            if len(pos):
                self._merge_runs(tfi, codes[pos], buckets[pos], times[pos], bids[pos], asks[pos], is_late[pos])
        return kept

    def _merge_runs(
        self,
        tfi: int,
        codes: np.ndarray,
        buckets: np.ndarray,
        times: np.ndarray,
        bids: np.ndarray,
        asks: np.ndarray,
        is_late: np.ndarray,
    ) -> None:
        starts, bars = runs(codes, buckets, times, bids, asks)
        all_late = np.logical_and.reduceat(is_late, starts).tolist()
        close_offset = self._lengths[tfi] + self.close_grace_ms
        ntf, closed = self._ntf, self._closed
        for code, run, run_is_late in zip(codes[starts].tolist(), bars, all_late, strict=True):
            slot, bucket = code * ntf + tfi, run.bucket_ms
            key = (slot, bucket)
            open_bars = self._open[slot]
            bar = open_bars.get(bucket)
            if bar is not None:
                bar.merge(run)
                self._dirty.add(key)
                continue
            bar = closed.get(key)
            if bar is not None:
                bar.merge(run)
                self._corrected[key] = bar
                continue
            close_at = bucket + close_offset
            if run_is_late:  # the bucket had closed empty before its first tick came
                closed[key] = self._corrected[key] = run
                self.next_evict = min(self.next_evict, close_at + self.lateness_ms)
            else:
                open_bars[bucket] = run
                self._dirty.add(key)
                if close_at < self.next_close:
                    self.next_close = close_at

    def restore(self, code: int, tfi: int, bar: Bar, *, is_open: bool) -> None:
        """A bucket stored before a restart, forming (`is_open`) or closed and still correctable."""
        slot, bucket = code * self._ntf + tfi, bar.bucket_ms
        close_at = bucket + self._lengths[tfi] + self.close_grace_ms
        if is_open:
            self._open[slot][bucket] = bar
            self.next_close = min(self.next_close, close_at)
        else:
            self._closed[(slot, bucket)] = bar
            self.next_evict = min(self.next_evict, close_at + self.lateness_ms)

    # ------------------------------------------------------------------ the clock
    def advance(self, now: int) -> list[Candle]:
        """Close what is due at `now` and forget what can no longer be corrected."""
        closed = self._close_due(now) if now >= self.next_close else []
        if now > self.next_evict:
            self._evict(now)
        return closed

    def close_all(self) -> list[Candle]:
        return self._close_due(NEVER)

    def _close_due(self, now: int) -> list[Candle]:
        grace, ntf = self.close_grace_ms, self._ntf
        out: list[Candle] = []
        next_close = NEVER
        for slot, bars in enumerate(self._open):
            if not bars:
                continue
            length = self._lengths[slot % ntf]
            for bucket in sorted(bars):
                close_at = bucket + length + grace
                if close_at <= now:
                    bar = bars.pop(bucket)
                    key = (slot, bucket)
                    self._dirty.discard(key)
                    self._closed[key] = bar
                    self.next_evict = min(self.next_evict, close_at + self.lateness_ms)
                    candle = self._candle(slot, bar, bar.complete)
                    out.append(candle)
                    self._closes.append(CandleClosed(candle))
                elif close_at < next_close:
                    next_close = close_at
        self.next_close = next_close
        return out

    def _evict(self, now: int) -> None:
        """Forget closed buckets no tick can correct any more (it would be dropped as late)."""
        grace, late, ntf = self.close_grace_ms, self.lateness_ms, self._ntf
        next_evict = NEVER
        for key in list(self._closed):
            slot, bucket = key
            limit = bucket + self._lengths[slot % ntf] + grace + late
            if limit < now:
                del self._closed[key]
            elif limit < next_evict:
                next_evict = limit
        self.next_evict = next_evict

    # ------------------------------------------------------------------ candles out
    def _candle(self, slot: int, bar: Bar, complete: bool) -> Candle:
        return bar.candle(self.pairs[slot // self._ntf], self.timeframes[slot % self._ntf], complete)

    def take_dirty(self) -> list[Candle]:
        """Forming candles changed since the last call (complete=False), in key order."""
        if not self._dirty:
            return []
        out = []
        for slot, bucket in sorted(self._dirty):
            bar = self._open[slot].get(bucket)
            if bar is not None:
                out.append(self._candle(slot, bar, False))
        self._dirty = set()
        return out

    def open_candles(self) -> list[Candle]:
        return [self._candle(s, bars[b], False) for s, bars in enumerate(self._open) for b in sorted(bars)]

    def open_count(self) -> int:
        return sum(len(bars) for bars in self._open)

    def closed_count(self) -> int:
        """Closed buckets still held for correction: bounded by the lateness window."""
        return len(self._closed)

    @property
    def has_events(self) -> bool:
        return bool(self._closes or self._corrected or self._repairs)

    def drain_events(self) -> list[Event]:
        """Closes in the order they happened, then corrections (current state, one per bucket),
        then repairs (one per bucket)."""
        out = self._closes
        self._closes = []
        if self._corrected:
            for (slot, _), bar in sorted(self._corrected.items(), key=lambda kv: kv[0]):
                out.append(CandleCorrected(self._candle(slot, bar, bar.complete)))
            self._corrected = {}
        if self._repairs:
            for slot, bucket in sorted(self._repairs):
                out.append(RepairNeeded(self.pairs[slot // self._ntf], self.timeframes[slot % self._ntf], bucket))
            self._repairs = {}
        return out
