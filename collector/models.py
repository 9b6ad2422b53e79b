"""Value types that cross module boundaries: a tick and a candle.

Times are integer epoch milliseconds UTC (IG's `UTM`), which keeps the aggregator exact and
cheap; conversion to `datetime` happens only at the database edge.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    source: str = "stream"  # "stream" or "rest"
    open_ms: int | None = None  # IG time of the tick that set the open (exact open under reordering)
    close_ms: int | None = None  # IG time of the tick that set the close
