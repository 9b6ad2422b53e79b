"""What the aggregator hands the writer besides forming candles: closes, corrections, repairs.

A module of its own so the bucket book that raises these events and the aggregator that
re-exports them need not import each other; `collector.aggregator` stays the public address.
"""

from __future__ import annotations

from dataclasses import dataclass

from .models import Candle
from .vocabulary import FlagReason


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
    reason: FlagReason = FlagReason.LATE_TICK


Event = CandleClosed | CandleCorrected | RepairNeeded
