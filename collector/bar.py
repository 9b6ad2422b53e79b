"""One bucket's candle while the aggregator still holds it, and the OHLC rule that folds ticks in.

The rule, per side (bid, ask): open is the earliest tick by IG time, close the latest, high the
highest, low the lowest, and ticks count. Equal times keep arrival order, so a tick at the
open's own millisecond never replaces it and one at the close's millisecond does. The per-tick
path folds one tick (`Bar.add`), the batch path whole runs of sorted ticks (`runs`, then
`Bar.merge`); both go through this one module so the rule is written once per shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .models import Candle
from .vocabulary import CandleSource


@dataclass(slots=True, eq=False)
class Bar:
    """Mutable, unlike `Candle`, because a forming bucket changes with every tick and building a
    frozen row per tick would cost more than the fold itself; it leaves only as a `Candle`.
    Fields are in `Candle`'s order, and `merge` and `runs` use that same order."""

    bucket_ms: int
    open_ms: int  # IG time of the tick that set the open
    close_ms: int  # IG time of the tick that set the close
    bid_open: float
    bid_high: float
    bid_low: float
    bid_close: float
    ask_open: float
    ask_high: float
    ask_low: float
    ask_close: float
    ticks: int
    complete: bool = True  # False only for a resumed bucket the collector saw in part

    @classmethod
    def of_tick(cls, bucket_ms: int, time_ms: int, bid: float, ask: float) -> Bar:
        return cls(bucket_ms, time_ms, time_ms, bid, bid, bid, bid, ask, ask, ask, ask, 1)

    @classmethod
    def of_candle(cls, c: Candle, complete: bool) -> Bar:
        """A stored row; one without open_ms/close_ms (older rows) is taken as opened and closed
        at its bucket start, so any tick of the bucket sets the close and none the open."""
        b = c.bucket_ms
        return cls(
            b,
            b if c.open_ms is None else c.open_ms,
            b if c.close_ms is None else c.close_ms,
            c.bid_open, c.bid_high, c.bid_low, c.bid_close,
            c.ask_open, c.ask_high, c.ask_low, c.ask_close,
            c.ticks,
            complete,
        )  # fmt: skip

    def add(self, time_ms: int, bid: float, ask: float) -> None:
        """Fold in one tick that arrived after everything already in the bar."""
        if time_ms < self.open_ms:
            self.open_ms, self.bid_open, self.ask_open = time_ms, bid, ask
        if time_ms >= self.close_ms:
            self.close_ms, self.bid_close, self.ask_close = time_ms, bid, ask
        # A new high cannot also be a new low (low <= high), hence the elifs.
        if bid > self.bid_high:
            self.bid_high = bid
        elif bid < self.bid_low:
            self.bid_low = bid
        if ask > self.ask_high:
            self.ask_high = ask
        elif ask < self.ask_low:
            self.ask_low = ask
        self.ticks += 1

    def merge(self, later: Bar) -> None:
        """Fold in a bar of ticks that all arrived after everything already in this one."""
        if later.open_ms < self.open_ms:
            self.open_ms, self.bid_open, self.ask_open = later.open_ms, later.bid_open, later.ask_open
        if later.close_ms >= self.close_ms:
            self.close_ms, self.bid_close, self.ask_close = later.close_ms, later.bid_close, later.ask_close
        if later.bid_high > self.bid_high:
            self.bid_high = later.bid_high
        if later.bid_low < self.bid_low:
            self.bid_low = later.bid_low
        if later.ask_high > self.ask_high:
            self.ask_high = later.ask_high
        if later.ask_low < self.ask_low:
            self.ask_low = later.ask_low
        self.ticks += later.ticks

    def candle(self, pair: str, timeframe: str, complete: bool) -> Candle:
        return Candle(
            pair, timeframe, self.bucket_ms,
            self.bid_open, self.bid_high, self.bid_low, self.bid_close,
            self.ask_open, self.ask_high, self.ask_low, self.ask_close,
            self.ticks, complete, CandleSource.STREAM, self.open_ms, self.close_ms,
        )  # fmt: skip


def runs(
    codes: np.ndarray, buckets: np.ndarray, times: np.ndarray, bids: np.ndarray, asks: np.ndarray
) -> tuple[np.ndarray, list[Bar]]:
    """Ticks sorted by (pair, time, arrival) as one Bar per run of equal (pair, bucket), and the
    index where each run starts. Sorting by time first makes each run's first tick its open and
    its last its close, equal times in arrival order, as `Bar.add` would have them."""
    m = len(codes)
    brk = np.flatnonzero((codes[1:] != codes[:-1]) | (buckets[1:] != buckets[:-1])) + 1
    starts = np.concatenate(([0], brk))
    ends = np.concatenate((brk, [m])) - 1
    bars = list(
        map(
            Bar,
            buckets[starts].tolist(),
            times[starts].tolist(),
            times[ends].tolist(),
            bids[starts].tolist(),
            np.maximum.reduceat(bids, starts).tolist(),
            np.minimum.reduceat(bids, starts).tolist(),
            bids[ends].tolist(),
            asks[starts].tolist(),
            np.maximum.reduceat(asks, starts).tolist(),
            np.minimum.reduceat(asks, starts).tolist(),
            asks[ends].tolist(),
            np.diff(np.concatenate((starts, [m]))).tolist(),
        )
    )
    return starts, bars
