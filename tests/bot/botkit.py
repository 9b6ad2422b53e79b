"""Helpers for the bot tests: market-shaped candle series, fast inserts, reference indicators.

The references are written from docs/design.md §8's formulas with nothing shared with the SQL:
TA-Lib's SMA for MA-200 and plain pandas rolling windows (positional, i.e. bars) for Ichimoku.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import psycopg
import talib

from collector.market_hours import market_buckets

PRICE_COLUMNS = ("bid_open", "bid_high", "bid_low", "bid_close", "ask_open", "ask_high", "ask_low", "ask_close")

# A Wednesday, so a series starting here crosses its first weekend within days.
WEDNESDAY = dt.datetime(2025, 1, 8, 0, 0, tzinfo=dt.UTC)


def ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def utc(ms_: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms_ / 1000, tz=dt.UTC)


def market_series(
    timeframe_minutes: int,
    count: int,
    start: dt.datetime = WEDNESDAY,
    seed: int = 1,
    quiet: float = 0.02,
    outage_at: int | None = None,
    outage_bars: int = 0,
    price: float = 1.1,
) -> pd.DataFrame:
    """`count` bid/ask candles in FX market hours from `start`: weekends absent, a share of quiet
    buckets (no tick, no row) and optionally an outage of `outage_bars` missing buckets. Each
    field's spread differs, so a mid built from the wrong fields would not match."""
    rng = np.random.default_rng(seed)
    tf_ms = timeframe_minutes * 60_000
    buckets: list[int] = []
    skipped = 0
    for b in market_buckets(ms(start), ms(start) + 10_000 * 86_400_000, tf_ms):
        slot = len(buckets) + skipped
        if (outage_at is not None and outage_at <= slot < outage_at + outage_bars) or rng.random() < quiet:
            skipped += 1
            continue
        buckets.append(b)
        if len(buckets) == count:
            break
    steps = rng.normal(0, price * 4e-4, count)
    close = price + np.cumsum(steps)
    open_ = np.concatenate([[price], close[:-1]]) + rng.normal(0, price * 5e-5, count)
    high = np.maximum(open_, close) + np.abs(rng.normal(0, price * 2e-4, count))
    low = np.minimum(open_, close) - np.abs(rng.normal(0, price * 2e-4, count))
    out = {"bucket": pd.to_datetime(np.array(buckets, dtype="int64"), unit="ms", utc=True)}
    for name, mid in (("open", open_), ("high", high), ("low", low), ("close", close)):
        spread = np.abs(rng.normal(price * 1e-4, price * 3e-5, count))
        out[f"bid_{name}"] = np.round(mid - spread / 2, 6)
        out[f"ask_{name}"] = np.round(mid + spread / 2, 6)
    frame = pd.DataFrame(out)
    frame["bid_high"] = frame[["bid_open", "bid_high", "bid_close"]].max(axis=1)
    frame["ask_high"] = frame[["ask_open", "ask_high", "ask_close"]].max(axis=1)
    frame["bid_low"] = frame[["bid_open", "bid_low", "bid_close"]].min(axis=1)
    frame["ask_low"] = frame[["ask_open", "ask_low", "ask_close"]].min(axis=1)
    frame["ticks"] = rng.integers(1, 500, count)
    return frame


def insert_candles(
    conn: psycopg.Connection,
    pair: str,
    timeframe: str,
    frame: pd.DataFrame,
    complete: bool | list[bool] = True,
    source: str = "stream",
) -> int:
    """COPY a frame from `market_series` into candles (as the collector would write them)."""
    flags = [complete] * len(frame) if isinstance(complete, bool) else list(complete)
    cols = ("pair", "timeframe", "bucket", *PRICE_COLUMNS, "ticks", "complete", "source")
    with conn.cursor() as cur, cur.copy(f"COPY candles ({', '.join(cols)}) FROM STDIN") as copy:
        for row, done in zip(frame.itertuples(index=False), flags, strict=True):
            copy.write_row(
                (pair, timeframe, row.bucket.to_pydatetime(), *(getattr(row, c) for c in PRICE_COLUMNS),
                 int(row.ticks), done, source)
            )  # fmt: skip
    return len(frame)


def mid_bars(frame: pd.DataFrame) -> pd.DataFrame:
    """Mid OHLC (bid + ask) / 2 field by field, indexed by bucket."""
    out = pd.DataFrame(index=pd.DatetimeIndex(frame["bucket"], name="bucket"))
    for f in ("open", "high", "low", "close"):
        out[f] = (frame[f"bid_{f}"].to_numpy() + frame[f"ask_{f}"].to_numpy()) / 2
    return out


def rollup_bars(conn: psycopg.Connection, view: str, pair: str) -> pd.DataFrame:
    """The rolled-up bars of a pair as the rollup view holds them (bid/ask), oldest first."""
    rows = conn.execute(
        f"SELECT bucket, {', '.join(PRICE_COLUMNS)} FROM {view} WHERE pair = %s ORDER BY bucket", (pair,)
    ).fetchall()
    frame = pd.DataFrame(rows, columns=["bucket", *PRICE_COLUMNS])
    frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True)
    return frame


def reference_indicators(bars: pd.DataFrame, displacement: int = 26) -> pd.DataFrame:
    """docs/design.md §8 on a full series of mid bars (oldest first), windows in bars."""
    high, low, close = bars["high"], bars["low"], bars["close"]

    def mid_range(n: int) -> pd.Series:
        return (high.rolling(n).max() + low.rolling(n).min()) / 2

    out = bars[["open", "high", "low", "close"]].copy()
    out["ma_200"] = talib.SMA(close.to_numpy(dtype=float), timeperiod=200)
    out["tenkan"] = mid_range(9)
    out["kijun"] = mid_range(26)
    out["senkou_a"] = ((out["tenkan"] + out["kijun"]) / 2).shift(displacement - 1)
    out["senkou_b"] = mid_range(52).shift(displacement - 1)
    out["chikou_ref"] = close.shift(displacement - 1)
    return out


def sql_indicators(conn: psycopg.Connection, pair: str, timeframe: str, n: int, *args: object) -> pd.DataFrame:
    extra = "".join(", %s" for _ in args)
    rows = conn.execute(f"SELECT * FROM indicators(%s, %s, %s{extra})", (pair, timeframe, n, *args)).fetchall()
    cols = ["bucket", "open", "high", "low", "close", "ma_200", "tenkan", "kijun", "senkou_a", "senkou_b", "chikou_ref"]
    frame = pd.DataFrame(rows, columns=cols)
    frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True)
    return frame.set_index("bucket").astype(float)
