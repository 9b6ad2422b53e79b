"""When the FX market trades: Sunday 17:00 to Friday 17:00 New York time (DST-aware).

That is ~22:00 UTC in the northern winter and ~21:00 UTC in summer. Outside these hours a
silent stream is normal, an empty bucket is not a gap, and no REST point should be spent.
Pure functions of epoch milliseconds; no clock is read here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from zoneinfo import ZoneInfo

from .vocabulary import dt_to_ms, ms_to_dt

NEW_YORK = ZoneInfo("America/New_York")
_OPEN_HOUR = 17  # the FX week opens Sunday and closes Friday at 17:00 New York
_SUNDAY, _FRIDAY, _SATURDAY = 6, 4, 5


def _ny(ms: int) -> dt.datetime:
    return ms_to_dt(ms).astimezone(NEW_YORK)


def _ms(t: dt.datetime) -> int:
    return dt_to_ms(t)


def is_open(ms: int) -> bool:
    t = _ny(ms)
    wd = t.weekday()
    if wd == _SATURDAY:
        return False
    if wd == _SUNDAY:
        return t.hour >= _OPEN_HOUR
    if wd == _FRIDAY:
        return t.hour < _OPEN_HOUR
    return True


def week_close_before(ms: int) -> int:
    """The most recent Friday 17:00 New York at or before `ms` (epoch ms)."""
    t = _ny(ms)
    days_back = (t.weekday() - _FRIDAY) % 7
    close = (t - dt.timedelta(days=days_back)).replace(hour=_OPEN_HOUR, minute=0, second=0, microsecond=0)
    close = close.replace(tzinfo=None).replace(tzinfo=NEW_YORK)  # re-resolve the UTC offset for that date
    if _ms(close) > ms:
        close = (close.replace(tzinfo=None) - dt.timedelta(days=7)).replace(tzinfo=NEW_YORK)
    return _ms(close)


def next_open(ms: int) -> int:
    """`ms` itself when the market is open, else the next Sunday 17:00 New York."""
    if is_open(ms):
        return ms
    t = _ny(ms)
    days_ahead = (_SUNDAY - t.weekday()) % 7
    opening = (t + dt.timedelta(days=days_ahead)).replace(hour=_OPEN_HOUR, minute=0, second=0, microsecond=0)
    opening = opening.replace(tzinfo=None).replace(tzinfo=NEW_YORK)
    return _ms(opening)


def bucket_in_market(bucket_ms: int, tf_ms: int) -> bool:
    """A bucket is expected to hold data when any part of it lies in trading hours."""
    return is_open(bucket_ms) or is_open(bucket_ms + tf_ms - 1)


def market_buckets(start_ms: int, end_ms: int, tf_ms: int) -> Iterator[int]:
    """Bucket starts in [start_ms, end_ms) that lie in trading hours, epoch-aligned."""
    b = start_ms - start_ms % tf_ms
    while b < end_ms:
        if bucket_in_market(b, tf_ms):
            yield b
            b += tf_ms
        else:
            nxt = next_open(b)
            b = max(b + tf_ms, nxt - nxt % tf_ms)


def open_ms_between(start_ms: int, end_ms: int) -> int:
    """Milliseconds of trading time in [start_ms, end_ms): how long the stream needs to cover it."""
    total, t = 0, start_ms
    step = 60_000
    while t < end_ms:
        if is_open(t):
            nxt = min(end_ms, t + step - t % step)
            total += nxt - t
            t = nxt
        else:
            t = max(t + 1, min(end_ms, next_open(t)))
    return total
