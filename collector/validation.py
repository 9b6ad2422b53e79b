"""Turning raw stream values into typed ticks, and the vocabulary of why a tick is refused.

Lightstreamer hands us strings (or `None` for IG's `#` null, `''` for `$`), the tick file hands
us CSV fields; both go through the same parsers so that replay and the live path count the
same rejects for the same input. Only *syntax* is judged here (missing, not a number); value
rules that need no state (prices > 0, bid <= ask, a sane time) live in `check_values` and are
applied by the aggregator to typed ticks too, and the stateful rules (future, duplicate, late)
are the aggregator's.

Reasons are checked in a fixed order so one tick always gets one reason, whatever the path:
missing, non_numeric, unknown_pair, non_positive, crossed, future, duplicate, too_late.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# The largest IG time we accept (2248-09-26). Anything later is "far in the future" whatever the
# clock says, and the bound keeps `pair_code << 43 | time` inside an int64 key in collector.dedupe.
TIME_BITS = 43
MAX_TIME_MS = (1 << TIME_BITS) - 1


class Reject(enum.IntEnum):
    """Why a tick did not enter the candles. `label` is the metrics label (collector.metrics)."""

    MISSING = 1  # a field is absent, None or blank
    NON_NUMERIC = 2  # not a finite number; a time that is not a positive whole number of ms
    UNKNOWN_PAIR = 3  # not one of the configured pairs
    NON_POSITIVE = 4  # bid or ask <= 0
    CROSSED = 5  # bid > ask
    FUTURE = 6  # IG time beyond now + future tolerance
    DUPLICATE = 7  # same pair/time/bid/ask seen recently (re-subscription snapshot)
    TOO_LATE = 8  # every timeframe's bucket closed longer ago than the lateness window

    @property
    def label(self) -> str:
        return self.name.lower()


REASONS: tuple[Reject, ...] = tuple(Reject)
N_CODES = max(REASONS) + 1  # size of a counter array indexed by reason code (0 = accepted)


def parse_price(raw: object) -> float | Reject:
    """A bid or offer as IG sends it: a decimal string. Infinity and NaN are not prices."""
    if raw is None:
        return Reject.MISSING
    if isinstance(raw, str):
        s = raw.strip()
        if not s:
            return Reject.MISSING
        try:
            v = float(s)
        except ValueError:
            return Reject.NON_NUMERIC
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        v = float(raw)
    else:
        return Reject.NON_NUMERIC
    return v if math.isfinite(v) else Reject.NON_NUMERIC


def parse_time(raw: object) -> int | Reject:
    """IG's UTM: whole epoch milliseconds. `1.7e12` is accepted (it is whole), `1.5` is not.

    The range (positive, not absurdly far ahead) is checked by `check_values`, so typed ticks
    from other sources are held to the same rule.
    """
    if raw is None:
        return Reject.MISSING
    if isinstance(raw, bool):
        return Reject.NON_NUMERIC
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str):
        s = raw.strip()
        if not s:
            return Reject.MISSING
        try:
            return int(s)
        except ValueError:
            pass
        try:
            v = float(s)
        except ValueError:
            return Reject.NON_NUMERIC
    elif isinstance(raw, float):
        v = raw
    else:
        return Reject.NON_NUMERIC
    if not math.isfinite(v) or v != math.floor(v):
        return Reject.NON_NUMERIC
    return int(v)


def parse_pair(raw: object) -> str | Reject:
    if raw is None or not isinstance(raw, str) or not raw.strip():
        return Reject.MISSING
    return raw.strip()


@dataclass(frozen=True, slots=True)
class Parsed:
    pair: str
    time_ms: int
    bid: float
    ask: float


def parse_raw(pair: object, raw_bid: object, raw_ask: object, raw_time: object) -> Parsed | Reject:
    """One stream update (pair, BID, OFR, UTM) -> typed values, or the first syntax reason.

    MISSING wins over NON_NUMERIC across fields, so a row's reason does not depend on which
    field happens to be checked first.
    """
    p = parse_pair(pair)
    b = parse_price(raw_bid)
    a = parse_price(raw_ask)
    t = parse_time(raw_time)
    if isinstance(p, Reject) or isinstance(b, Reject) or isinstance(a, Reject) or isinstance(t, Reject):
        reasons = [x for x in (p, b, a, t) if isinstance(x, Reject)]
        return min(reasons)
    return Parsed(p, t, b, a)


def check_values(known_pair: bool, time_ms: int, bid: float, ask: float) -> Reject | None:
    """The stateless value rules, in the fixed order (scalar twin of `check_values_batch`)."""
    if not (math.isfinite(bid) and math.isfinite(ask)) or time_ms <= 0:
        return Reject.NON_NUMERIC
    if not known_pair:
        return Reject.UNKNOWN_PAIR
    if bid <= 0 or ask <= 0:
        return Reject.NON_POSITIVE
    if bid > ask:
        return Reject.CROSSED
    if time_ms > MAX_TIME_MS:
        return Reject.FUTURE
    return None


def check_values_batch(
    codes: np.ndarray, n_pairs: int, times: np.ndarray, bids: np.ndarray, asks: np.ndarray
) -> np.ndarray:
    """Reason code per tick (0 = passes), same order and rules as `check_values`."""
    reason = np.zeros(len(times), dtype=np.int8)
    with np.errstate(invalid="ignore"):
        # Assign from the lowest priority up so the highest-priority reason is the one left.
        reason[times > MAX_TIME_MS] = Reject.FUTURE
        reason[bids > asks] = Reject.CROSSED
        reason[(bids <= 0) | (asks <= 0)] = Reject.NON_POSITIVE
        reason[(codes < 0) | (codes >= n_pairs)] = Reject.UNKNOWN_PAIR
        reason[~(np.isfinite(bids) & np.isfinite(asks)) | (times <= 0)] = Reject.NON_NUMERIC
    return reason


@dataclass(frozen=True)
class ParsedBatch:
    """Columns of a parsed batch. `reason` is 0 where syntax passed; other columns are only
    meaningful there (code -1 = a pair name not in the configured list)."""

    codes: np.ndarray  # int16
    times: np.ndarray  # int64
    bids: np.ndarray  # float64
    asks: np.ndarray  # float64
    reason: np.ndarray  # int8, Reject codes


def _float_column(raw: Sequence[object], reason: np.ndarray) -> np.ndarray:
    """Bulk conversion (numpy's str->float is Python's float) with a per-value fallback that
    assigns the same reasons `parse_price` would."""
    try:
        out = np.array(raw, dtype=np.float64)
        # numpy turns None into NaN silently; anything not finite goes the slow way to get
        # the reason parse_price gives it.
        if out.shape == (len(raw),) and np.isfinite(out).all():
            return out
    except (ValueError, TypeError):
        pass
    out = np.empty(len(raw), dtype=np.float64)
    for i, r in enumerate(raw):
        v = parse_price(r)
        if isinstance(v, Reject):
            out[i] = np.nan
            reason[i] = min(reason[i] or 99, v)
        else:
            out[i] = v
    return out


def _time_column(raw: Sequence[object], reason: np.ndarray) -> np.ndarray:
    try:
        f = np.array(raw, dtype=np.float64)
        if f.shape == (len(raw),) and np.isfinite(f).all() and (f == np.floor(f)).all():
            # Whole values up to 2**53 are exact in float64; larger ones are past MAX_TIME_MS
            # anyway and are clipped so the cast cannot overflow.
            return np.clip(f, -(2.0**62), 2.0**62).astype(np.int64)
    except (ValueError, TypeError):
        pass
    out = np.zeros(len(raw), dtype=np.int64)
    for i, r in enumerate(raw):
        v = parse_time(r)
        if isinstance(v, Reject):
            reason[i] = min(reason[i] or 99, v)
        else:
            out[i] = max(min(v, 1 << 62), -(1 << 62))
    return out


def parse_columns(
    pairs: Sequence[object],
    raw_bids: Sequence[object],
    raw_asks: Sequence[object],
    raw_times: Sequence[object],
    pair_codes: dict[str, int],
) -> ParsedBatch:
    """Vectorised `parse_raw` over columns (replay chunks, batches drained from the queue)."""
    n = len(pairs)
    reason = np.zeros(n, dtype=np.int8)
    bids = _float_column(raw_bids, reason)
    asks = _float_column(raw_asks, reason)
    times = _time_column(raw_times, reason)
    codes = np.empty(n, dtype=np.int16)
    get = pair_codes.get
    for i, p in enumerate(pairs):
        c = get(p)  # type: ignore[arg-type]
        if c is None:
            q = parse_pair(p)
            if isinstance(q, Reject):
                reason[i] = Reject.MISSING
                c = -1
            else:
                c = pair_codes.get(q, -1)
        codes[i] = c
    return ParsedBatch(codes, times, bids, asks, reason)
