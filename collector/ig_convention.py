"""How IG's REST answers must be read: the `from`/`to` time convention and spread-bet scaling.

Two facts about IG that its documentation leaves open (README "IG specifics"), learned from IG's
own answers instead of configured, so one collector is right on every account:

- **Time convention.** `GET /prices/{epic}` may read `from`/`to` as UTC or in the account's time
  zone (UK time for UK accounts; IG's docs and third-party clients disagree). Every price carries
  `snapshotTimeUTC` and `snapshotTime` (account local), so the buckets IG returned for a window we
  asked show which reading it used. While unknown, the first request of a summer range is a
  one-bucket probe placed so that under either reading it costs at most one candle of the gap
  itself (or nothing, when the other reading lands after now); after that every window is asked
  in the learned convention, so no point is paid for a candle outside the gap.
- **Spread-bet scaling.** Spread-bet epics (`.TODAY.IP`) are quoted in points: GBPUSD 13681.4
  for 1.36814. The market snapshot's `decimalPlacesFactor` (the quote's decimals) and
  `scalingFactor` tell by how much; candles are stored as FX rates rounded exactly to the pair's
  decimals, so every account type stores the same numbers.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

log = logging.getLogger(__name__)

UK = ZoneInfo("Europe/London")
UTC_READING, LOCAL_READING = "utc", "local"
IG_TIME = "%Y-%m-%dT%H:%M:%S"


def rate_digits(pair: str) -> int:
    """IG quotes FX rates to a tenth of a pip: 5 decimals, 3 for JPY-quoted pairs."""
    return 3 if pair.endswith("JPY") else 5


# --- spread-bet scaling ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PriceScale:
    """Divide IG's quote by `divisor`, then round to `digits` decimals, to get the FX rate."""

    divisor: int
    digits: int

    @property
    def scaled(self) -> bool:
        return self.divisor != 1

    def rate(self, quote: float | str) -> float:
        """The FX rate of one quote, exact in decimal (no binary rounding drift)."""
        q = Decimal(str(quote)) / self.divisor
        return float(round(q, self.digits))

    def rate_text(self, quote: str | None) -> str | None:
        """A streamed value as an FX rate text; anything that is not a number is passed on
        untouched, so validation still sees (and counts) the malformed original."""
        if not self.scaled or quote is None or quote == "":
            return quote
        try:
            q = Decimal(quote)
        except InvalidOperation:
            return quote
        if not q.is_finite():
            return quote
        return repr(float(round(q / self.divisor, self.digits)))


def price_scale(pair: str, market: dict[str, Any]) -> PriceScale:
    """The scale of `GET /markets/{epic}`'s quotes for `pair`.

    A CFD quotes the rate itself (`decimalPlacesFactor` = the rate's decimals; `scalingFactor` is
    then the size of a point and not applied); a spread bet quotes in points, so its quote has
    `decimalPlacesFactor` decimals and the rate is the quote divided by `scalingFactor`. Any other
    combination is refused with the numbers, rather than storing prices off by a power of ten.
    """
    digits = rate_digits(pair)
    snap = market.get("snapshot") or {}
    try:
        places = int(snap["decimalPlacesFactor"])
        factor = int(snap["scalingFactor"])
    except (KeyError, TypeError, ValueError):
        return PriceScale(1, digits)  # no snapshot factors: IG quotes the rate (CFD shape)
    if places == digits:
        return PriceScale(1, digits)
    if factor > 1 and places + len(str(factor)) - 1 == digits and str(factor).strip("0") == "1":
        return PriceScale(factor, digits)
    raise ValueError(
        f"{pair}: cannot tell how IG scales this market's quotes (decimalPlacesFactor {places}, "
        f"scalingFactor {factor}, expected {digits} decimals for the rate); check IG_EPIC_SUFFIX"
    )


# --- REST time convention -------------------------------------------------------------------------


def _text(ms: int, zone: dt.tzinfo) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).astimezone(zone).strftime(IG_TIME)


def _read(text: str, zone: dt.tzinfo) -> int:
    naive = dt.datetime.strptime(text.replace("/", "-").replace(" ", "T"), IG_TIME)
    return int(naive.replace(tzinfo=zone).timestamp() * 1000)


def offset_ms(ms: int, zone: dt.tzinfo = UK) -> int:
    off = dt.datetime.fromtimestamp(ms / 1000, dt.UTC).astimezone(zone).utcoffset()
    return int(off.total_seconds() * 1000) if off else 0


@dataclass(frozen=True, slots=True)
class Window:
    """One `/prices` request: `from`/`to` texts, and the reading to conclude if IG returns
    nothing (a probe whose other reading lies after now)."""

    from_text: str
    to_text: str
    if_empty: str | None = None


@dataclass
class RestTimeConvention:
    """Learns whether IG reads `from`/`to` as UTC or account-local time, and plans requests."""

    zone: dt.tzinfo = UK
    reading: str | None = None
    _got: set[int] = field(default_factory=set)

    def texts(self, start_ms: int, end_ms: int) -> Window:
        zone = self.zone if self.reading == LOCAL_READING else dt.UTC
        return Window(_text(start_ms, zone), _text(end_ms, zone))

    def windows(self, start_ms: int, end_ms: int, tf_ms: int, now_ms: int) -> Iterator[Window]:
        """The requests that fetch exactly the buckets [start, end]; call `learn` with each
        answer before taking the next window (later windows depend on what was learned)."""
        self._got = set()
        h = max(offset_ms(start_ms, self.zone), offset_ms(end_ms, self.zone))
        if self.reading is not None or h == 0:
            yield self.texts(start_ms, end_ms)
            return
        probe = self._probe(start_ms, end_ms, tf_ms, now_ms, h)
        if probe is not None:
            yield probe
        if self.reading is None:
            log.warning("IG's REST time convention is still unknown; asking in UTC", extra={"from_ms": start_ms})
            self.reading = UTC_READING
        for lo, hi in _ranges_without(start_ms, end_ms, tf_ms, self._got):
            yield self.texts(lo, hi)

    def _probe(self, start_ms: int, end_ms: int, tf_ms: int, now_ms: int, h: int) -> Window | None:
        """One bucket whose two readings are both in the gap, or one in the gap and the other
        after now (free: IG returns nothing there)."""
        if start_ms + h <= end_ms:  # text S+h: UTC reading -> bucket S+h, local reading -> S
            t = _text(start_ms + h, dt.UTC)
            return Window(t, t)
        if start_ms + h > now_ms:  # UTC reading -> after now (empty), local reading -> S
            t = _text(start_ms + h, dt.UTC)
            return Window(t, t, if_empty=UTC_READING)
        return None  # a short gap older than the offset: no free probe; ask in UTC

    def learn(self, window: Window, prices: Sequence[dict[str, Any]]) -> None:
        """Conclude the reading from the buckets IG returned for `window`."""
        as_utc = (_read(window.from_text, dt.UTC), _read(window.to_text, dt.UTC))
        as_local = (_read(window.from_text, self.zone), _read(window.to_text, self.zone))
        votes: set[str] = set()
        for p in prices:
            b = _read(p["snapshotTimeUTC"], dt.UTC)
            self._got.add(b)
            in_utc, in_local = as_utc[0] <= b <= as_utc[1], as_local[0] <= b <= as_local[1]
            if in_utc != in_local:
                votes.add(UTC_READING if in_utc else LOCAL_READING)
        if not prices and window.if_empty and self.reading is None:
            votes.add(window.if_empty)
        if len(votes) == 1:
            (reading,) = votes
            if reading != self.reading:
                level = logging.INFO if self.reading is None else logging.WARNING
                log.log(level, "IG REST time convention learned", extra={"reads_from_to_as": reading})
                self.reading = reading


def _ranges_without(start_ms: int, end_ms: int, tf_ms: int, got: set[int]) -> Iterator[tuple[int, int]]:
    """[start, end] in contiguous bucket ranges, leaving out the buckets already fetched."""
    lo = start_ms
    for b in sorted(x for x in got if start_ms <= x <= end_ms):
        if b > lo:
            yield lo, b - tf_ms
        lo = b + tf_ms
    if lo <= end_ms:
        yield lo, end_ms
