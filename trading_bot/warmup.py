"""Warm-up planner: how to reach the bars MA-200 needs, in REST points or in streaming time.

REST costs one point per candle from a weekly allowance shared with the collector; the stream
costs nothing but adds one bar per bar of market time. The plan shows, per pair and timeframe,
the bars stored, the points that would buy the rest, what the budget allows now, and when the
stream alone gets there (weekends do not count). Applying it spends within the budget, 15m
first: a 15m candle buys three times the history of a 5m one, and 1h/4h/1d roll up from 15m.
The REST range always ends just before the oldest stored bar, so nothing stored is bought again.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from collector import timeframes as tfs

from . import market_hours as mh
from .freshness import CandleFetcher
from .market_data import MarketData

log = logging.getLogger(__name__)

# Timeframes stored as candles (the rest are rollups of 15m): only these can be bought.
CANDLE_TIMEFRAMES = ("15m", "5m")


@dataclass(frozen=True)
class WarmupItem:
    pair: str
    timeframe: str
    bars: int  # complete bars stored (counted up to the target)
    target: int
    oldest: dt.datetime | None
    rest_start_ms: int | None  # REST range buying the missing bars, bucket starts inclusive
    rest_end_ms: int | None
    stream_eta: dt.datetime  # when the stream alone reaches the target

    @property
    def missing(self) -> int:
        return max(0, self.target - self.bars)

    @property
    def cost_points(self) -> int:
        """One point per candle: the missing bars (buckets with no tick at IG cost nothing)."""
        return self.missing


@dataclass(frozen=True)
class WarmupPlan:
    items: list[WarmupItem]  # in the order --apply spends: 15m first
    available_points: int  # what the budget allows this spender now
    now: dt.datetime

    def fundable(self) -> dict[tuple[str, str], int]:
        """Points each item would get now, spending in plan order until the budget is used up."""
        left, out = self.available_points, {}
        for it in self.items:
            got = min(it.cost_points, max(0, left))
            out[(it.pair, it.timeframe)] = got
            left -= got
        return out

    @property
    def total_cost(self) -> int:
        return sum(it.cost_points for it in self.items)


def make_plan(
    market: MarketData,
    pairs: Sequence[str],
    timeframes: Sequence[str],
    target: int,
    available_points: int,
    now: dt.datetime,
) -> WarmupPlan:
    """One query for the state of every series, then pure arithmetic on market hours."""
    tf_list = [tf for tf in CANDLE_TIMEFRAMES if tf in timeframes]
    now_ms = mh.to_ms(now)
    items = []
    for st in market.series_state(pairs, tf_list, target):
        tf_ms = tfs.length_ms(st.timeframe)
        missing = max(0, target - st.bars)
        start = end = None
        if missing:
            # Just before the oldest stored bar, so nothing stored is bought again.
            end = mh.to_ms(st.oldest) - tf_ms if st.oldest is not None else mh.last_closed_bucket(now_ms, tf_ms)
            if end is not None:
                start = mh.bars_back_start(end, missing, tf_ms)
        eta = mh.from_ms(mh.bars_reached_at(now_ms, missing, tf_ms))
        items.append(WarmupItem(st.pair, st.timeframe, st.bars, target, st.oldest, start, end, eta))
    items.sort(key=lambda it: (CANDLE_TIMEFRAMES.index(it.timeframe), list(pairs).index(it.pair)))
    return WarmupPlan(items, available_points, now)


@dataclass(frozen=True)
class WarmupResult:
    pair: str
    timeframe: str
    asked: int  # bars asked for
    stored: int
    note: str = ""


def apply_plan(
    plan: WarmupPlan,
    fetcher: CandleFetcher,
    store: Callable[[list], int],
    available: Callable[[], int],
) -> list[WarmupResult]:
    """Buy the missing bars in plan order while the budget lasts; a partial purchase takes the
    newest part of the range (next to the stored bars), which shortens the stream's wait."""
    from collector.ig_rest import AllowanceExhausted, BudgetExceeded

    results = []
    for it in plan.items:
        if not it.missing or it.rest_start_ms is None or it.rest_end_ms is None:
            continue
        budget = available()
        if budget <= 0:
            results.append(WarmupResult(it.pair, it.timeframe, 0, 0, "budget used up"))
            continue
        n = min(it.missing, budget)
        tf_ms = tfs.length_ms(it.timeframe)
        start = it.rest_start_ms if n == it.missing else mh.bars_back_start(it.rest_end_ms, n, tf_ms)
        try:
            candles = fetcher.fetch_candles(it.pair, it.timeframe, start, it.rest_end_ms, "warmup")
        except (BudgetExceeded, AllowanceExhausted) as e:
            results.append(WarmupResult(it.pair, it.timeframe, n, 0, str(e)))
            break
        stored = store(candles)
        log.info("warm-up stored %d REST candles for %s %s", stored, it.pair, it.timeframe)
        results.append(WarmupResult(it.pair, it.timeframe, n, stored, "" if n == it.missing else "partial"))
    return results
