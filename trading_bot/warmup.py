"""Warm-up planner: how to reach the bars MA-200 needs, in REST points or in streaming time.

REST costs one point per candle from a weekly allowance shared with the collector; the stream
costs nothing but adds one bar per bar of market time. The plan counts the complete bars already
stored (streamed, bought or imported with `ig-collector import`), then buys 5m for the most
recent bars first and *composes* the 15m candles those 5m bars cover completely (a 15m candle
is exactly its three 5m candles, `collector/compose.py`), so only the older 15m bars still
missing are bought. From an empty database, per pair: 200 5m bars cover 66 whole 15m buckets,
so 200 + 134 points instead of 400; 28 pairs cost 9,352 points, inside one weekly allowance.
The REST range always ends just before the oldest bar stored (or composed), so nothing known is
bought again. The plan shows every figure before anything is spent; 1h/4h/1d roll up from 15m.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass

from collector import timeframes as tfs
from collector.compose import compose
from collector.market_hours import market_buckets
from collector.models import Candle

from . import market_hours as mh
from .freshness import CandleFetcher
from .market_data import MarketData, SeriesState

log = logging.getLogger(__name__)

# Timeframes stored as candles (the rest are rollups of 15m): only these can be bought.
# Spending order: 5m first, whose candles then compose 15m for free.
CANDLE_TIMEFRAMES = ("5m", "15m")
FIVE_MIN_MS = tfs.length_ms("5m")
QUARTER_MS = tfs.length_ms("15m")


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
    composed: int = 0  # 15m bars to compose from the 5m ones (stored or bought first): free
    compose_from_ms: int | None = None  # the 15m buckets to compose, starts inclusive
    compose_to_ms: int | None = None
    newest: dt.datetime | None = None  # newest complete bar stored

    @property
    def missing(self) -> int:
        """Bars to buy: the target less what is stored and what composition adds."""
        return max(0, self.target - self.bars - self.composed)

    @property
    def cost_points(self) -> int:
        """One point per candle: the missing bars (buckets with no tick at IG cost nothing)."""
        return self.missing


@dataclass(frozen=True)
class WarmupPlan:
    items: list[WarmupItem]  # in the order --apply spends: 5m first, then the 15m still missing
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
    """One query for the state of every series, one for the 15m buckets already stored where
    5m history will be, then pure arithmetic on market hours."""
    tf_list = [tf for tf in CANDLE_TIMEFRAMES if tf in timeframes]
    now_ms = mh.to_ms(now)
    states = {(st.pair, st.timeframe): st for st in market.series_state(pairs, tf_list, target)}
    five = {p: _item(states[(p, "5m")], target, now_ms) for p in pairs if "5m" in tf_list}
    items = list(five.values())
    if "15m" in tf_list:
        spans = {p: _composable(it) for p, it in five.items()}
        stored = _stored_quarters(market, {p: q for p, q in spans.items() if q})
        for p in pairs:
            items.append(_item(states[(p, "15m")], target, now_ms, spans.get(p, []), stored.get(p, set())))
    return WarmupPlan(items, available_points, now)


def _item(
    st: SeriesState, target: int, now_ms: int, quarters: Sequence[int] = (), stored: Set[int] = frozenset()
) -> WarmupItem:
    """One series: what is stored, what composition adds (15m), and the REST range for the rest."""
    tf_ms = tfs.length_ms(st.timeframe)
    new = [q for q in quarters if q not in stored][: max(0, target - st.bars)]
    known = [mh.to_ms(st.oldest)] if st.oldest is not None else []
    oldest = min(known + new) if known or new else None
    missing = max(0, target - st.bars - len(new))
    start = end = None
    if missing:
        # Just before the oldest bar stored or composed, so nothing known is bought again.
        end = oldest - tf_ms if oldest is not None else mh.last_closed_bucket(now_ms, tf_ms)
        if end is not None:
            start = mh.bars_back_start(end, missing, tf_ms)
    eta = mh.from_ms(mh.bars_reached_at(now_ms, max(0, target - st.bars), tf_ms))
    return WarmupItem(
        st.pair, st.timeframe, st.bars, target, st.oldest, start, end, eta,
        len(new), min(new) if new else None, max(new) if new else None, st.newest,
    )  # fmt: skip


def _composable(five: WarmupItem) -> list[int]:
    """15m buckets, newest first, all three of whose 5m market buckets the 5m series will hold
    once its plan is applied (stored bars plus the range to buy, taken as contiguous)."""
    lo = five.rest_start_ms if five.missing and five.rest_start_ms is not None else _ms(five.oldest)
    hi = _ms(five.newest) if five.newest is not None else five.rest_end_ms
    if lo is None or hi is None:
        return []
    have = set(market_buckets(lo, hi + FIVE_MIN_MS, FIVE_MIN_MS))
    quarters = {b - b % QUARTER_MS for b in have}
    whole = [q for q in quarters if all(q + k * FIVE_MIN_MS in have for k in range(3))]
    return sorted(whole, reverse=True)


def _ms(t: dt.datetime | None) -> int | None:
    return None if t is None else mh.to_ms(t)


def _stored_quarters(market: MarketData, spans: dict[str, list[int]]) -> dict[str, set[int]]:
    """Complete 15m buckets already stored among the ones composition would build."""
    if not spans:
        return {}
    with market.connection() as conn:
        rows = conn.execute(
            """SELECT c.pair, c.bucket FROM candles c
               JOIN unnest(%s::text[], %s::timestamptz[], %s::timestamptz[]) AS s(p, lo, hi)
                 ON c.pair = s.p AND c.bucket BETWEEN s.lo AND s.hi
               WHERE c.timeframe = '15m' AND c.complete""",
            (list(spans), [mh.from_ms(min(q)) for q in spans.values()], [mh.from_ms(max(q)) for q in spans.values()]),
        ).fetchall()
    out: dict[str, set[int]] = {}
    for pair, bucket in rows:
        out.setdefault(pair, set()).add(mh.to_ms(bucket))
    return out


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
    store: Callable[[list[Candle]], int],
    available: Callable[[], int],
    load: Callable[[str, str, int, int], list[Candle]] | None = None,
) -> list[WarmupResult]:
    """Buy the missing bars in plan order while the budget lasts: 5m first; before a pair's 15m,
    compose the 15m buckets its 5m bars now cover (free), then buy only the older 15m. A partial
    purchase takes the newest part of the range (next to the known bars), which shortens the
    stream's wait. `load(pair, timeframe, start_ms, end_ms)` reads stored complete candles."""
    from collector.ig_rest import AllowanceExhausted, BudgetExceeded

    results = []
    for it in plan.items:
        if it.composed and load is not None and it.compose_from_ms is not None and it.compose_to_ms is not None:
            fives = load(it.pair, "5m", it.compose_from_ms, it.compose_to_ms + QUARTER_MS - FIVE_MIN_MS)
            built = compose(fives, "15m")
            stored = store(built) if built else 0
            results.append(
                WarmupResult(it.pair, "15m", 0, stored, f"composed from 5m ({it.composed} planned), 0 points")
            )
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


def stored_candles(market: MarketData, pair: str, timeframe: str, start_ms: int, end_ms: int) -> list[Candle]:
    """Complete candles of one series with bucket start in [start_ms, end_ms] (what composition reads)."""
    with market.connection() as conn:
        rows = conn.execute(
            """SELECT bucket, bid_open, bid_high, bid_low, bid_close, ask_open, ask_high, ask_low, ask_close,
                      ticks, source FROM candles
               WHERE pair = %s AND timeframe = %s AND complete AND bucket BETWEEN %s AND %s ORDER BY bucket""",
            (pair, timeframe, mh.from_ms(start_ms), mh.from_ms(end_ms)),
        ).fetchall()
    return [Candle(pair, timeframe, mh.to_ms(r[0]), *r[1:9], r[9], True, r[10]) for r in rows]
