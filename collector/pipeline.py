"""Validation -> aggregator -> writer for a stream of raw updates, shared by replay and the live
daemon so both count, aggregate and store ticks in exactly the same way.

Called from one consumer thread. The market clock (`now_ms`: the update's receive time live,
or the ticks' own clock in replay when it is None) decides closes and lateness; a separate
monotonic clock (injected, `time.monotonic` by default) paces the hand-over of changed forming
candles at `forming_interval_s`. The interval is short (a reader sees a tick in its forming
candle within a write or two) because the writer coalesces by bucket: what changes while a
write is in flight goes in the next one, so there is never an upsert per tick, and replaying a
day of ticks in seconds still writes a forming row only per interval of wall time, not per
simulated second. Closes, corrections and repairs go to the writer as soon as they happen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .aggregator import Aggregator, BatchResult, Event
from .models import Candle
from .store import ResumeState
from .validation import Parsed, Reject, parse_columns, parse_raw
from .vocabulary import CandleKind

if TYPE_CHECKING:
    from .config import Settings


class TickSink(Protocol):
    """What the pipeline needs from a writer (collector.store.Writer implements it)."""

    def submit_tick(self, code: int, time_ms: int, bid: float, ask: float, received_ms: int | None = None) -> None: ...

    def submit_ticks(
        self,
        codes: np.ndarray,
        times: np.ndarray,
        bids: np.ndarray,
        asks: np.ndarray,
        received_ms: int | np.ndarray | None = None,
    ) -> None: ...

    def submit_candles(self, candles: Iterable[Candle], kind: str) -> None: ...

    def submit_events(self, events: Iterable[Event]) -> None: ...


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        writer: TickSink | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        aggregator: Aggregator | None = None,
        forming_interval_s: float | None = None,
        dedupe_window_ms: int | None = None,
    ) -> None:
        if aggregator is None:
            kw = {} if dedupe_window_ms is None else {"dedupe_window_ms": dedupe_window_ms}
            aggregator = Aggregator.from_settings(settings, **kw)
        self.aggregator = aggregator
        self.writer = writer
        self.clock = clock
        self.forming_interval_s = forming_interval_s if forming_interval_s is not None else settings.forming_interval_s
        self._next_forming = clock() + self.forming_interval_s
        self.forming_submitted = 0  # forming rows handed to the writer

    # ------------------------------------------------------------------ restart
    def resume(self, state: ResumeState) -> int:
        return self.aggregator.resume(state.open_candles, state.closed_candles, state.last_ticks)

    # ------------------------------------------------------------------ input
    def feed(
        self, pair: object, raw_bid: object, raw_ofr: object, raw_utm: object, received_ms: int | None = None
    ) -> Reject | None:
        """One Lightstreamer update (values as strings or None). Returns the reject reason or None."""
        parsed = parse_raw(pair, raw_bid, raw_ofr, raw_utm)
        ag = self.aggregator
        if not isinstance(parsed, Parsed):
            ag.count_reject(parsed)
            if received_ms is not None:
                ag.advance(received_ms)
            self._forward_events()
            return parsed
        r = ag.add(parsed.pair, parsed.time_ms, parsed.bid, parsed.ask, received_ms)
        if r is None and self.writer is not None:
            self.writer.submit_tick(ag.pair_codes[parsed.pair], parsed.time_ms, parsed.bid, parsed.ask, received_ms)
        if ag.has_events:
            self._forward_events()
        return r

    def feed_batch(
        self,
        pairs: Sequence[object],
        raw_bids: Sequence[object],
        raw_ofrs: Sequence[object],
        raw_utms: Sequence[object],
        received_ms: int | np.ndarray | None = None,
    ) -> BatchResult:
        """Many raw updates in arrival order (a queue drain, a replay chunk)."""
        ag = self.aggregator
        pb = parse_columns(pairs, raw_bids, raw_ofrs, raw_utms, ag.pair_codes)
        bad = pb.reason != 0
        if not bad.any():
            return self.feed_arrays(pb.codes, pb.times, pb.bids, pb.asks, received_ms, received_ms)
        # Unparseable rows are counted, and still move a receive-time clock, in their place.
        for code in np.unique(pb.reason[bad]).tolist():
            ag.count_reject(Reject(code), int((pb.reason == code).sum()))
        good = np.flatnonzero(~bad)
        if received_ms is None:
            res = self.feed_arrays(pb.codes[good], pb.times[good], pb.bids[good], pb.asks[good])
        else:
            rec = np.broadcast_to(np.asarray(received_ms, dtype=np.int64), bad.shape)
            clock = np.maximum.accumulate(rec)  # a bad row's receive time still moves the clock
            res = self.feed_arrays(pb.codes[good], pb.times[good], pb.bids[good], pb.asks[good], clock[good], rec[good])
            if len(rec):
                ag.advance(int(clock[-1]))
                self._forward_events()
        reason = pb.reason.copy()
        reason[good] = res.reason
        return BatchResult(reason)

    def feed_arrays(
        self,
        codes: np.ndarray,
        times: np.ndarray,
        bids: np.ndarray,
        asks: np.ndarray,
        now_ms: int | np.ndarray | None = None,
        received_ms: int | np.ndarray | None = None,
    ) -> BatchResult:
        """Typed columns; `now_ms` None = the ticks' own clock (replay)."""
        res = self.aggregator.add_batch(codes, times, bids, asks, now_ms)
        if self.writer is not None:
            ok = res.reason == 0
            if ok.any():
                rec = received_ms
                if isinstance(rec, np.ndarray) and rec.shape:
                    rec = rec[ok]
                if ok.all():
                    self.writer.submit_ticks(
                        np.asarray(codes), np.asarray(times), np.asarray(bids), np.asarray(asks), rec
                    )
                else:
                    self.writer.submit_ticks(
                        np.asarray(codes)[ok], np.asarray(times)[ok], np.asarray(bids)[ok], np.asarray(asks)[ok], rec
                    )
        self._forward_events()
        return res

    # ------------------------------------------------------------------ clock
    def tick(self, now_ms: int | None = None, *, force_forming: bool = False) -> None:
        """Advance the market clock (None: leave it), hand closes/corrections/repairs to the
        writer, and the changed forming candles when the forming interval has passed."""
        if now_ms is not None:
            self.aggregator.advance(now_ms)
        self._forward_events()
        mono = self.clock()
        if force_forming or mono >= self._next_forming:
            dirty = self.aggregator.take_dirty()
            if dirty and self.writer is not None:
                self.writer.submit_candles(dirty, CandleKind.FORMING)
                self.forming_submitted += len(dirty)
            self._next_forming = mono + self.forming_interval_s

    def finish(self, *, close_all: bool = False) -> None:
        """End of input: write the forming candles as they are, or close them all."""
        if close_all:
            self.aggregator.close_all()
        self.tick(force_forming=True)

    def _forward_events(self) -> None:
        if self.aggregator.has_events:
            events = self.aggregator.drain_events()
            if self.writer is not None:
                self.writer.submit_events(events)
