"""When FX trades, in the terms the bot asks about: datetimes and bar counts.

The rule itself (Sunday 17:00 to Friday 17:00 New York, DST-aware: ~22:00 UTC in winter, ~21:00
UTC in summer) lives in `collector.market_hours`, so the collector's gap detection and the bot's
freshness check can never disagree about a weekend. This module only adds what the bot needs on
top: the newest bar that should be closed by now, and when a number of bars will have been
streamed. Pure functions of their arguments (no clock is read), standard library only.
"""

from __future__ import annotations

import datetime as dt

from collector import market_hours as rule

__all__ = ["bars_back_start", "bars_reached_at", "is_open", "last_closed_bucket"]

# A search for a market bucket never needs to look further than a long weekend plus holidays.
_MAX_SEARCH_MS = 10 * 86_400_000


def to_ms(t: dt.datetime) -> int:
    if t.tzinfo is None:
        raise ValueError("naive datetime: pass an aware UTC datetime")
    return int(t.timestamp() * 1000)


def from_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def is_open(t: dt.datetime) -> bool:
    """True while the FX market trades (Sunday 17:00 to Friday 17:00 New York)."""
    return rule.is_open(to_ms(t))


def last_closed_bucket(now_ms: int, tf_ms: int, grace_ms: int = 0) -> int | None:
    """Start of the newest bucket that lies in market hours and has ended by `now_ms - grace_ms`.

    That is the newest candle a healthy collector must have stored by now; at a weekend it is the
    last bucket before Friday's close. None only if no market bucket exists in the search window.
    """
    b = (now_ms - grace_ms) - (now_ms - grace_ms) % tf_ms - tf_ms
    floor = b - _MAX_SEARCH_MS
    while b >= floor:
        if rule.bucket_in_market(b, tf_ms):
            return b
        if not rule.is_open(b):
            # Jump to the last bucket before the market closed.
            close = rule.week_close_before(b)
            b = min(b - tf_ms, close - 1 - (close - 1) % tf_ms)
        else:
            b -= tf_ms
    return None


def bars_back_start(end_ms: int, bars: int, tf_ms: int) -> int:
    """Start of the `bars`-th market bucket counting back from the bucket that starts at `end_ms`
    (inclusive): the first bucket of a REST range holding `bars` candles and ending at `end_ms`."""
    if bars <= 0:
        raise ValueError("bars must be positive")
    b, found = end_ms - end_ms % tf_ms, 0
    while True:
        if rule.bucket_in_market(b, tf_ms):
            found += 1
            if found == bars:
                return b
            b -= tf_ms
        else:
            close = rule.week_close_before(b)
            b = min(b - tf_ms, close - 1 - (close - 1) % tf_ms)


def bars_reached_at(now_ms: int, bars: int, tf_ms: int) -> int:
    """When `bars` more market buckets will have closed, counting the one forming at `now_ms`:
    the time the stream alone needs to add that many bars. `now_ms` itself when `bars` <= 0."""
    if bars <= 0:
        return now_ms
    b, found = now_ms - now_ms % tf_ms, 0
    while True:
        if rule.bucket_in_market(b, tf_ms):
            found += 1
            if found == bars:
                return b + tf_ms
            b += tf_ms
        else:
            nxt = rule.next_open(b)
            b = max(b + tf_ms, nxt - nxt % tf_ms)
