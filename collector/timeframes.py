"""Candle timeframes: text labels such as `5m`, `15m`, `1h` and their length.

The collector builds any whole-minute timeframe that divides a day; buckets are aligned to the
Unix epoch like TimescaleDB's `time_bucket` for such widths.
"""

from __future__ import annotations

import re

MS_PER_MINUTE = 60_000
DAY_MINUTES = 24 * 60
_LABEL = re.compile(r"^(\d+)(m|h|d)$")


def minutes(label: str) -> int:
    """`15m` -> 15, `4h` -> 240, `1d` -> 1440; ValueError with the rule otherwise."""
    m = _LABEL.match(label.strip())
    if not m:
        raise ValueError(f"timeframe {label!r} must look like 5m, 15m, 1h or 1d")
    n = int(m.group(1)) * {"m": 1, "h": 60, "d": DAY_MINUTES}[m.group(2)]
    if n <= 0 or DAY_MINUTES % n:
        raise ValueError(f"timeframe {label!r} must be a whole number of minutes that divides a day")
    return n


def length_ms(label: str) -> int:
    return minutes(label) * MS_PER_MINUTE


def label_for(n_minutes: int) -> str:
    if n_minutes % DAY_MINUTES == 0:
        return f"{n_minutes // DAY_MINUTES}d"
    if n_minutes % 60 == 0:
        return f"{n_minutes // 60}h"
    return f"{n_minutes}m"


def bucket_start(time_ms: int, tf_ms: int) -> int:
    return time_ms - time_ms % tf_ms


# IG REST resolution names for the timeframes it serves directly.
IG_RESOLUTIONS = {
    "1m": "MINUTE", "2m": "MINUTE_2", "3m": "MINUTE_3", "5m": "MINUTE_5", "10m": "MINUTE_10",
    "15m": "MINUTE_15", "30m": "MINUTE_30", "1h": "HOUR", "2h": "HOUR_2", "3h": "HOUR_3",
    "4h": "HOUR_4", "1d": "DAY",
}  # fmt: skip
