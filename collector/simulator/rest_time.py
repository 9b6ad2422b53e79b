"""The time formats of IG's REST: `from`/`to` as `yyyy-MM-ddTHH:mm:ss` read in a zone, and the
UK-local and UTC texts of `snapshotTime` / `snapshotTimeUTC`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo

UK = ZoneInfo("Europe/London")
IG_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")


def parse_ig_time(text: str, zone: tzinfo = UTC) -> int:
    """`yyyy-MM-ddTHH:mm:ss` read in `zone` -> epoch ms; ValueError for any other format."""
    if not IG_TIME_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not yyyy-MM-ddTHH:mm:ss")
    dt = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S")
    return int(dt.replace(tzinfo=zone).timestamp() * 1000)


def utc_text(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def uk_text(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(UK).strftime("%Y/%m/%d %H:%M:%S")


def uk_offset_hours(ms: int) -> int:
    off = datetime.fromtimestamp(ms / 1000, UTC).astimezone(UK).utcoffset()
    return int(off.total_seconds() // 3600) if off else 0
