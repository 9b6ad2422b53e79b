"""What every imported row must satisfy, and the values the readers hand to the importer.

Readers report bad rows as `Rejection`s rather than raising, so one run names every problem
of every file (file, line, reason) and the summary can count them by reason; the importer
writes nothing unless there are none.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .. import timeframes as tfs
from ..models import Candle
from ..pairs import PAIRS, pair_from_epic

# Rejection reasons, as counted in the summary.
BAD_ROW = "malformed row"
NON_NUMERIC = "non-numeric price or volume"
NON_POSITIVE = "non-positive price"
OHLC_ORDER = "OHLC not ordered"
CROSSED = "bid above ask"
BAD_TIME = "unreadable time"
NO_ZONE = "time without a zone (give --time-zone)"
MISALIGNED = "bucket not aligned to the timeframe"
DUPLICATE = "duplicate with different values"
UNKNOWN_PAIR = "unknown pair"
BAD_TIMEFRAME = "timeframe not importable"
BAD_FILE = "unreadable file"


@dataclass(frozen=True)
class Rejection:
    file: str
    line: int  # 1-based line (or row for parquet/SQLite); 0 for the whole file
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Options:
    """What the command line adds to files that do not carry it themselves."""

    pair: str | None = None
    timeframe: str | None = None
    zone: dt.tzinfo | None = None


@dataclass
class Parsed:
    """One file read: candles with their line numbers, rejections, and what the reader chose
    (which SQLite table and columns, which zone) for the summary."""

    file: str
    fmt: str
    rows: list[tuple[int, Candle]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    faithful: bool = False  # our own format: keep source and complete, compose nothing

    def reject(self, line: int, reason: str, detail: str = "") -> None:
        self.rejections.append(Rejection(self.file, line, reason, detail))


def parse_zone(text: str) -> dt.tzinfo:
    """An IANA name (`Europe/Athens`), `UTC`, or a fixed offset (`+02:00`, `-0500`)."""
    m = re.fullmatch(r"(?:UTC)?([+-])(\d{1,2}):?(\d{2})?", text.strip())
    if m:
        minutes = int(m.group(2)) * 60 + int(m.group(3) or 0)
        return dt.timezone((1 if m.group(1) == "+" else -1) * dt.timedelta(minutes=minutes))
    try:
        return ZoneInfo(text.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {text!r}: use an IANA name such as Europe/Athens, or +02:00") from None


def to_ms(t: dt.datetime) -> int:
    return round(t.timestamp() * 1000)


def local_to_ms(naive: dt.datetime, zone: dt.tzinfo) -> int:
    return to_ms(naive.replace(tzinfo=zone))


def normalize_pair(text: str) -> str | None:
    """`EURUSD`, `eur/usd`, `EUR_USD`, `EURUSD.a` or an IG epic -> `EURUSD`; None if not one of the 28."""
    s = text.strip()
    if s.upper().startswith("CS.D."):
        try:
            return pair_from_epic(s.upper())
        except ValueError:
            return None
    letters = re.sub(r"[^A-Za-z]", "", s).upper()
    for cand in (letters, letters[:6]):
        if cand in PAIRS:
            return cand
    return None


def normalize_timeframe(text: str) -> str | None:
    """`5m`, `5min`, `M5`, `MINUTE_5`, `5` (minutes), `15T` -> label; None if not a timeframe."""
    s = text.strip().upper()
    if s == "MINUTE":
        return "1m"
    m = re.fullmatch(r"(?:MINUTE_|M)(\d+)|(\d+)\s*(?:M|MIN|MINS|MINUTE|MINUTES|T)?", s)
    if m:
        n = int(m.group(1) or m.group(2))
    else:
        h = re.fullmatch(r"(?:HOUR_|H)(\d+)|(\d+)\s*H|HOUR", s)
        if not h:
            return None
        n = 60 * int(h.group(1) or h.group(2) or 1)
    try:
        return tfs.label_for(tfs.minutes(tfs.label_for(n)))
    except ValueError:
        return None


def number(text: str) -> float:
    """A finite float; ValueError otherwise (NaN and infinities are not prices)."""
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(text)
    return v


def mid_candle(pair: str, tf: str, bucket_ms: int, o: float, h: float, lo: float, c: float, ticks: int) -> Candle:
    """Mid-only bars (MT4/MT5, HistData, most caches): bid = ask = mid. Mid indicators are
    exact; the spread of such rows is unknown (it reads as zero)."""
    return Candle(pair, tf, bucket_ms, o, h, lo, c, o, h, lo, c, ticks, True, "import")


def add_mid_bar(p: Parsed, line: int, pair: str, tf: str, bucket_ms: int, fields: Sequence[str]) -> None:
    """`fields` = open, high, low, close[, volume] as text: a mid candle, or a rejection."""
    try:
        o, h, lo, c = (number(x) for x in fields[:4])
        ticks = int(float(fields[4])) if len(fields) > 4 and fields[4].strip() else 0
    except ValueError as e:
        p.reject(line, NON_NUMERIC, str(e))
        return
    p.rows.append((line, mid_candle(pair, tf, bucket_ms, o, h, lo, c, ticks)))


def check(c: Candle) -> str | None:
    """The reason a parsed candle cannot be stored, or None."""
    sides = ((c.bid_open, c.bid_high, c.bid_low, c.bid_close), (c.ask_open, c.ask_high, c.ask_low, c.ask_close))
    for o, h, lo, cl in sides:
        if min(o, h, lo, cl) <= 0:
            return NON_POSITIVE
        if lo > min(o, cl) or h < max(o, cl) or lo > h:
            return OHLC_ORDER
    if c.ticks < 0:
        return NON_NUMERIC
    if c.bid_open > c.ask_open or c.bid_close > c.ask_close or c.bid_high > c.ask_high or c.bid_low > c.ask_low:
        return CROSSED
    if c.bucket_ms % tfs.length_ms(c.timeframe):
        return MISALIGNED
    return None


def check_all(parsed: Sequence[Parsed]) -> None:
    """Row checks, then duplicates across every file: the same bucket twice with other values
    is refused (both lines named); an identical repeat is kept once."""
    seen: dict[tuple[str, str, int], tuple[Parsed, int, Candle]] = {}
    for p in parsed:
        kept = []
        for line, c in p.rows:
            reason = check(c)
            if reason:
                p.reject(line, reason, _describe(c))
                continue
            key = (c.pair, c.timeframe, c.bucket_ms)
            prev = seen.get(key)
            if prev is None:
                seen[key] = (p, line, c)
                kept.append((line, c))
            elif prev[2] != c:
                p.reject(line, DUPLICATE, f"{_describe(c)} also at {prev[0].file}:{prev[1]} with other values")
        p.rows = kept


def _describe(c: Candle) -> str:
    t = dt.datetime.fromtimestamp(c.bucket_ms / 1000, dt.UTC)
    return f"{c.pair} {c.timeframe} {t:%Y-%m-%d %H:%M} UTC"
