"""The consumer thread: stream updates from the queue into the pipeline, in the library's order.

The Lightstreamer listeners only append to one deque (updates, lost-update notices and stream
state markers, in the order the library saw them); this thread drains it in batches into
validation -> aggregator -> writer, moves the market clock, and hands every update and marker
to the `GapTracker`, whose flags are booked before anything later in the queue can close the
buckets they concern.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import deque
from collections.abc import Callable

import numpy as np

from .gaps import GapClosed, GapTracker
from .ig_stream import LostUpdates, RawUpdate
from .metrics import Metrics
from .models import CoverageMark, Flag
from .pipeline import Pipeline
from .repairs import RepairBook
from .vocabulary import UpdateLoss

log = logging.getLogger("collector.daemon")

DRAIN_MAX = 50_000  # updates per batch: bounds how long a marker behind a backlog waits


@dataclasses.dataclass(frozen=True, slots=True)
class Marker:
    """A stream state change, queued in order with the updates around it."""

    up: bool
    at_ms: int  # clock time the library reported it


QueueItem = RawUpdate | Marker | LostUpdates


class Consumer:
    """Drains stream updates into the pipeline on one thread and acts on the gaps it sees."""

    def __init__(
        self,
        pipeline: Pipeline,
        gaps: GapTracker,
        book: RepairBook,
        *,
        metrics: Metrics,
        now_ms: Callable[[], int],
        write_coverage: Callable[[CoverageMark], None],
        wake_repairs: Callable[[], None],
        stopping: threading.Event,
    ) -> None:
        """`stopping` is the daemon's: a stream that goes down while it is set was stopped by
        us, not lost (its coverage ends `stopped`, not `outage`)."""
        self.pipeline, self.gaps, self.book, self.metrics = pipeline, gaps, book, metrics
        self.now_ms, self.write_coverage, self.wake_repairs = now_ms, write_coverage, wake_repairs
        self.stopping = stopping
        self.updates: deque[QueueItem] = deque()
        self.last_arrival_ms = 0  # clock time of the newest accepted update (the stale watchdog's)
        self.received = 0
        # Totals written by this thread only; the metrics sync reads them and adds the difference.
        self.received_by_pair: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="consumer", daemon=True)
        # Buckets of updates dropped at the queue bound, by the library's thread; a set of keys,
        # so an overload of any length costs memory bounded by the buckets it spans.
        self._overflowed: set[tuple[str, str, int]] = set()
        self._overflow_lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def mark(self, up: bool) -> None:
        """A stream state change, queued behind the updates that came before it."""
        self.updates.append(Marker(up=up, at_ms=self.now_ms()))

    def overflow(self, r: RawUpdate) -> None:
        """The consumer fell behind the bound: the tick is lost, its buckets must be repaired.
        Runs on the library's thread: note the buckets only; the consumer flags them."""
        self.metrics.updates_lost.labels(UpdateLoss.QUEUE_FULL).inc()
        keys = self.gaps.overflow_buckets(r.pair, r.utm)
        if keys:
            with self._overflow_lock:
                self._overflowed.update(keys)

    def _flag(self, flags: list[Flag]) -> int:
        n = self.book.flag(flags)
        self.wake_repairs()
        return n

    def _flag_overflowed(self) -> None:
        """Before any bucket can close in this drain: its lost updates are flagged first."""
        if not self._overflowed:
            return
        with self._overflow_lock:
            keys, self._overflowed = self._overflowed, set()
        self._flag(self.gaps.overflow_flags(keys))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                n = self.drain()
                self.pipeline.tick(self.now_ms())
            except Exception:  # a bug must not silently stop candle building; log and go on
                log.exception("consumer failed on a batch; continuing")
                n = 0
            if n == 0:
                self._stop.wait(0.02)
        self.drain()
        self.pipeline.tick(self.now_ms(), force_forming=True)

    def drain(self) -> int:
        self._flag_overflowed()
        dq, gaps = self.updates, self.gaps
        pairs: list[str] = []
        bids: list[str | None] = []
        ofrs: list[str | None] = []
        utms: list[str | None] = []
        recv: list[int] = []
        snaps: list[int] = []  # positions in this batch of snapshot updates
        n = 0
        while dq and n < DRAIN_MAX:
            item = dq.popleft()
            if isinstance(item, Marker | LostUpdates):
                self._feed(pairs, bids, ofrs, utms, recv, snaps)
                pairs, bids, ofrs, utms, recv, snaps = [], [], [], [], [], []
                if isinstance(item, Marker):
                    self._on_marker(item)
                else:
                    self._on_lost(item)
                continue
            n += 1
            if gaps.awaiting_first and not item.snapshot:
                closed = gaps.live_tick(item.utm, self.now_ms())
                if closed is not None:
                    self._on_gap_closed(closed)
            if item.snapshot:
                snaps.append(len(pairs))
            pairs.append(item.pair)
            bids.append(item.bid)
            ofrs.append(item.ofr)
            utms.append(item.utm)
            recv.append(item.received_ms)
            self.received_by_pair[item.pair] = self.received_by_pair.get(item.pair, 0) + 1
        self._feed(pairs, bids, ofrs, utms, recv, snaps)
        self.received += n
        self.metrics.queue_depth.set(len(dq))
        return n

    def _feed(
        self,
        pairs: list[str],
        bids: list[str | None],
        ofrs: list[str | None],
        utms: list[str | None],
        recv: list[int],
        snaps: list[int],
    ) -> None:
        if not pairs:
            return
        try:
            res = self.pipeline.feed_batch(pairs, bids, ofrs, utms, np.asarray(recv, dtype=np.int64))
        except Exception:
            # These updates are out of the queue and not in the candles: their buckets are short
            # of them, so flag them before anything else closes, and go on with the next item
            # (a stream marker behind them must still be seen).
            log.exception("consumer failed on a batch of updates; their buckets will be repaired")
            n = self._flag(self.gaps.failed_batch(pairs, utms))
            log.warning("flagged the failed batch's buckets", extra={"buckets": n, "updates": len(pairs)})
            return
        ok = res.reason == 0
        if ok.any():
            self.last_arrival_ms = max(self.last_arrival_ms, recv[-1])
            fresh_snaps = [i for i in snaps if ok[i]]
            if fresh_snaps:
                self._flag(self.gaps.snapshot_flags(pairs, utms, fresh_snaps))
            self.gaps.accepted(pairs, utms, np.flatnonzero(ok).tolist())

    def _on_marker(self, m: Marker) -> None:
        if m.up:
            self.gaps.stream_up()
            return
        mark = self.gaps.stream_down(m.at_ms, stopping=self.stopping.is_set())
        if mark is not None:
            self.write_coverage(mark)
            log.info("stream down: buckets from here on will be repaired from REST")

    def _on_lost(self, lost: LostUpdates) -> None:
        flags = self.gaps.lost(lost.pair, lost.at_ms)
        if flags is None:
            return
        self.metrics.updates_lost.labels(UpdateLoss.SERVER_DROPPED).inc(lost.count)
        log.warning(
            "the server dropped updates; their buckets will be repaired",
            extra={"pair": lost.pair, "lost": lost.count},
        )
        self._flag(flags)

    def _on_gap_closed(self, g: GapClosed) -> None:
        self.write_coverage(g.coverage)
        if g.clipped_from_ms is not None:
            log.warning(
                "gap older than COLLECTOR_BACKFILL_MAX_AGE_S not repaired automatically; "
                "use `ig-collector backfill --since`",
                extra={"gap_start": g.clipped_from_ms, "repair_from": g.start_ms},
            )
        if g.end_ms < g.start_ms:
            return
        self._flag(list(g.flags))
        log.info(
            "gap flagged for REST repair", extra={"from_ms": g.start_ms, "to_ms": g.end_ms, "buckets": len(g.flags)}
        )

    def last_tick_ms(self) -> int | None:
        return self.gaps.last_tick_ms()
