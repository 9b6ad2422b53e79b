"""Ticks in, candles out: the pure, deterministic multi-timeframe aggregator (DESIGN section 4).

No I/O, no threads, no wall clock: every call that can close a candle takes the clock as an
argument (`now_ms`, epoch ms; or None for "the ticks' own clock", i.e. the running maximum of
the valid tick times, which is what replay uses). The same instance serves the per-tick path
(`add`, what the live consumer calls per Lightstreamer update) and the vectorised numpy path
(`add_batch`, for replay, queue drains and benchmarks); the two can be interleaved freely and
produce the same candles, counters and repairs as a plain sort-and-group of the same ticks
(tests/reference.py is that reference).

Rules, per (pair, timeframe, bucket):

* buckets are UTC, epoch-aligned, keyed by start; a tick goes to the bucket of its IG time;
* open is the earliest tick by IG time, close the latest; equal times keep arrival order
  (a stable sort), so a tick at the open's own millisecond never replaces it and one at the
  close's millisecond does;
* the clock closes a bucket at end + `close_grace_ms`, with or without a later tick;
* a tick for a closed bucket within `lateness_ms` of that close corrects it (counted, emitted
  as `CandleCorrected`); later than that it is dropped for that timeframe (counted, and a
  `RepairNeeded` is emitted once per bucket so REST can replace it). Timeframes decide
  separately: a tick can be too late for 5m yet still inside an open 15m bucket. A tick
  dropped by every timeframe is not stored (reason `too_late`);
* rejects, in this order: missing, non_numeric, unknown_pair, non_positive, crossed, future
  (IG time > now + `future_tolerance_ms`), duplicate, too_late.

Duplicates. A re-subscription snapshot repeats the last tick(s), so a tick whose (pair, time,
bid, ask) was already seen is refused while it is recent: precisely, when its time is within
`dedupe_window_ms` of the newest time seen for the pair before it. Keys older than that can
never match again and are pruned, which bounds memory whatever the tick rate. "Seen" means
passed the value and future checks (so a too-late tick that is repeated is then a duplicate,
not a second repair).

Forming candles are not pushed per tick: `take_dirty()` returns those changed since the last
call. Closes, corrections and repairs queue as events for `drain_events()`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import timeframes as tfs
from .models import Candle, RecentTicks, Tick
from .validation import MAX_TIME_MS, N_CODES, TIME_BITS, Reject, check_values, check_values_batch

if TYPE_CHECKING:
    from .config import Settings

_NEVER = 1 << 62  # "no close/evict due" and "no clock yet" (negated) sentinels
_PENDING_FOLD = 8192  # per-tick dedupe keys held in a Python set before folding into numpy


@dataclass(frozen=True, slots=True)
class CandleClosed:
    """The final row of a bucket (complete=True unless it was resumed as partial)."""

    candle: Candle


@dataclass(frozen=True, slots=True)
class CandleCorrected:
    """A closed bucket changed by late ticks: the new full state, not a delta."""

    candle: Candle


@dataclass(frozen=True, slots=True)
class RepairNeeded:
    """A tick for this bucket came too late to be counted: the stored candle is short of it."""

    pair: str
    timeframe: str
    bucket_ms: int
    reason: str = "late_tick"


Event = CandleClosed | CandleCorrected | RepairNeeded


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


class _Bar:
    """Mutable state of one bucket; only ever leaves the aggregator as a frozen `Candle`."""

    __slots__ = ("ac", "ah", "al", "ao", "bc", "bh", "bl", "bo", "bucket", "close_ms", "complete", "n", "open_ms")

    def __init__(
        self,
        bucket: int,
        open_ms: int,
        close_ms: int,
        bo: float,
        bh: float,
        bl: float,
        bc: float,
        ao: float,
        ah: float,
        al: float,
        ac: float,
        n: int,
        complete: bool = True,
    ) -> None:
        self.bucket, self.open_ms, self.close_ms = bucket, open_ms, close_ms
        self.bo, self.bh, self.bl, self.bc = bo, bh, bl, bc
        self.ao, self.ah, self.al, self.ac = ao, ah, al, ac
        self.n = n
        self.complete = complete  # False only for a resumed bucket the collector saw in part

    def merge(
        self,
        ft: int,
        fb: float,
        fa: float,
        lt: int,
        lb: float,
        la: float,
        hb: float,
        lob: float,
        ha: float,
        loa: float,
        n: int,
    ) -> None:
        """Fold in ticks that arrived after everything already in the bar."""
        if ft < self.open_ms:
            self.open_ms, self.bo, self.ao = ft, fb, fa
        if lt >= self.close_ms:
            self.close_ms, self.bc, self.ac = lt, lb, la
        if hb > self.bh:
            self.bh = hb
        if lob < self.bl:
            self.bl = lob
        if ha > self.ah:
            self.ah = ha
        if loa < self.al:
            self.al = loa
        self.n += n


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
        if len(pairs) >= 1 << 19:
            raise ValueError("too many pairs")
        self.pairs: tuple[str, ...] = tuple(pairs)
        self.timeframes: tuple[str, ...] = tuple(timeframes)
        self.pair_codes: dict[str, int] = {p: i for i, p in enumerate(self.pairs)}
        self._tf_index = {tf: i for i, tf in enumerate(self.timeframes)}
        self._lens = tuple(tfs.length_ms(tf) for tf in self.timeframes)
        self._ntf = len(self._lens)
        self.close_grace_ms = close_grace_ms
        self.lateness_ms = lateness_ms
        self.future_tolerance_ms = future_tolerance_ms
        self.dedupe_window_ms = dedupe_window_ms

        self._now = -_NEVER
        nslots = len(self.pairs) * self._ntf
        self._open: list[dict[int, _Bar]] = [{} for _ in range(nslots)]
        self._closed: dict[tuple[int, int], _Bar] = {}  # closed, still correctable
        self._dirty: set[tuple[int, int]] = set()
        self._corrected: dict[tuple[int, int], _Bar] = {}
        self._repairs: dict[tuple[int, int], None] = {}
        self._events: list[Event] = []
        self._next_close = _NEVER
        self._next_evict = _NEVER

        # Duplicate filter: newest seen time per pair, keys as sorted numpy columns keyed by
        # code << 43 | time, plus a small Python set filled by the per-tick path.
        self._maxt: list[int] = [-_NEVER] * len(self.pairs)
        self._dk = np.empty(0, np.int64)
        self._db = np.empty(0, np.float64)
        self._da = np.empty(0, np.float64)
        self._pend: set[tuple[int, int, float, float]] = set()

        # Counters: plain attributes so the metrics layer can read them without a lock.
        self.received = 0
        self.accepted = 0
        self.rejected = [0] * N_CODES  # indexed by Reject code
        self.late_corrected = [0] * self._ntf  # indexed like self.timeframes
        self.late_dropped = [0] * self._ntf
        self.accepted_by_pair = [0] * len(self.pairs)

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
        return None if self._now == -_NEVER else self._now

    def advance(self, now_ms: int) -> list[Candle]:
        """Move the clock (never backwards) and close every bucket whose end + grace has come.

        Returns the candles closed by this call; they are also queued as `CandleClosed`.
        """
        if now_ms > self._now:
            self._now = now_ms
        now = self._now
        closed: list[Candle] = []
        if now >= self._next_close:
            closed = self._close_due(now)
        if now > self._next_evict:
            self._evict(now)
        return closed

    def close_all(self) -> list[Candle]:
        """Close every open bucket now, ended or not (replay --close-at-end)."""
        return self._close_due(_NEVER)

    def _close_due(self, now: int) -> list[Candle]:
        grace, ntf, lens = self.close_grace_ms, self._ntf, self._lens
        out: list[Candle] = []
        next_close = _NEVER
        for slot, bars in enumerate(self._open):
            if not bars:
                continue
            length = lens[slot % ntf]
            for b in sorted(bars):
                c = b + length + grace
                if c <= now:
                    bar = bars.pop(b)
                    key = (slot, b)
                    self._dirty.discard(key)
                    self._closed[key] = bar
                    self._next_evict = min(self._next_evict, c + self.lateness_ms)
                    candle = self._candle(slot, bar, bar.complete)
                    out.append(candle)
                    self._events.append(CandleClosed(candle))
                elif c < next_close:
                    next_close = c
        self._next_close = next_close
        return out

    def _evict(self, now: int) -> None:
        """Forget closed buckets no tick can correct any more (it would be dropped as late)."""
        grace, late, ntf, lens = self.close_grace_ms, self.lateness_ms, self._ntf, self._lens
        next_evict = _NEVER
        for key in list(self._closed):
            slot, b = key
            limit = b + lens[slot % ntf] + grace + late
            if limit < now:
                del self._closed[key]
            elif limit < next_evict:
                next_evict = limit
        self._next_evict = next_evict

    # ------------------------------------------------------------------ per-tick path
    def add(self, pair: str, time_ms: int, bid: float, ask: float, now_ms: int | None = None) -> Reject | None:
        """One typed tick. Returns None when accepted, else the reason (also counted)."""
        self.received += 1
        code = self.pair_codes.get(pair)
        r = check_values(code is not None, time_ms, bid, ask)
        if now_ms is None:
            now = time_ms if r is None and time_ms > self._now else self._now
        else:
            now = now_ms if now_ms > self._now else self._now
        if now > self._now or now >= self._next_close:
            self.advance(now)
        if r is None and time_ms > now + self.future_tolerance_ms:
            r = Reject.FUTURE
        if r is not None:
            self.rejected[r] += 1
            return r
        assert code is not None

        # Duplicates: only a time not newer than the pair's newest can repeat a seen key.
        mp = self._maxt[code]
        if time_ms <= mp:
            if time_ms >= mp - self.dedupe_window_ms and self._seen(code, time_ms, bid, ask):
                self.rejected[Reject.DUPLICATE] += 1
                return Reject.DUPLICATE
        else:
            self._maxt[code] = time_ms
        pend = self._pend
        pend.add((code, time_ms, bid, ask))
        if len(pend) >= _PENDING_FOLD:
            self._fold_pending()

        kept = False
        grace, late = self.close_grace_ms, self.lateness_ms
        base = code * self._ntf
        for tfi, length in enumerate(self._lens):
            b = time_ms - time_ms % length
            c = b + length + grace
            slot = base + tfi
            if now >= c:  # bucket already closed (advance above closed it)
                if now > c + late:
                    self.late_dropped[tfi] += 1
                    self._repairs[(slot, b)] = None
                    continue
                self.late_corrected[tfi] += 1
                key = (slot, b)
                bar = self._closed.get(key)
                if bar is None:
                    bar = _Bar(b, time_ms, time_ms, bid, bid, bid, bid, ask, ask, ask, ask, 1)
                    self._closed[key] = bar
                    self._next_evict = min(self._next_evict, c + late)
                else:
                    bar.merge(time_ms, bid, ask, time_ms, bid, ask, bid, bid, ask, ask, 1)
                self._corrected[key] = bar
                kept = True
                continue
            kept = True
            bars = self._open[slot]
            bar = bars.get(b)
            if bar is None:
                bars[b] = _Bar(b, time_ms, time_ms, bid, bid, bid, bid, ask, ask, ask, ask, 1)
                if c < self._next_close:
                    self._next_close = c
            else:
                if time_ms < bar.open_ms:
                    bar.open_ms, bar.bo, bar.ao = time_ms, bid, ask
                if time_ms >= bar.close_ms:
                    bar.close_ms, bar.bc, bar.ac = time_ms, bid, ask
                if bid > bar.bh:
                    bar.bh = bid
                elif bid < bar.bl:
                    bar.bl = bid
                if ask > bar.ah:
                    bar.ah = ask
                elif ask < bar.al:
                    bar.al = ask
                bar.n += 1
            self._dirty.add((slot, b))
        if not kept:
            self.rejected[Reject.TOO_LATE] += 1
            return Reject.TOO_LATE
        self.accepted += 1
        self.accepted_by_pair[code] += 1
        return None

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
        c_all = np.asarray(codes, dtype=np.int64)
        t_all = np.asarray(times, dtype=np.int64)
        b_all = np.asarray(bids, dtype=np.float64)
        a_all = np.asarray(asks, dtype=np.float64)
        n = len(t_all)
        if not (len(c_all) == len(b_all) == len(a_all) == n):
            raise ValueError("codes, times, bids and asks must have the same length")
        if n == 0:
            return BatchResult(np.zeros(0, np.int8))
        self.received += n
        reason = check_values_batch(c_all, len(self.pairs), t_all, b_all, a_all)
        ok = reason == 0
        if now_ms is None:
            clk = np.where(ok, t_all, self._now)
        else:
            clk = np.broadcast_to(np.asarray(now_ms, dtype=np.int64), (n,))
        now = np.maximum.accumulate(np.maximum(clk, self._now))
        future = ok & (t_all > now + self.future_tolerance_ms)
        reason[future] = Reject.FUTURE
        ok &= ~future
        idx = np.flatnonzero(ok)
        if len(idx):
            self._batch_valid(idx, c_all, t_all, b_all, a_all, now, reason)
        self.advance(int(now[-1]))
        counts = np.bincount(reason, minlength=N_CODES)
        for code in range(1, N_CODES):
            self.rejected[code] += int(counts[code])
        accepted = n - int(counts[1:].sum())
        self.accepted += accepted
        if accepted:
            by_pair = np.bincount(c_all[reason == 0], minlength=len(self.pairs))
            for i in np.flatnonzero(by_pair).tolist():
                self.accepted_by_pair[i] += int(by_pair[i])
        return BatchResult(reason)

    def _batch_valid(
        self,
        idx: np.ndarray,
        c_all: np.ndarray,
        t_all: np.ndarray,
        b_all: np.ndarray,
        a_all: np.ndarray,
        now_all: np.ndarray,
        reason: np.ndarray,
    ) -> None:
        c, t, b, a, now = c_all[idx], t_all[idx], b_all[idx], a_all[idx], now_all[idx]
        dup, o2 = self._batch_dedupe(c, t, b, a)
        reason[idx[dup]] = Reject.DUPLICATE

        # Candles: walk the accepted ticks sorted by (pair, time, arrival); every timeframe's
        # (pair, bucket) groups are contiguous runs of that one order.
        sel = o2[~dup[o2]]
        if not len(sel):
            return
        cs, ts, bs, as_, ns = c[sel], t[sel], b[sel], a[sel], now[sel]
        kept_any = np.zeros(len(sel), dtype=bool)
        grace, late = self.close_grace_ms, self.lateness_ms
        for tfi, length in enumerate(self._lens):
            bk = ts - ts % length
            close = bk + (length + grace)
            is_late = ns >= close
            drop = ns > close + late
            if drop.any():
                self.late_dropped[tfi] += int(drop.sum())
                for key in np.unique((cs[drop] << TIME_BITS) | bk[drop]).tolist():
                    self._repairs[((key >> TIME_BITS) * self._ntf + tfi, key & MAX_TIME_MS)] = None
                keep = ~drop
                kept_any |= keep
                self.late_corrected[tfi] += int((is_late & keep).sum())
                pos = np.flatnonzero(keep)
                if not len(pos):
                    continue
                self._merge_groups(tfi, cs[pos], bk[pos], ts[pos], bs[pos], as_[pos], is_late[pos], length + grace)
            else:
                kept_any[:] = True
                self.late_corrected[tfi] += int(is_late.sum())
                self._merge_groups(tfi, cs, bk, ts, bs, as_, is_late, length + grace)
        if not kept_any.all():
            reason[idx[sel[~kept_any]]] = Reject.TOO_LATE

    def _merge_groups(
        self,
        tfi: int,
        cs: np.ndarray,
        bk: np.ndarray,
        ts: np.ndarray,
        bs: np.ndarray,
        as_: np.ndarray,
        is_late: np.ndarray,
        close_offset: int,
    ) -> None:
        m = len(cs)
        brk = np.flatnonzero((cs[1:] != cs[:-1]) | (bk[1:] != bk[:-1])) + 1
        starts = np.concatenate(([0], brk))
        ends = np.concatenate((brk, [m])) - 1
        rows = zip(
            cs[starts].tolist(),
            bk[starts].tolist(),
            np.diff(np.concatenate((starts, [m]))).tolist(),
            ts[starts].tolist(),
            bs[starts].tolist(),
            as_[starts].tolist(),
            ts[ends].tolist(),
            bs[ends].tolist(),
            as_[ends].tolist(),
            np.maximum.reduceat(bs, starts).tolist(),
            np.minimum.reduceat(bs, starts).tolist(),
            np.maximum.reduceat(as_, starts).tolist(),
            np.minimum.reduceat(as_, starts).tolist(),
            np.logical_and.reduceat(is_late, starts).tolist(),
            strict=True,
        )
        ntf, open_, closed = self._ntf, self._open, self._closed
        for code, b, n, ft, fb, fa, lt, lb, la, hb, lob, ha, loa, all_late in rows:
            slot = code * ntf + tfi
            key = (slot, b)
            bars = open_[slot]
            bar = bars.get(b)
            if bar is not None:
                bar.merge(ft, fb, fa, lt, lb, la, hb, lob, ha, loa, n)
                self._dirty.add(key)
                continue
            bar = closed.get(key)
            if bar is not None:
                bar.merge(ft, fb, fa, lt, lb, la, hb, lob, ha, loa, n)
                self._corrected[key] = bar
                continue
            bar = _Bar(b, ft, lt, fb, hb, lob, lb, fa, ha, loa, la, n)
            c = b + close_offset
            if all_late:  # the bucket had closed empty before its first tick came
                closed[key] = bar
                self._corrected[key] = bar
                self._next_evict = min(self._next_evict, c + self.lateness_ms)
            else:
                bars[b] = bar
                self._dirty.add(key)
                if c < self._next_close:
                    self._next_close = c

    def _batch_dedupe(
        self, c: np.ndarray, t: np.ndarray, b: np.ndarray, a: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Duplicate mask (arrival order) and the (pair, time, arrival) sort order."""
        self._fold_pending()
        m = len(t)
        maxt = np.array(self._maxt, dtype=np.int64)
        # Newest time seen for the pair before each tick: a per-pair running max in arrival
        # order (stable sort by pair; the offset makes one accumulate restart per pair).
        o1 = np.argsort(c, kind="stable")
        c1 = c[o1]
        off = c1 << (TIME_BITS + 1)
        run = np.maximum.accumulate(t[o1] + off) - off
        first = np.empty(m, dtype=bool)
        first[0] = True
        first[1:] = c1[1:] != c1[:-1]
        prev = np.empty(m, dtype=np.int64)
        prev[0] = 0
        prev[1:] = run[:-1]
        prev = np.where(first, maxt[c1], np.maximum(prev, maxt[c1]))
        mprev = np.empty(m, dtype=np.int64)
        mprev[o1] = prev
        recent = t >= mprev - self.dedupe_window_ms

        key = (c << TIME_BITS) | t
        o2 = np.lexsort((t, c))
        k2 = key[o2]
        seen = np.zeros(m, dtype=bool)
        same = k2[1:] == k2[:-1]
        if same.any():
            # Same pair and millisecond: order those by (key, bid, ask, arrival); a tick equal
            # to its predecessor there repeats an earlier one.
            near = np.zeros(m, dtype=bool)
            near[1:] |= same
            near[:-1] |= same
            ci = o2[near]
            s = ci[np.lexsort((ci, a[ci], b[ci], key[ci]))]
            eq = (key[s][1:] == key[s][:-1]) & (b[s][1:] == b[s][:-1]) & (a[s][1:] == a[s][:-1])
            seen[s[1:][eq]] = True
        if len(self._dk):
            cand = np.flatnonzero((t <= maxt[c]) & recent & ~seen)
            if len(cand):
                seen[cand[self._in_state(key[cand], b[cand], a[cand])]] = True
        dup = seen & recent

        # Remember the new keys (sorted by key already in o2 order) and the newest times.
        new = o2[~seen[o2]]
        ends = np.flatnonzero(np.concatenate((c1[1:] != c1[:-1], [True])))
        for code, newest in zip(c1[ends].tolist(), run[ends].tolist(), strict=True):
            if newest > self._maxt[code]:
                self._maxt[code] = newest
        self._store_keys(key[new], b[new], a[new])
        return dup, o2

    def _in_state(self, k: np.ndarray, b: np.ndarray, a: np.ndarray) -> np.ndarray:
        lo = np.searchsorted(self._dk, k, "left")
        hi = np.searchsorted(self._dk, k, "right")
        cnt = hi - lo
        hit = np.zeros(len(k), dtype=bool)
        one = np.flatnonzero(cnt == 1)
        j = lo[one]
        hit[one] = (self._db[j] == b[one]) & (self._da[j] == a[one])
        for i in np.flatnonzero(cnt > 1).tolist():
            lo_i, hi_i = int(lo[i]), int(hi[i])
            hit[i] = bool(((self._db[lo_i:hi_i] == b[i]) & (self._da[lo_i:hi_i] == a[i])).any())
        return hit

    def _seen(self, code: int, t: int, bid: float, ask: float) -> bool:
        if (code, t, bid, ask) in self._pend:
            return True
        if not len(self._dk):
            return False
        k = (code << TIME_BITS) | t
        lo = int(self._dk.searchsorted(k, "left"))
        hi = int(self._dk.searchsorted(k, "right"))
        return any(self._db[j] == bid and self._da[j] == ask for j in range(lo, hi))

    def _fold_pending(self) -> None:
        if not self._pend:
            return
        c, t, b, a = (np.array(x) for x in zip(*self._pend, strict=True))
        self._pend = set()
        self._add_keys(c, t, b, a)

    def _add_keys(self, c: np.ndarray, t: np.ndarray, b: np.ndarray, a: np.ndarray) -> None:
        """Insert (pair code, time, bid, ask) keys given in any order."""
        k = (c.astype(np.int64) << TIME_BITS) | t.astype(np.int64)
        o = np.argsort(k, kind="stable")
        self._store_keys(k[o], b[o].astype(np.float64), a[o].astype(np.float64))

    def _store_keys(self, k: np.ndarray, b: np.ndarray, a: np.ndarray) -> None:
        """Insert sorted keys and prune those no tick can match any more."""
        if len(k):
            pos = np.searchsorted(self._dk, k, "right")
            self._dk = np.insert(self._dk, pos, k)
            self._db = np.insert(self._db, pos, b)
            self._da = np.insert(self._da, pos, a)
        if len(self._dk):
            floor = np.array(self._maxt, dtype=np.int64) - self.dedupe_window_ms
            keep = (self._dk & MAX_TIME_MS) >= floor[self._dk >> TIME_BITS]
            if not keep.all():
                self._dk, self._db, self._da = self._dk[keep], self._db[keep], self._da[keep]

    # ------------------------------------------------------------------ outputs
    def _candle(self, slot: int, bar: _Bar, complete: bool) -> Candle:
        ntf = self._ntf
        return Candle(
            self.pairs[slot // ntf],
            self.timeframes[slot % ntf],
            bar.bucket,
            bar.bo,
            bar.bh,
            bar.bl,
            bar.bc,
            bar.ao,
            bar.ah,
            bar.al,
            bar.ac,
            bar.n,
            complete,
            "stream",
            bar.open_ms,
            bar.close_ms,
        )

    def take_dirty(self) -> list[Candle]:
        """Forming candles changed since the last call (complete=False), in key order."""
        if not self._dirty:
            return []
        out = []
        for slot, b in sorted(self._dirty):
            bar = self._open[slot].get(b)
            if bar is not None:
                out.append(self._candle(slot, bar, False))
        self._dirty = set()
        return out

    def open_candles(self) -> list[Candle]:
        """Every forming candle, whether changed or not (shutdown, tests)."""
        return [self._candle(s, bars[b], False) for s, bars in enumerate(self._open) for b in sorted(bars)]

    @property
    def has_events(self) -> bool:
        return bool(self._events or self._corrected or self._repairs)

    def drain_events(self) -> list[Event]:
        """Closes in the order they happened, then corrections (current state, one per bucket),
        then repairs (one per bucket)."""
        out: list[Event] = self._events
        self._events = []
        if self._corrected:
            for (slot, _), bar in sorted(self._corrected.items(), key=lambda kv: kv[0]):
                out.append(CandleCorrected(self._candle(slot, bar, bar.complete)))
            self._corrected = {}
        if self._repairs:
            for slot, b in sorted(self._repairs):
                out.append(RepairNeeded(self.pairs[slot // self._ntf], self.timeframes[slot % self._ntf], b))
            self._repairs = {}
        return out

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
        grace = self.close_grace_ms
        for candles, is_open in ((open_candles, True), (closed_candles, False)):
            for cd in candles:
                code, tfi = self.pair_codes.get(cd.pair), self._tf_index.get(cd.timeframe)
                if code is None or tfi is None:
                    continue
                slot = code * self._ntf + tfi
                b = cd.bucket_ms
                bar = _Bar(
                    b,
                    b if cd.open_ms is None else cd.open_ms,
                    b if cd.close_ms is None else cd.close_ms,
                    cd.bid_open,
                    cd.bid_high,
                    cd.bid_low,
                    cd.bid_close,
                    cd.ask_open,
                    cd.ask_high,
                    cd.ask_low,
                    cd.ask_close,
                    cd.ticks,
                    complete=True if is_open else cd.complete,
                )
                c = b + self._lens[tfi] + grace
                if is_open:
                    self._open[slot][b] = bar
                    self._next_close = min(self._next_close, c)
                else:
                    self._closed[(slot, b)] = bar
                    self._next_evict = min(self._next_evict, c + self.lateness_ms)
                taken += 1
        self._seed_keys(last_ticks if isinstance(last_ticks, RecentTicks) else RecentTicks.of(last_ticks))
        return taken

    def _seed_keys(self, rt: RecentTicks) -> None:
        """Put stored ticks into the duplicate filter, columnwise (no Python object per tick)."""
        lut = np.array([self.pair_codes.get(p, -1) for p in rt.pairs] or [-1], dtype=np.int64)
        codes = lut[rt.pair_index] if len(rt) else np.empty(0, np.int64)
        known = codes >= 0
        codes, t = codes[known], rt.time_ms[known].astype(np.int64)
        if not len(codes):
            return
        newest = np.full(len(self.pairs), -_NEVER, dtype=np.int64)
        np.maximum.at(newest, codes, t)
        self._maxt = [max(m, int(n)) for m, n in zip(self._maxt, newest.tolist(), strict=True)]
        self._add_keys(codes, t, rt.bid[known], rt.ask[known])

    # ------------------------------------------------------------------ counters
    def stats(self) -> AggregatorStats:
        return AggregatorStats(
            received=self.received,
            accepted=self.accepted,
            rejected={r.label: self.rejected[r] for r in Reject},
            late_corrected=dict(zip(self.timeframes, self.late_corrected, strict=True)),
            late_dropped=dict(zip(self.timeframes, self.late_dropped, strict=True)),
            accepted_by_pair=dict(zip(self.pairs, self.accepted_by_pair, strict=True)),
            open_candles=sum(len(b) for b in self._open),
            dedupe_keys=len(self._dk) + len(self._pend),
        )
