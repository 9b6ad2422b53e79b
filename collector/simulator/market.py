"""The simulator's market: a seeded price generator, the ground-truth tick store and candles.

Pure code, no I/O and no clock: the server decides *when* ticks happen and passes the times in,
so the same seed and the same schedule give the same ticks, and the REST candles and the
streamed ticks are computed from one store (a backfilled candle equals a perfect aggregation of
the stream by construction).

The store keeps ticks in growable numpy columns (time, pair, bid, ask) instead of one Python
object per tick, so an hour-long soak at IG's peak rate fits in memory and a candle query is a
vectorised scan rather than a Python loop (figures: docs/measurements/simulator.md).
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from collector.models import Candle, Tick
from collector.pairs import pip_size

# Rough mid levels (late 2020s) so prices, pip values and spreads look like IG's.
BASE_MID: dict[str, float] = {
    "EURUSD": 1.0850, "GBPUSD": 1.2700, "USDJPY": 150.00, "USDCHF": 0.8800, "AUDUSD": 0.6600,
    "NZDUSD": 0.6100, "USDCAD": 1.3600, "EURGBP": 0.8550, "EURJPY": 162.50, "EURCHF": 0.9550,
    "EURAUD": 1.6450, "EURNZD": 1.7800, "EURCAD": 1.4750, "GBPJPY": 190.50, "GBPCHF": 1.1200,
    "GBPAUD": 1.9250, "GBPNZD": 2.0800, "GBPCAD": 1.7300, "AUDJPY": 99.00, "NZDJPY": 91.50,
    "CADJPY": 110.30, "CHFJPY": 170.40, "AUDCHF": 0.5800, "NZDCHF": 0.5370, "CADCHF": 0.6470,
    "AUDNZD": 1.0820, "AUDCAD": 0.8980, "NZDCAD": 0.8300,
}  # fmt: skip

_MAJORS = {"EURUSD", "GBPUSD", "USDJPY", "USDCHF", "AUDUSD", "NZDUSD", "USDCAD"}

# IG REST resolutions the simulator serves, in milliseconds (epoch-aligned; DAY at UK midnight).
RESOLUTIONS_MS: dict[str, int] = {
    "SECOND": 1_000, "MINUTE": 60_000, "MINUTE_2": 120_000, "MINUTE_3": 180_000,
    "MINUTE_5": 300_000, "MINUTE_10": 600_000, "MINUTE_15": 900_000, "MINUTE_30": 1_800_000,
    "HOUR": 3_600_000, "HOUR_2": 7_200_000, "HOUR_3": 10_800_000, "HOUR_4": 14_400_000,
    "DAY": 86_400_000,
}  # fmt: skip

# Lightstreamer CHART candle scales IG streams (there is no 15-minute one).
STREAM_SCALES_MS: dict[str, int] = {"SECOND": 1_000, "1MINUTE": 60_000, "5MINUTE": 300_000, "HOUR": 3_600_000}

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
UK = ZoneInfo("Europe/London")


def _uk_transitions(first_year: int, last_year: int) -> np.ndarray:
    """UTC instants (ms) where UK time changes: BST starts/ends at 01:00 UTC on the last Sunday
    of March/October. Alternating start, end, start, ... so an odd count before t means BST."""
    out = []
    for y in range(first_year, last_year + 1):
        for month in (3, 10):
            last = datetime(y, month, 31, 1, tzinfo=UTC)
            last -= timedelta(days=(last.weekday() + 1) % 7)
            out.append(int(last.timestamp() * 1000))
    return np.array(out, dtype=np.int64)


def uk_offsets(t: np.ndarray) -> np.ndarray:
    """UK's UTC offset (ms) at each instant of `t` (epoch ms), vectorised."""
    if len(t) == 0:
        return np.zeros(0, dtype=np.int64)
    lo = datetime.fromtimestamp(int(t.min()) / 1000, UTC).year - 1
    hi = datetime.fromtimestamp(int(t.max()) / 1000, UTC).year + 1
    n = np.searchsorted(_uk_transitions(lo, hi), t, side="right")
    return np.where(n % 2 == 1, HOUR_MS, 0).astype(np.int64)


def bucket_starts(t: np.ndarray, tf_ms: int) -> np.ndarray:
    """Bucket start of each time: epoch-aligned, except DAY, which starts at midnight UK time
    (IG's FX daily figures reset then; README "IG specifics")."""
    if tf_ms != DAY_MS:
        return t - t % tf_ms
    local = t + uk_offsets(t)
    day_local = local - local % DAY_MS
    # At local midnight the day's own change (01:00 UTC) has not happened yet: take the offset
    # two hours before, which is the one in force at that midnight.
    return day_local - uk_offsets(day_local - 2 * HOUR_MS)


def bucket_start(ms: int, tf_ms: int) -> int:
    return int(bucket_starts(np.array([ms], dtype=np.int64), tf_ms)[0])


def bucket_ceil(ms: int, tf_ms: int) -> int:
    """The first bucket start at or after `ms`."""
    if tf_ms != DAY_MS:
        return -(-ms // tf_ms) * tf_ms
    b = bucket_start(ms, DAY_MS)
    return b if b == ms else bucket_start(b + DAY_MS + 2 * HOUR_MS, DAY_MS)  # UK days are 23-25 h


def price_digits(pair: str) -> int:
    """IG quotes FX to a tenth of a pip: 5 decimals, 3 for JPY pairs."""
    return 3 if pair.endswith("JPY") else 5


def format_price(x: float) -> str:
    """Prices are already rounded to their tick size, so repr is short and round-trips exactly."""
    return repr(x)


class PriceModel:
    """Seeded mean-reverting random walk per pair, one `random.Random` for the whole market.

    The sequence of (pair, bid, ask) depends only on the seed and on how many ticks were asked
    for, never on wall time, which is what makes a run reproducible "given the same schedule".
    """

    def __init__(self, pairs: Sequence[str], seed: int) -> None:
        self.pairs = tuple(pairs)
        self._rng = random.Random(seed)
        self._pip = [pip_size(p) for p in self.pairs]
        self._digits = [price_digits(p) for p in self.pairs]
        self._base = [BASE_MID[p] for p in self.pairs]
        # Start a little off the base so seeds differ visibly from the first tick.
        self._mid = [b * (1 + self._rng.uniform(-0.002, 0.002)) for b in self._base]
        # Typical spread in pips: majors tight, crosses wider; each tick jitters around it.
        self._spread = [0.6 if p in _MAJORS else 1.6 for p in self.pairs]
        self._quote: list[tuple[float, float]] = [self._make_quote(i, s) for i, s in enumerate(self._spread)]

    def _make_quote(self, i: int, spread_pips: float) -> tuple[float, float]:
        pip = self._pip[i]
        d = self._digits[i]
        tick = pip / 10
        spread_ticks = max(5, round(spread_pips * 10))  # >= 0.5 pip
        bid = round(self._mid[i] - spread_ticks * tick / 2, d)
        ask = round(bid + spread_ticks * tick, d)
        return bid, ask

    def next(self) -> tuple[int, float, float]:
        """Advance one randomly chosen pair by one tick; returns (pair index, bid, ask)."""
        rng = self._rng
        i = rng.randrange(len(self.pairs))
        pip = self._pip[i]
        mid = self._mid[i]
        # 0.4-pip steps with a weak pull back to the base level keep prices realistic for hours.
        mid += rng.gauss(0.0, 0.4 * pip) - 0.0005 * (mid - self._base[i])
        self._mid[i] = mid
        spread = min(3.0, max(0.5, self._spread[i] + rng.uniform(-0.1, 0.6)))
        q = self._make_quote(i, spread)
        self._quote[i] = q
        return i, q[0], q[1]

    def quote(self, i: int) -> tuple[float, float]:
        """The pair's current (bid, ask) without advancing the random sequence."""
        return self._quote[i]


class TickStore:
    """Every tick the market produced, in generation order, in growable numpy columns.

    Appends happen on the simulator's event loop only; readers take `view()` slices, which stay
    valid after a later growth because growth allocates new arrays and never mutates old ones.
    """

    def __init__(self, pairs: Sequence[str], capacity: int = 1 << 16) -> None:
        self.pairs = tuple(pairs)
        self.index = {p: i for i, p in enumerate(self.pairs)}
        self._n = 0
        self._time = np.empty(capacity, dtype=np.int64)
        self._pair = np.empty(capacity, dtype=np.uint8)
        self._bid = np.empty(capacity, dtype=np.float64)
        self._ask = np.empty(capacity, dtype=np.float64)
        self._last: list[deque[tuple[int, float, float]]] = [deque(maxlen=16) for _ in self.pairs]

    def __len__(self) -> int:
        return self._n

    def _grow(self) -> None:
        cap = len(self._time) * 2
        for name in ("_time", "_pair", "_bid", "_ask"):
            old = getattr(self, name)
            new = np.empty(cap, dtype=old.dtype)
            new[: self._n] = old[: self._n]
            setattr(self, name, new)

    def append(self, pair_idx: int, time_ms: int, bid: float, ask: float) -> None:
        n = self._n
        if n == len(self._time):
            self._grow()
        self._time[n] = time_ms
        self._pair[n] = pair_idx
        self._bid[n] = bid
        self._ask[n] = ask
        self._n = n + 1
        self._last[pair_idx].append((time_ms, bid, ask))

    def last(self, pair_idx: int, n: int = 1) -> list[tuple[int, float, float]]:
        """The pair's last `n` ticks in generation order (at most 16), for stream snapshots."""
        d = self._last[pair_idx]
        return list(d)[-n:] if n > 0 else []

    def view(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n = self._n
        return self._time[:n], self._pair[:n], self._bid[:n], self._ask[:n]

    def select(self, pair: str | None = None, from_ms: int | None = None, to_ms: int | None = None) -> np.ndarray:
        """Positions (generation order) of the ticks of `pair` with time in [from_ms, to_ms]."""
        t, p, _, _ = self.view()
        mask = np.ones(len(t), dtype=bool)
        if pair is not None:
            mask &= p == self.index[pair]
        if from_ms is not None:
            mask &= t >= from_ms
        if to_ms is not None:
            mask &= t <= to_ms
        return np.nonzero(mask)[0]

    def ticks_at(self, idx: np.ndarray) -> list[Tick]:
        t, p, b, a = self.view()
        names = self.pairs
        return [
            Tick(names[pi], ti, bi, ai)
            for ti, pi, bi, ai in zip(t[idx].tolist(), p[idx].tolist(), b[idx].tolist(), a[idx].tolist(), strict=True)
        ]

    def ticks(self, pair: str | None = None, from_ms: int | None = None, to_ms: int | None = None) -> list[Tick]:
        """Ticks in generation order, optionally one pair and a time range [from_ms, to_ms]."""
        return self.ticks_at(self.select(pair, from_ms, to_ms))

    def candles(
        self, pair: str, tf_ms: int, from_bucket: int | None, to_bucket: int | None, timeframe: str = ""
    ) -> list[Candle]:
        """Bid/ask OHLC per epoch-aligned bucket whose start lies in [from_bucket, to_bucket].

        open = earliest tick by time, close = latest by time, ties broken by generation order;
        `ticks` is the number of ticks in the bucket; a bucket without ticks has no candle.
        """
        t, p, b, a = self.view()
        mask = p == self.index[pair]
        buckets = bucket_starts(t, tf_ms)
        if from_bucket is not None:
            mask &= buckets >= from_bucket
        if to_bucket is not None:
            mask &= buckets <= to_bucket
        idx = np.nonzero(mask)[0]
        if len(idx) == 0:
            return []
        order = idx[np.lexsort((idx, t[idx], buckets[idx]))]
        bk = buckets[order]
        bid = b[order]
        ask = a[order]
        starts = np.flatnonzero(np.r_[True, bk[1:] != bk[:-1]])
        ends = np.r_[starts[1:], len(order)] - 1
        cols = (
            bk[starts],
            bid[starts], np.maximum.reduceat(bid, starts), np.minimum.reduceat(bid, starts), bid[ends],
            ask[starts], np.maximum.reduceat(ask, starts), np.minimum.reduceat(ask, starts), ask[ends],
            ends - starts + 1,
        )  # fmt: skip
        rows = zip(*(c.tolist() for c in cols), strict=True)
        return [
            Candle(pair, timeframe, bkt, bo, bh, bl, bc, ao, ah, al, ac, cnt, source="rest")
            for bkt, bo, bh, bl, bc, ao, ah, al, ac, cnt in rows
        ]

    def last_buckets(self, pair: str, tf_ms: int, up_to_bucket: int, count: int) -> int | None:
        """Start of the earliest of the last `count` non-empty buckets at or before `up_to_bucket`."""
        t, p, _, _ = self.view()
        sel = t[p == self.index[pair]]
        bks = np.unique(bucket_starts(sel, tf_ms))
        bks = bks[bks <= up_to_bucket]
        if len(bks) == 0 or count <= 0:
            return None
        return int(bks[-count:][0])


@dataclass(slots=True)
class StreamCandle:
    """The forming candle of one CHART:{epic}:{scale} item, as the stream shows it."""

    bucket_ms: int
    bid_open: float
    bid_high: float
    bid_low: float
    bid_close: float
    ask_open: float
    ask_high: float
    ask_low: float
    ask_close: float
    ticks: int
    open_ms: int
    close_ms: int
    ended: bool = False

    def add(self, time_ms: int, bid: float, ask: float) -> None:
        if time_ms < self.open_ms:
            self.open_ms, self.bid_open, self.ask_open = time_ms, bid, ask
        if time_ms >= self.close_ms:
            self.close_ms, self.bid_close, self.ask_close = time_ms, bid, ask
        self.bid_high = max(self.bid_high, bid)
        self.bid_low = min(self.bid_low, bid)
        self.ask_high = max(self.ask_high, ask)
        self.ask_low = min(self.ask_low, ask)
        self.ticks += 1


class StreamCandles:
    """Forming candles per pair and streamed scale; closed on the clock like IG's CONS_END=1.

    A tick for an already closed bucket (a late tick) changes nothing here: once IG has published
    CONS_END=1 the streamed candle is final. REST candles do include late ticks.
    """

    def __init__(self) -> None:
        self.current: dict[tuple[int, str], StreamCandle] = {}

    def add(
        self, pair_idx: int, time_ms: int, bid: float, ask: float
    ) -> tuple[list[tuple[str, StreamCandle]], list[tuple[str, StreamCandle]]]:
        """Apply a tick; returns (candles it closed, candles it changed), each as (scale, candle).

        A tick in a later bucket closes the previous candle first, so the stream always shows
        CONS_END=1 for a bucket before the first update of the next one.
        """
        closed: list[tuple[str, StreamCandle]] = []
        changed: list[tuple[str, StreamCandle]] = []
        for scale, ms in STREAM_SCALES_MS.items():
            bucket = time_ms - time_ms % ms
            key = (pair_idx, scale)
            c = self.current.get(key)
            if c is not None and (bucket < c.bucket_ms or (bucket == c.bucket_ms and c.ended)):
                continue
            if c is None or bucket > c.bucket_ms:
                if c is not None and not c.ended:
                    c.ended = True
                    closed.append((scale, c))
                c = StreamCandle(bucket, bid, bid, bid, bid, ask, ask, ask, ask, 1, time_ms, time_ms)
                self.current[key] = c
            else:
                c.add(time_ms, bid, ask)
            changed.append((scale, c))
        return closed, changed

    def close_due(self, now_ms: int) -> list[tuple[int, str, StreamCandle]]:
        """Mark and return the forming candles whose bucket has ended by `now_ms`."""
        out = []
        for (pi, scale), c in self.current.items():
            if not c.ended and c.bucket_ms + STREAM_SCALES_MS[scale] <= now_ms:
                c.ended = True
                out.append((pi, scale, c))
        return out


@dataclass(slots=True)
class DayStats:
    """IG's DAY_* fields (mid prices) for one pair; the day starts at midnight UK time."""

    day_ms: int = -1
    open_mid: float = math.nan
    high: float = math.nan
    low: float = math.nan
    last_mid: float = math.nan

    def add(self, time_ms: int, bid: float, ask: float) -> None:
        mid = (bid + ask) / 2
        day = self.day_ms
        if not (day <= time_ms < day + DAY_MS - HOUR_MS):  # a UK day is at least 23 h long
            day = bucket_start(time_ms, DAY_MS)
        if day > self.day_ms:
            self.day_ms, self.open_mid, self.high, self.low = day, mid, mid, mid
        elif day == self.day_ms:
            self.high = max(self.high, mid)
            self.low = min(self.low, mid)
        self.last_mid = mid


class FileFeed:
    """Replays a recorded tick file on the simulator clock: a tick is due once the clock reaches
    its own time. Ticks keep their recorded times; pairs outside the simulator's set are skipped."""

    def __init__(self, ticks: Iterable[Tick], pairs: Sequence[str]) -> None:
        wanted = set(pairs)
        self._ticks = sorted((t for t in ticks if t.pair in wanted), key=lambda t: t.time_ms)
        self._pos = 0

    @property
    def first_ms(self) -> int | None:
        return self._ticks[0].time_ms if self._ticks else None

    def due(self, now_ms: int) -> list[Tick]:
        start = self._pos
        end = start
        ticks = self._ticks
        while end < len(ticks) and ticks[end].time_ms <= now_ms:
            end += 1
        self._pos = end
        return ticks[start:end]

    @property
    def exhausted(self) -> bool:
        return self._pos >= len(self._ticks)
