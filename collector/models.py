"""Value types that cross module boundaries: a tick, a candle, and recent ticks as columns.

Times are integer epoch milliseconds UTC (IG's `UTM`), which keeps the aggregator exact and
cheap; conversion to `datetime` happens only at the database edge.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .vocabulary import CandleSource


@dataclass(frozen=True, slots=True)
class Tick:
    pair: str
    time_ms: int  # IG UTM: when IG stamped the price, epoch ms UTC
    bid: float
    ask: float
    received_ms: int | None = None  # when we received it (None for replayed files)


@dataclass(frozen=True, slots=True)
class Candle:
    pair: str
    timeframe: str  # e.g. "5m"
    bucket_ms: int  # bucket start, epoch ms UTC
    bid_open: float
    bid_high: float
    bid_low: float
    bid_close: float
    ask_open: float
    ask_high: float
    ask_low: float
    ask_close: float
    ticks: int
    complete: bool = False
    source: str = CandleSource.STREAM  # a CandleSource
    open_ms: int | None = None  # IG time of the tick that set the open (exact open under reordering)
    close_ms: int | None = None  # IG time of the tick that set the close


@dataclass(frozen=True, slots=True)
class Flag:
    """A bucket owed a REST repair: the stream covered it only in part, or not at all."""

    pair: str
    timeframe: str
    bucket_ms: int
    reason: str  # a FlagReason (read back from the spool or the database as its plain value)


@dataclass(frozen=True, slots=True)
class CoverageMark:
    """The stream started (`up`) or stopped covering the market at IG time `at_ms`.

    Written in order through the writer, so `stream_coverage` never claims an interval whose
    ticks, candles and repair flags are not committed with it or before it."""

    up: bool
    at_ms: int
    reason: str | None = None  # when down, a CoverageEnd


@dataclass(frozen=True, eq=False)
class RecentTicks:
    """Stored ticks as numpy columns: what a restart seeds the duplicate filter with.

    Columns, not `Tick` rows, because a full dedupe window of ticks as Python objects is a heap
    the allocator never fully gives back, and the restarted collector would carry it for the
    rest of its life (figures in docs/measurements/aggregator.md)."""

    pairs: tuple[str, ...]  # pair_index -> pair
    pair_index: np.ndarray  # int
    time_ms: np.ndarray  # int64, epoch ms UTC
    bid: np.ndarray  # float64
    ask: np.ndarray  # float64

    @classmethod
    def of(cls, ticks: Iterable[Tick]) -> RecentTicks:
        ts = list(ticks)
        pairs = tuple(sorted({t.pair for t in ts}))
        index = {p: i for i, p in enumerate(pairs)}
        return cls(
            pairs,
            np.array([index[t.pair] for t in ts], dtype=np.int32),
            np.array([t.time_ms for t in ts], dtype=np.int64),
            np.array([t.bid for t in ts], dtype=np.float64),
            np.array([t.ask for t in ts], dtype=np.float64),
        )

    def __len__(self) -> int:
        return len(self.time_ms)

    def __iter__(self) -> Iterator[Tick]:
        cols = (self.pair_index.tolist(), self.time_ms.tolist(), self.bid.tolist(), self.ask.tolist())
        for i, t, b, a in zip(*cols, strict=True):
            yield Tick(self.pairs[i], t, b, a)

    def newest_ms(self) -> int | None:
        return int(self.time_ms.max()) if len(self.time_ms) else None
