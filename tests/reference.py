"""The obviously-correct reference aggregation the aggregator is checked against.

Deliberately naive: one pass over the arrivals applying the rules of docs/design.md §4 with
plain dicts and no pruning, then a stable sort by IG time and a group-by per (pair, timeframe,
bucket): first, max, min, last, count. No numpy, no incremental state, no cleverness.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from collector.models import Candle

MAX_TIME_MS = (1 << 43) - 1

# Reason labels in the order they are checked.
REASONS = ("missing", "non_numeric", "unknown_pair", "non_positive", "crossed", "future", "duplicate", "too_late")


@dataclass(frozen=True)
class Arrival:
    """A typed tick as it reaches the aggregator, with the clock at its arrival (None = the
    ticks' own clock)."""

    pair: str
    time_ms: int
    bid: float
    ask: float
    now_ms: int | None = None


@dataclass
class Rules:
    pairs: Sequence[str]
    timeframes: Sequence[str]
    close_grace_ms: int = 1500
    lateness_ms: int = 60_000
    future_tolerance_ms: int = 30_000
    dedupe_window_ms: int = 60_000


@dataclass
class Result:
    candles: dict[tuple[str, str, int], Candle] = field(default_factory=dict)
    reasons: list[str | None] = field(default_factory=list)  # per arrival; None = accepted
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    late_corrected: dict[str, int] = field(default_factory=dict)
    late_dropped: dict[str, int] = field(default_factory=dict)
    repairs: set[tuple[str, str, int]] = field(default_factory=set)
    clock: float = -math.inf


def tf_ms(label: str) -> int:
    n, unit = int(label[:-1]), label[-1]
    return n * {"m": 60_000, "h": 3_600_000, "d": 86_400_000}[unit]


def value_reason(rules: Rules, a: Arrival) -> str | None:
    if not (math.isfinite(a.bid) and math.isfinite(a.ask)) or a.time_ms <= 0:
        return "non_numeric"
    if a.pair not in rules.pairs:
        return "unknown_pair"
    if a.bid <= 0 or a.ask <= 0:
        return "non_positive"
    if a.bid > a.ask:
        return "crossed"
    if a.time_ms > MAX_TIME_MS:
        return "future"
    return None


def aggregate(rules: Rules, arrivals: Iterable[Arrival], final_now: int | None = None) -> Result:
    res = Result()
    res.late_corrected = dict.fromkeys(rules.timeframes, 0)
    res.late_dropped = dict.fromkeys(rules.timeframes, 0)
    seen: set[tuple[str, int, float, float]] = set()
    newest: dict[str, int] = {}
    members: dict[tuple[str, str, int], list[tuple[int, float, float]]] = defaultdict(list)
    clock = -math.inf
    for a in arrivals:
        reason = value_reason(rules, a)
        if a.now_ms is None:
            if reason is None:
                clock = max(clock, a.time_ms)
        else:
            clock = max(clock, a.now_ms)
        if reason is None and a.time_ms > clock + rules.future_tolerance_ms:
            reason = "future"
        if reason is None:
            key = (a.pair, a.time_ms, a.bid, a.ask)
            if key in seen and a.time_ms >= newest.get(a.pair, -math.inf) - rules.dedupe_window_ms:
                reason = "duplicate"
            else:
                seen.add(key)
                newest[a.pair] = max(newest.get(a.pair, a.time_ms), a.time_ms)
        if reason is None:
            kept = False
            for tf in rules.timeframes:
                length = tf_ms(tf)
                bucket = a.time_ms - a.time_ms % length
                close = bucket + length + rules.close_grace_ms
                if clock > close + rules.lateness_ms:
                    res.late_dropped[tf] += 1
                    res.repairs.add((a.pair, tf, bucket))
                    continue
                if clock >= close:
                    res.late_corrected[tf] += 1
                kept = True
                members[(a.pair, tf, bucket)].append((a.time_ms, a.bid, a.ask))
            if not kept:
                reason = "too_late"
        res.reasons.append(reason)
        if reason is not None:
            res.rejected[reason] += 1
    if final_now is not None:
        clock = max(clock, final_now)
    res.clock = clock
    for (pair, tf, bucket), ticks in members.items():
        ordered = sorted(ticks, key=lambda x: x[0])  # stable: equal times keep arrival order
        first, last = ordered[0], ordered[-1]
        close = bucket + tf_ms(tf) + rules.close_grace_ms
        res.candles[(pair, tf, bucket)] = Candle(
            pair=pair,
            timeframe=tf,
            bucket_ms=bucket,
            bid_open=first[1],
            bid_high=max(x[1] for x in ticks),
            bid_low=min(x[1] for x in ticks),
            bid_close=last[1],
            ask_open=first[2],
            ask_high=max(x[2] for x in ticks),
            ask_low=min(x[2] for x in ticks),
            ask_close=last[2],
            ticks=len(ticks),
            complete=clock >= close,
            source="stream",
            open_ms=first[0],
            close_ms=last[0],
        )
    return res


def rollup(candles: Iterable[Candle], bucket_of) -> dict[tuple[str, int], tuple]:
    """Roll 15m candles up (first open, max high, min low, last close, sum of ticks) into the
    buckets `bucket_of(bucket_ms)` gives; values are tuples in the rollup views' column order."""
    groups: dict[tuple[str, int], list[Candle]] = defaultdict(list)
    for c in candles:
        groups[(c.pair, bucket_of(c.bucket_ms))].append(c)
    out = {}
    for key, cs in groups.items():
        cs = sorted(cs, key=lambda c: c.bucket_ms)
        out[key] = (
            cs[0].bid_open,
            max(c.bid_high for c in cs),
            min(c.bid_low for c in cs),
            cs[-1].bid_close,
            cs[0].ask_open,
            max(c.ask_high for c in cs),
            min(c.ask_low for c in cs),
            cs[-1].ask_close,
            sum(c.ticks for c in cs),
        )
    return out
