"""The duplicate filter: a re-subscription snapshot repeats the last tick(s), and a repeat must
not be counted twice.

A tick whose (pair, time, bid, ask) was already seen is a duplicate while it is recent:
precisely, when its time is within `window_ms` of the newest time seen for the pair before it.
Keys older than that can never match again and are pruned, which bounds memory whatever the
tick rate. The caller decides what "seen" means (the aggregator: passed the value and future
checks, so a too-late tick that is repeated is then a duplicate, not a second repair).

Two stores, because the two paths want different things: the per-tick path adds one key per
call, which a Python set does in constant time, and the batch path looks up thousands at once,
which sorted numpy columns do in one `searchsorted`. The set is folded into the columns when it
grows large or a batch comes, so a key lives in one store or the other.
"""

from __future__ import annotations

import numpy as np

from .validation import MAX_TIME_MS, TIME_BITS

_NO_TIME = -(1 << 62)  # newest time of a pair not seen yet
_FOLD_AT = 8192  # keys the set holds before they are folded into the columns


class DuplicateFilter:
    """Keys are `pair code << TIME_BITS | time` (int64), with bid and ask in columns beside them."""

    def __init__(self, n_pairs: int, window_ms: int) -> None:
        self.window_ms = window_ms
        self._newest: list[int] = [_NO_TIME] * n_pairs  # newest time seen, by pair code
        self._keys = np.empty(0, np.int64)  # sorted
        self._bids = np.empty(0, np.float64)
        self._asks = np.empty(0, np.float64)
        self._pending: set[tuple[int, int, float, float]] = set()  # the per-tick path's keys

    def __len__(self) -> int:
        return len(self._keys) + len(self._pending)

    # ------------------------------------------------------------------ per tick
    def admit(self, code: int, time_ms: int, bid: float, ask: float) -> bool:
        """False for a recent repeat; else True, and the tick is remembered."""
        newest = self._newest[code]
        if time_ms <= newest:  # only a time not newer than the pair's newest can repeat a key
            if time_ms >= newest - self.window_ms and self._seen(code, time_ms, bid, ask):
                return False
        else:
            self._newest[code] = time_ms
        pending = self._pending
        pending.add((code, time_ms, bid, ask))
        if len(pending) >= _FOLD_AT:
            self._fold_pending()
        return True

    def _seen(self, code: int, time_ms: int, bid: float, ask: float) -> bool:
        if (code, time_ms, bid, ask) in self._pending:
            return True
        if not len(self._keys):
            return False
        k = (code << TIME_BITS) | time_ms
        lo = int(self._keys.searchsorted(k, "left"))
        hi = int(self._keys.searchsorted(k, "right"))
        return any(self._bids[j] == bid and self._asks[j] == ask for j in range(lo, hi))

    # ------------------------------------------------------------------ batch
    def admit_batch(
        self, codes: np.ndarray, times: np.ndarray, bids: np.ndarray, asks: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ticks in arrival order, as many `admit` calls would see them: the duplicate mask, and
        the (pair, time, arrival) order the lookup sorted them into (the caller's candle fold
        needs that very order, so it is handed on rather than sorted twice)."""
        self._fold_pending()
        m = len(times)
        newest = np.array(self._newest, dtype=np.int64)
        # Newest time seen for the pair before each tick: a per-pair running max in arrival
        # order (stable sort by pair; the offset makes one accumulate restart per pair).
        by_pair = np.argsort(codes, kind="stable")
        pair_sorted = codes[by_pair]
        offset = pair_sorted << (TIME_BITS + 1)
        running = np.maximum.accumulate(times[by_pair] + offset) - offset
        first_of_pair = np.empty(m, dtype=bool)
        first_of_pair[0] = True
        first_of_pair[1:] = pair_sorted[1:] != pair_sorted[:-1]
        before = np.empty(m, dtype=np.int64)
        before[0] = 0
        before[1:] = running[:-1]
        before = np.where(first_of_pair, newest[pair_sorted], np.maximum(before, newest[pair_sorted]))
        newest_before = np.empty(m, dtype=np.int64)
        newest_before[by_pair] = before
        recent = times >= newest_before - self.window_ms

        keys = (codes << TIME_BITS) | times
        order = np.lexsort((times, codes))
        sorted_keys = keys[order]
        seen = np.zeros(m, dtype=bool)
        same = sorted_keys[1:] == sorted_keys[:-1]
        if same.any():
            # Same pair and millisecond: order those by (key, bid, ask, arrival); a tick equal
            # to its predecessor there repeats an earlier one.
            near = np.zeros(m, dtype=bool)
            near[1:] |= same
            near[:-1] |= same
            ci = order[near]
            s = ci[np.lexsort((ci, asks[ci], bids[ci], keys[ci]))]
            eq = (keys[s][1:] == keys[s][:-1]) & (bids[s][1:] == bids[s][:-1]) & (asks[s][1:] == asks[s][:-1])
            seen[s[1:][eq]] = True
        if len(self._keys):
            candidates = np.flatnonzero((times <= newest[codes]) & recent & ~seen)
            if len(candidates):
                found = self._in_columns(keys[candidates], bids[candidates], asks[candidates])
                seen[candidates[found]] = True
        duplicate = seen & recent

        # Remember the new keys (in `order`, so already sorted) and the newest times.
        new = order[~seen[order]]
        last_of_pair = np.flatnonzero(np.concatenate((pair_sorted[1:] != pair_sorted[:-1], [True])))
        for code, t in zip(pair_sorted[last_of_pair].tolist(), running[last_of_pair].tolist(), strict=True):
            if t > self._newest[code]:
                self._newest[code] = t
        self._insert_sorted(keys[new], bids[new], asks[new])
        return duplicate, order

    def _in_columns(self, keys: np.ndarray, bids: np.ndarray, asks: np.ndarray) -> np.ndarray:
        lo = np.searchsorted(self._keys, keys, "left")
        hi = np.searchsorted(self._keys, keys, "right")
        count = hi - lo
        hit = np.zeros(len(keys), dtype=bool)
        one = np.flatnonzero(count == 1)
        j = lo[one]
        hit[one] = (self._bids[j] == bids[one]) & (self._asks[j] == asks[one])
        for i in np.flatnonzero(count > 1).tolist():  # one millisecond, several quotes: rare
            lo_i, hi_i = int(lo[i]), int(hi[i])
            hit[i] = bool(((self._bids[lo_i:hi_i] == bids[i]) & (self._asks[lo_i:hi_i] == asks[i])).any())
        return hit

    # ------------------------------------------------------------------ restart
    def seed(self, codes: np.ndarray, times: np.ndarray, bids: np.ndarray, asks: np.ndarray) -> None:
        """Remember stored ticks (any order), columnwise: no Python object per tick."""
        if not len(codes):
            return
        codes, times = codes.astype(np.int64), times.astype(np.int64)
        newest = np.full(len(self._newest), _NO_TIME, dtype=np.int64)
        np.maximum.at(newest, codes, times)
        self._newest = [max(m, int(n)) for m, n in zip(self._newest, newest.tolist(), strict=True)]
        self._insert_unsorted(codes, times, bids, asks)

    # ------------------------------------------------------------------ the columns
    def _fold_pending(self) -> None:
        if not self._pending:
            return
        codes, times, bids, asks = (np.array(x) for x in zip(*self._pending, strict=True))
        self._pending = set()
        self._insert_unsorted(codes, times, bids, asks)

    def _insert_unsorted(self, codes: np.ndarray, times: np.ndarray, bids: np.ndarray, asks: np.ndarray) -> None:
        keys = (codes.astype(np.int64) << TIME_BITS) | times.astype(np.int64)
        o = np.argsort(keys, kind="stable")
        self._insert_sorted(keys[o], bids[o].astype(np.float64), asks[o].astype(np.float64))

    def _insert_sorted(self, keys: np.ndarray, bids: np.ndarray, asks: np.ndarray) -> None:
        """Insert sorted keys and prune those no tick can match any more."""
        if len(keys):
            pos = np.searchsorted(self._keys, keys, "right")
            self._keys = np.insert(self._keys, pos, keys)
            self._bids = np.insert(self._bids, pos, bids)
            self._asks = np.insert(self._asks, pos, asks)
        if len(self._keys):
            floor = np.array(self._newest, dtype=np.int64) - self.window_ms
            keep = (self._keys & MAX_TIME_MS) >= floor[self._keys >> TIME_BITS]
            if not keep.all():
                self._keys, self._bids, self._asks = self._keys[keep], self._bids[keep], self._asks[keep]
