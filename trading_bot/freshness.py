"""Freshness fallback: when the collector is presumed down, buy only the missing candles.

During market hours the newest complete candle of a series must be at most one bar plus a
margin old. If it is older, the collector (or its stream) is presumed down and the bot fetches
the missing buckets from IG REST itself, within the budget it shares with the collector
(`rest_allowance` / `rest_spend`, keeping TRADING_BOT_REST_RESERVE_POINTS for others), and
stores them through `store_rest_candles()` (source 'rest'). Stored candles move the series'
newest bar forward, and ranges already asked for are remembered, so the same candle is never
paid for twice. Weekends are not gaps: outside market hours the last candle before Friday's
close is what a healthy collector has.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from psycopg_pool import ConnectionPool

from collector import timeframes as tfs
from collector.market_hours import market_buckets
from collector.models import Candle
from collector.repairs import rest_candles_json

from . import market_hours as mh

log = logging.getLogger(__name__)

# After a refused or failed fetch, leave the series alone this long (the budget or IG will not
# change within seconds, and each attempt costs a REST request).
RETRY_AFTER_S = 300.0


class CandleFetcher(Protocol):
    """`collector.ig_rest.RestClient` as the bot uses it."""

    def fetch_candles(self, pair: str, timeframe: str, start_ms: int, end_ms: int, purpose: str) -> list[Candle]: ...


@dataclass(frozen=True)
class Gap:
    """Missing bucket starts [start_ms, end_ms] of one series (both inclusive, epoch ms)."""

    pair: str
    timeframe: str
    start_ms: int
    end_ms: int
    expected_ms: int  # the newest bucket a healthy collector would have closed by now
    newest_ms: int | None  # the newest complete bucket stored

    def bars(self) -> int:
        """Market buckets in the gap: the most REST points filling it can cost."""
        return sum(1 for _ in market_buckets(self.start_ms, self.end_ms + 1, tfs.length_ms(self.timeframe)))


def find_gap(
    pair: str, timeframe: str, newest_ms: int | None, now_ms: int, margin_ms: int, max_bars: int
) -> Gap | None:
    """The buckets missing at the head of a series, or None when it is fresh.

    Fresh means the newest complete bucket is at least the newest market bucket that ended more
    than `margin_ms` ago. The gap is capped to the `max_bars` newest buckets: the fallback keeps
    the bot trading, it does not rebuild history (that is the warm-up planner's job).
    """
    tf_ms = tfs.length_ms(timeframe)
    expected = mh.last_closed_bucket(now_ms, tf_ms, grace_ms=margin_ms)
    if expected is None or (newest_ms is not None and newest_ms >= expected):
        return None
    start = mh.bars_back_start(expected, max_bars, tf_ms)
    if newest_ms is not None:
        start = max(start, newest_ms + tf_ms)
    return Gap(pair, timeframe, start, expected, expected, newest_ms)


class FreshnessGuard:
    """Checks series heads and fills gaps from REST; used by the runner's safety poll.

    Not thread-safe: one guard per runner thread (the REST client holds a requests session).
    """

    def __init__(
        self,
        pool: ConnectionPool,
        fetcher: Callable[[], CandleFetcher],
        margin_s: float,
        max_bars: int,
        requests_per_minute: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self._make_fetcher = fetcher
        self._fetcher: CandleFetcher | None = None
        self.margin_ms = int(margin_s * 1000)
        self.max_bars = max_bars
        self.requests_per_minute = requests_per_minute
        self._clock = clock
        self._asked_until: dict[tuple[str, str], int] = {}  # newest bucket already asked for
        self._retry_at: dict[tuple[str, str], float] = {}
        self._requests: collections.deque[float] = collections.deque()

    def _allowed_now(self, key: tuple[str, str]) -> bool:
        now = self._clock()
        if self._retry_at.get(key, 0.0) > now:
            return False
        while self._requests and self._requests[0] < now - 60:
            self._requests.popleft()
        return len(self._requests) < self.requests_per_minute

    def ensure(self, pair: str, timeframe: str, newest_ms: int | None, now_ms: int) -> int:
        """Fill the head gap of one series if there is one; returns candles stored."""
        key = (pair, timeframe)
        if newest_ms is None:
            # No history at all is a warm-up, not an outage: buying it here could spend the week's
            # allowance on the bot's first start. Say so once.
            if key not in self._asked_until:
                log.warning("no %s candles for %s at all; run `trading-bot warmup --plan`", timeframe, pair)
                self._asked_until[key] = now_ms
            return 0
        gap = find_gap(pair, timeframe, newest_ms, now_ms, self.margin_ms, self.max_bars)
        if gap is None:
            return 0
        tf_ms = tfs.length_ms(timeframe)
        start = max(gap.start_ms, self._asked_until.get(key, gap.start_ms - tf_ms) + tf_ms)
        if start > gap.end_ms or not self._allowed_now(key):
            return 0
        from collector.ig_rest import AllowanceExhausted, BudgetExceeded, LoginFailed, RestError

        log.warning(
            "collector presumed down: %s %s newest complete candle %s, expected %s; fetching the missing "
            "candles from IG REST",
            pair, timeframe, _iso(newest_ms), _iso(gap.expected_ms),
            extra={"pair": pair, "timeframe": timeframe, "from": _iso(start), "to": _iso(gap.end_ms)},
        )  # fmt: skip
        self._requests.append(self._clock())
        try:
            if self._fetcher is None:
                self._fetcher = self._make_fetcher()
            candles = self._fetcher.fetch_candles(pair, timeframe, start, gap.end_ms, "freshness")
        except (BudgetExceeded, AllowanceExhausted) as e:
            log.warning("freshness fallback refused by the REST budget: %s", e, extra={"pair": pair})
            self._retry_at[key] = self._clock() + RETRY_AFTER_S
            return 0
        except LoginFailed as e:
            log.error("freshness fallback cannot log in to IG: %s", e)
            self._retry_at[key] = self._clock() + 6 * RETRY_AFTER_S
            return 0
        except (RestError, OSError) as e:
            log.warning("freshness fallback fetch failed: %s", e, extra={"pair": pair, "timeframe": timeframe})
            self._retry_at[key] = self._clock() + RETRY_AFTER_S
            return 0
        # Asked and paid for: never ask for these buckets again, whatever IG returned.
        self._asked_until[key] = gap.end_ms
        stored = self.store(candles)
        log.warning(
            "freshness fallback stored %d REST candles for %s %s (source=rest)",
            stored, pair, timeframe, extra={"pair": pair, "timeframe": timeframe, "fetched": len(candles)},
        )  # fmt: skip
        return stored

    def store(self, candles: list[Candle]) -> int:
        return store_candles(self.pool, candles)

    def close(self) -> None:
        fetcher, self._fetcher = self._fetcher, None
        logout = getattr(fetcher, "logout", None)
        if callable(logout):
            logout()


def store_candles(pool: ConnectionPool, candles: list[Candle]) -> int:
    """Store REST candles through store_rest_candles(), the SECURITY DEFINER function that lets the
    bot write candles without INSERT on the table; it never overwrites a complete streamed candle."""
    if not candles:
        return 0
    with pool.connection() as conn:
        row = conn.execute("SELECT store_rest_candles(%s::jsonb)", (rest_candles_json(candles),)).fetchone()
    return int(row[0]) if row else 0


def _iso(ms: int | None) -> str:
    return "-" if ms is None else mh.from_ms(ms).strftime("%Y-%m-%dT%H:%MZ")
