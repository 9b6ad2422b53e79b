"""The write buffer: what producers submitted and the database has not yet confirmed.

Producers (the pipeline on the consumer thread, the supervisor, the repair worker) submit from
any thread under one lock and never wait for the database; one flusher takes everything as a
`Batch` and either confirms it or puts it back. Kept free of psycopg so every rule here (the
bound and its drops, coalescing, put-back) is tested in memory.

* Ticks are kept as numpy column chunks, bounded at `max_ticks` rows: beyond it the oldest rows
  are dropped, counted and noted as tick gaps (the candles stay exact: their state is the
  aggregator's, and the candle map is bounded by the buckets).
* Candles are keyed by bucket, so a flush writes each bucket's newest state once, however many
  changes arrived while a write was in flight; a forming state never displaces a final one.
* Flags are keyed by bucket too; the newest reason wins, except that a too-late tick's (which
  re-opens even a bucket REST replaced) is never displaced before it is written.

A flush whose COMMIT outcome is unknown (the connection died during or after COMMIT) puts its
rows back tagged with the transaction's id. If such rows are then dropped at the bound, their
drop is undecided until the writer asks the server how that transaction ended: committed means
the rows are stored (nothing was lost, nothing to re-send), aborted means they were dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ..aggregator import CandleClosed, CandleCorrected, Event, RepairNeeded
from ..models import Candle, CoverageMark, Flag
from ..vocabulary import STREAM_KINDS, CandleKind, FlagReason, TickGapReason

log = logging.getLogger("collector.store")

CandleKey = tuple[str, str, int]  # (pair, timeframe, bucket_ms)
GapKey = tuple[str, str]  # (pair, reason)
SMALL_SEAL_ROWS = 4096  # per-tick submissions are sealed into a chunk at this many rows


@dataclass
class Chunk:
    """Tick rows as columns; `xids` are transactions that may already have stored them."""

    codes: np.ndarray  # int16 index into pairs
    times: np.ndarray  # int64 ms
    bids: np.ndarray
    asks: np.ndarray
    received: np.ndarray  # int64 ms, -1 = NULL
    submitted: float  # monotonic time of submission
    xids: frozenset[int] = frozenset()

    def __len__(self) -> int:
        return len(self.times)

    def __getitem__(self, s: slice) -> Chunk:
        return Chunk(self.codes[s], self.times[s], self.bids[s], self.asks[s], self.received[s], self.submitted,
                     self.xids)  # fmt: skip


def split_rows(chunks: Iterable[Chunk], n: int) -> tuple[list[Chunk], deque[Chunk]]:
    """The first `n` rows and the rest, splitting a chunk where the boundary falls."""
    head: list[Chunk] = []
    rest: deque[Chunk] = deque()
    for ch in chunks:
        if n <= 0:
            rest.append(ch)
        elif len(ch) <= n:
            head.append(ch)
            n -= len(ch)
        else:
            head.append(ch[:n])
            rest.append(ch[n:])
            n = 0
    return head, rest


def tag_rows(chunks: Iterable[Chunk], maybe: MaybeCommitted) -> deque[Chunk]:
    """The chunks with their first `maybe.rows` rows marked as possibly stored by `maybe.xid`."""
    head, rest = split_rows(chunks, maybe.rows)
    rest.extendleft(reversed([replace(c, xids=c.xids | {maybe.xid}) for c in head]))
    return rest


def settle_rows(chunks: Iterable[Chunk], committed: Mapping[int, bool | None]) -> tuple[deque[Chunk], int]:
    """Without the rows a committed transaction stored (and forgetting aborted candidates);
    returns the chunks left and the rows taken out."""
    keep: deque[Chunk] = deque()
    stored = 0
    for ch in chunks:
        if any(committed.get(x) for x in ch.xids):
            stored += len(ch)
        else:
            keep.append(replace(ch, xids=frozenset(x for x in ch.xids if committed.get(x, True) is not False)))
    return keep, stored


def gaps_of(pairs: Sequence[str], chunk: Chunk, reason: str) -> dict[GapKey, list[int]]:
    """Per pair, the interval [first, last] and count of the rows in `chunk`."""
    out = {}
    for code in np.unique(chunk.codes).tolist():
        t = chunk.times[chunk.codes == code]
        out[(pairs[code], reason)] = [int(t.min()), int(t.max()), len(t)]
    return out


def merge_gaps(into: dict[GapKey, list[int]], more: Mapping[GapKey, list[int]]) -> None:
    """Coalesced per (pair, reason), so the map stays small under any overload."""
    for key, (lo, hi, n) in more.items():
        have = into.get(key)
        into[key] = [lo, hi, n] if have is None else [min(have[0], lo), max(have[1], hi), have[2] + n]


def later(old: tuple[Candle, str] | None, new: tuple[Candle, str]) -> tuple[Candle, str]:
    """The newer state wins, except that a forming row never displaces a final one."""
    if old is not None and old[0].complete and not new[0].complete:
        return old
    if old is not None and old[1] == CandleKind.CLOSED and new[1] == CandleKind.CORRECTION:
        return new[0], CandleKind.CLOSED  # still the bucket's first final row: count it as closed
    return new


def keep_flag(repairs: dict[CandleKey, str], key: CandleKey, reason: str) -> None:
    if repairs.get(key) != FlagReason.LATE_TICK:
        repairs[key] = reason


def split_events(events: Iterable[Event]) -> tuple[list[Candle], list[Candle], list[RepairNeeded]]:
    """The aggregator's events as (closed candles, corrected candles, repair flags)."""
    closed, corrected, repairs = [], [], []
    for e in events:
        if isinstance(e, CandleClosed):
            closed.append(e.candle)
        elif isinstance(e, CandleCorrected):
            corrected.append(e.candle)
        else:
            repairs.append(e)
    return closed, corrected, repairs


@dataclass
class Batch:
    """Everything one flush writes (and what a failed one puts back)."""

    chunks: deque[Chunk] = field(default_factory=deque)
    candles: dict[CandleKey, tuple[Candle, str]] = field(default_factory=dict)
    notify: dict[CandleKey, None] = field(default_factory=dict)
    repairs: dict[CandleKey, str] = field(default_factory=dict)  # flags: key -> reason
    coverage: list[CoverageMark] = field(default_factory=list)
    tick_gaps: dict[GapKey, list[int]] = field(default_factory=dict)  # key -> [from_ms, to_ms, rows]
    first_submit: float | None = None

    def empty(self) -> bool:
        return not (self.chunks or self.candles or self.notify or self.repairs or self.coverage or self.tick_gaps)

    @property
    def rows(self) -> int:
        return sum(len(c) for c in self.chunks)

    def absorb(self, newer: Batch) -> None:
        """Append what was submitted after this batch was taken, newer states winning."""
        self.chunks.extend(newer.chunks)
        for key, val in newer.candles.items():
            self.candles[key] = later(self.candles.get(key), val)
        self.notify.update(newer.notify)
        for key, reason in newer.repairs.items():
            keep_flag(self.repairs, key, reason)
        self.coverage.extend(newer.coverage)
        merge_gaps(self.tick_gaps, newer.tick_gaps)
        if self.first_submit is None:
            self.first_submit = newer.first_submit


@dataclass
class _UndecidedDrop:
    rows: int
    gaps: dict[GapKey, list[int]] = field(default_factory=dict)


class Drops:
    """Tick rows dropped at the bound: counted at once, or, when a transaction whose COMMIT
    outcome is unknown may have stored them, held per candidate xids until that is settled.
    The buffer's lock guards it."""

    def __init__(self, max_ticks: int) -> None:
        self.max_ticks = max_ticks  # for the log line
        self.counted = 0
        self._undecided: dict[frozenset[int], _UndecidedDrop] = {}
        self._since_log = 0
        self._last_log = float("-inf")

    def __bool__(self) -> bool:
        return bool(self._undecided)

    def xids(self) -> set[int]:
        return {x for key in self._undecided for x in key}

    def drop(self, xids: frozenset[int], rows: int, gaps: Mapping[GapKey, list[int]],
             tick_gaps: dict[GapKey, list[int]]) -> None:  # fmt: skip
        """Count the rows (noting their gaps in `tick_gaps`) unless a transaction may hold them."""
        if xids:
            held = self._undecided.setdefault(xids, _UndecidedDrop(0))
            held.rows += rows
            merge_gaps(held.gaps, gaps)
        else:
            self.counted += rows
            self._since_log += rows
            merge_gaps(tick_gaps, gaps)

    def settle(self, committed: Mapping[int, bool | None], tick_gaps: dict[GapKey, list[int]]) -> None:
        """Forget drops a committed transaction stored; count those no candidate stored."""
        for key in list(self._undecided):
            left = frozenset(x for x in key if committed.get(x, True) is not False)
            if left == key and not any(committed.get(x) for x in key):
                continue
            held = self._undecided.pop(key)
            if not any(committed.get(x) for x in key):
                self.drop(left, held.rows, held.gaps, tick_gaps)

    def log_if_due(self, now: float) -> None:
        """At most one warning per 10 s, however hard the bound is hit."""
        if self._since_log and now - self._last_log >= 10.0:
            log.warning(
                "write buffer full: dropped oldest tick rows (candles stay exact)",
                extra={"dropped": self._since_log, "dropped_total": self.counted, "buffer_max_ticks": self.max_ticks},
            )
            self._last_log = now
            self._since_log = 0


@dataclass(frozen=True)
class MaybeCommitted:
    """The transaction `xid` may have stored the `rows` rows that follow the known-committed ones."""

    xid: int
    rows: int
    started: object = None  # the transaction's start (a datetime), to tell it from a reissued id


class WriteBuffer:
    """Submissions from any thread, taken by one flusher at a time.

    `ticks_submitted` and `ticks_dropped` are plain counters (read without the lock); `depth`
    is the tick rows not yet confirmed (waiting or in flight). `wakeup` is set when something
    should be written soon: a candle, a flag, a coverage mark, or `eager_rows` waiting ticks.
    """

    def __init__(self, pairs: Sequence[str], *, max_ticks: int = 2_000_000, eager_rows: int = 50_000,
                 monotonic: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.pairs = tuple(pairs)
        self.max_ticks = max_ticks
        self.eager_rows = eager_rows
        self._mono = monotonic
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # signalled after every flush attempt
        self.wakeup = threading.Event()
        self._pending = Batch()
        self._small: list[tuple[int, int, float, float, int]] = []
        self._depth = 0
        self._inflight = 0  # rows of `_depth` taken by the running flush
        self._flushing = False
        self.drops = Drops(max_ticks)
        self.ticks_submitted = 0

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def ticks_dropped(self) -> int:
        return self.drops.counted

    # ------------------------------------------------------------------ submission (any thread)
    def submit_tick(self, code: int, time_ms: int, bid: float, ask: float, received_ms: int | None = None) -> None:
        """One accepted tick (the per-tick live path): appends a tuple, sealed in bulk later."""
        with self._lock:
            self._small.append((code, time_ms, bid, ask, -1 if received_ms is None else received_ms))
            self._depth += 1
            self.ticks_submitted += 1
            if self._pending.first_submit is None:
                self._pending.first_submit = self._mono()
            if len(self._small) >= SMALL_SEAL_ROWS:
                self._seal_small()
            if self._depth - self._inflight > self.max_ticks:
                self._enforce_bound()

    def submit_ticks(self, codes: np.ndarray, times: np.ndarray, bids: np.ndarray, asks: np.ndarray,
                     received_ms: int | np.ndarray | None = None) -> None:  # fmt: skip
        """Accepted ticks as columns (the batch path); copied, so the caller may reuse its arrays."""
        n = len(times)
        if not n:
            return
        rec = -1 if received_ms is None else received_ms
        chunk = Chunk(
            np.asarray(codes, dtype=np.int16).copy(), np.asarray(times, dtype=np.int64).copy(),
            np.asarray(bids, dtype=np.float64).copy(), np.asarray(asks, dtype=np.float64).copy(),
            np.broadcast_to(np.asarray(rec, dtype=np.int64), (n,)).copy(), self._mono(),
        )  # fmt: skip
        with self._lock:
            self._seal_small()
            self._pending.chunks.append(chunk)
            self._depth += n
            self.ticks_submitted += n
            if self._pending.first_submit is None:
                self._pending.first_submit = chunk.submitted
            if self._depth - self._inflight > self.max_ticks:
                self._enforce_bound()
            eager = self._depth - self._inflight >= self.eager_rows
        if eager:
            self.wakeup.set()

    def submit_candles(self, candles: Iterable[Candle], kind: str) -> None:
        """Forming rows, final rows ("closed": NOTIFY sent) or corrections, coalesced by bucket."""
        if kind not in STREAM_KINDS:
            raise ValueError(f"kind must be one of {tuple(map(str, STREAM_KINDS))}")
        with self._lock:
            p = self._pending
            for c in candles:
                key = (c.pair, c.timeframe, c.bucket_ms)
                p.candles[key] = later(p.candles.get(key), (c, kind))
                if kind == CandleKind.CLOSED:
                    p.notify[key] = None
            if p.first_submit is None:
                p.first_submit = self._mono()
        self.wakeup.set()

    def submit_flags(self, flags: Iterable[Flag | RepairNeeded]) -> None:
        """Committed with the candles submitted with or after them, so a partial candle is never
        on disk without its flag; keyed by bucket, so duplicates cost nothing."""
        with self._lock:
            for r in flags:
                keep_flag(self._pending.repairs, (r.pair, r.timeframe, r.bucket_ms), r.reason)
            if self._pending.first_submit is None:
                self._pending.first_submit = self._mono()
        self.wakeup.set()

    def submit_coverage(self, mark: CoverageMark) -> None:
        with self._lock:
            self._pending.coverage.append(mark)
        self.wakeup.set()

    def submit_events(self, events: Iterable[Event]) -> None:
        """The aggregator's events in order: a correction of a bucket closed in the same batch
        is the newer state."""
        closed, corrected, repairs = split_events(events)
        if closed:
            self.submit_candles(closed, CandleKind.CLOSED)
        if corrected:
            self.submit_candles(corrected, CandleKind.CORRECTION)
        if repairs:
            self.submit_flags(repairs)

    def unwritten_flags(self) -> tuple[list[Flag], list[CoverageMark]]:
        """What a stop could not commit and the next start could not re-derive."""
        with self._lock:
            flags = [Flag(p, tf, b, r) for (p, tf, b), r in self._pending.repairs.items()]
            return flags, list(self._pending.coverage)

    # ------------------------------------------------------------------ waiting
    def _busy(self) -> bool:
        return bool(self._small) or not self._pending.empty() or bool(self.drops)

    def has_pending(self) -> bool:
        with self._lock:
            return self._busy()

    def wait_below(self, depth: int, timeout: float | None = None) -> bool:
        """Block until at most `depth` tick rows wait (replay's backpressure)."""
        return self._wait(lambda: self._depth <= depth, timeout, poll=1.0)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until everything submitted so far is confirmed (a flusher must be running)."""
        return self._wait(lambda: not (self._busy() or self._flushing), timeout, poll=0.5, nudge=True)

    def _wait(self, done: Callable[[], bool], timeout: float | None, *, poll: float, nudge: bool = False) -> bool:
        deadline = None if timeout is None else self._mono() + timeout
        with self._changed:
            while not done():
                left = None if deadline is None else deadline - self._mono()
                if left is not None and left <= 0:
                    return False
                if nudge:
                    self.wakeup.set()
                self._changed.wait(poll if left is None else min(left, poll))
            return True

    # ------------------------------------------------------------------ the flusher's side
    def take(self) -> Batch | None:
        """Everything pending, as one batch in flight; None when there is nothing."""
        with self._lock:
            self._seal_small()
            batch = self._pending
            if batch.empty():
                return None
            # Under the lock: a submission after the swap sets it again, so it is never missed.
            self.wakeup.clear()
            self._pending = Batch()
            self._inflight = batch.rows
            self._flushing = True
        return batch

    def confirm(self, rows: int) -> None:
        """The batch in flight is committed; `rows` tick rows leave the buffer."""
        with self._changed:
            self._depth -= rows
            self._inflight = 0
            self._flushing = False
            self._changed.notify_all()

    def put_back(self, batch: Batch, *, committed_rows: int = 0, maybe: MaybeCommitted | None = None) -> None:
        """A flush failed: its first `committed_rows` rows are stored (they leave), the next
        `maybe.rows` may be (tagged with the xid); the rest goes back in front of newer data."""
        with self._changed:
            if committed_rows:
                _, batch.chunks = split_rows(batch.chunks, committed_rows)
                self._depth -= committed_rows
            if maybe is not None:
                batch.chunks = tag_rows(batch.chunks, maybe)
            self._inflight = 0
            self._seal_small()
            batch.absorb(self._pending)
            self._pending = batch
            if self._depth > self.max_ticks:
                self._enforce_bound()
            self._flushing = False
            self._changed.notify_all()

    def undecided_xids(self) -> set[int]:
        """Transactions whose outcome decides whether buffered or dropped rows are stored."""
        with self._lock:
            return self.drops.xids() | {x for c in self._pending.chunks for x in c.xids}

    def resolve(self, committed: Mapping[int, bool | None]) -> int:
        """Apply what the server said of each xid (True committed, False aborted or unknown to
        it, None still running): rows a committed one stored leave the buffer unsent, and their
        drops are forgotten; drops no candidate transaction stored are counted now. Returns the
        buffered rows found stored."""
        with self._changed:
            self._pending.chunks, stored = settle_rows(self._pending.chunks, committed)
            self._depth -= stored
            self.drops.settle(committed, self._pending.tick_gaps)
            self._changed.notify_all()
            return stored

    # ------------------------------------------------------------------ internals (lock held)
    def _seal_small(self) -> None:
        if not self._small:
            return
        c, t, b, a, r = (np.array(x) for x in zip(*self._small, strict=True))
        self._pending.chunks.append(
            Chunk(c.astype(np.int16), t.astype(np.int64), b.astype(np.float64), a.astype(np.float64),
                  r.astype(np.int64), self._pending.first_submit or self._mono())
        )  # fmt: skip
        self._small = []

    def _enforce_bound(self) -> None:
        """Drop the oldest tick rows beyond the bound."""
        self._seal_small()
        excess = self._depth - self._inflight - self.max_ticks
        chunks = self._pending.chunks
        while excess > 0 and chunks:
            head = chunks[0]
            n = min(len(head), excess)
            if n == len(head):
                chunks.popleft()
            else:
                chunks[0] = head[n:]
            # Rows the candles counted but `ticks` will not hold: noted per pair as an interval,
            # so the audit does not hold those buckets against the ticks table.
            gaps = gaps_of(self.pairs, head[:n], TickGapReason.BUFFER_FULL)
            self.drops.drop(head.xids, n, gaps, self._pending.tick_gaps)
            excess -= n
            self._depth -= n
        self.drops.log_if_due(self._mono())
