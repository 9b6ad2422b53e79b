"""Helpers for the technicals() and volume_profile() tests: market-shaped prices, TA-Lib references.

Prices are not a plain random walk: the series switches between trends, quiet ranges, volatility
bursts and runs of flat bars (high = low), on the bucket calendar of `botkit.market_series`
(weekends absent, quiet buckets, optional outage). The references use TA-Lib and plain Python
loops, nothing shared with the SQL.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import psycopg
import talib

from .botkit import WEDNESDAY, market_series

TECHNICAL_COLUMNS = (
    "open", "high", "low", "close", "ticks", "ma_21", "ma_50", "ma_200", "adx_14", "plus_di_14", "minus_di_14",
    "aroon_up_25", "aroon_down_25", "ultosc", "obv_z_50", "tenkan", "kijun", "senkou_a", "senkou_b", "chikou_ref",
)  # fmt: skip
WARMUP = 250  # technicals() seeds Wilder smoothing this many bars before its first returned bar


def shaped_series(
    timeframe_minutes: int,
    count: int,
    start: dt.datetime = WEDNESDAY,
    seed: int = 1,
    price: float = 1.1,
    flat_share: float = 0.04,
    flat_run_at: int | None = None,
    flat_run: int = 0,
    **calendar: int,
) -> pd.DataFrame:
    """`count` bid/ask candles in the format of `market_series` with regime-switching prices:
    segments of 20-200 bars that trend up or down, range, or burst, a share of single flat bars
    (bid and ask each with open = high = low = close), and optionally a run of `flat_run`
    identical flat bars from bar `flat_run_at` (no price change at all: OBV's deviation is 0)."""
    frame = market_series(timeframe_minutes, count, start, seed=seed, price=price, **calendar)
    rng = np.random.default_rng(seed + 1000)
    close = np.empty(count)
    vol = np.empty(count)
    p, i = price, 0
    while i < count:
        length = int(rng.integers(20, 200))
        kind = rng.choice(["up", "down", "range", "burst"])
        drift = {"up": 2e-4, "down": -2e-4, "range": 0.0, "burst": 0.0}[kind] * price
        sigma = {"up": 2e-4, "down": 2e-4, "range": 1e-4, "burst": 8e-4}[kind] * price
        anchor = p
        for k in range(i, min(count, i + length)):
            pull = (anchor - p) * 0.1 if kind == "range" else 0.0
            p = p + drift + pull + rng.normal(0, sigma)
            close[k], vol[k] = p, sigma
        i += length
    open_ = np.concatenate([[price], close[:-1]]) + rng.normal(0, price * 3e-5, count)
    high = np.maximum(open_, close) + np.abs(rng.normal(0, vol))
    low = np.minimum(open_, close) - np.abs(rng.normal(0, vol))
    flat = rng.random(count) < flat_share
    if flat_run_at is not None:
        flat[flat_run_at : flat_run_at + flat_run] = True
        close[flat_run_at : flat_run_at + flat_run] = close[flat_run_at]
    for arr in (open_, high, low):
        arr[flat] = close[flat]
    spread = np.round(np.abs(rng.normal(price * 1e-4, price * 2e-5, count)), 6)
    if flat_run_at is not None:
        spread[flat_run_at : flat_run_at + flat_run] = spread[flat_run_at]  # the same mid every bar
    for name, mid in (("open", open_), ("high", high), ("low", low), ("close", close)):
        bid = np.round(mid - spread / 2, 6)
        frame[f"bid_{name}"] = bid
        frame[f"ask_{name}"] = np.round(bid + spread, 6)
    for side in ("bid", "ask"):
        body = frame[[f"{side}_open", f"{side}_close"]]
        frame[f"{side}_high"] = np.maximum(frame[f"{side}_high"], body.max(axis=1))
        frame[f"{side}_low"] = np.minimum(frame[f"{side}_low"], body.min(axis=1))
    return frame


def mid_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Mid OHLC (bid + ask) / 2 and ticks of a bid/ask frame, indexed by bucket."""
    out = pd.DataFrame(index=pd.DatetimeIndex(frame["bucket"], name="bucket"))
    for f in ("open", "high", "low", "close"):
        out[f] = (frame[f"bid_{f}"].to_numpy() + frame[f"ask_{f}"].to_numpy()) / 2
    out["ticks"] = frame["ticks"].to_numpy(dtype=float)
    return out


def _mid_range(high: pd.Series, low: pd.Series, n: int) -> pd.Series:
    return (high.rolling(n).max() + low.rolling(n).min()) / 2


def reference_technicals(bars: pd.DataFrame, n: int) -> pd.DataFrame:
    """The last `n` bars of a whole mid series (oldest first) with the issue's TA-Lib definitions.
    ADX and the DIs run over exactly the slice technicals() seeds them on: the n bars and up to
    250 before them."""
    h, lo, c, v = (bars[k].to_numpy(dtype=float) for k in ("high", "low", "close", "ticks"))
    out = bars[["open", "high", "low", "close", "ticks"]].copy()
    for period in (21, 50, 200):
        out[f"ma_{period}"] = talib.SMA(c, timeperiod=period)
    out["aroon_down_25"], out["aroon_up_25"] = talib.AROON(h, lo, timeperiod=25)
    out["ultosc"] = talib.ULTOSC(h, lo, c, timeperiod1=7, timeperiod2=14, timeperiod3=28)
    obv = talib.OBV(c, v)
    std = talib.STDDEV(obv, timeperiod=50, nbdev=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["obv_z_50"] = np.where(std == 0, np.nan, (obv - talib.SMA(obv, timeperiod=50)) / std)
    high, low = bars["high"], bars["low"]
    out["tenkan"] = _mid_range(high, low, 9)
    out["kijun"] = _mid_range(high, low, 26)
    out["senkou_a"] = ((out["tenkan"] + out["kijun"]) / 2).shift(25)
    out["senkou_b"] = _mid_range(high, low, 52).shift(25)
    out["chikou_ref"] = bars["close"].shift(25)
    out = out.tail(n).copy()
    first = max(0, len(bars) - n - WARMUP)
    hs, ls, cs = h[first:], lo[first:], c[first:]
    out["adx_14"] = talib.ADX(hs, ls, cs, timeperiod=14)[-len(out) :]
    out["plus_di_14"] = talib.PLUS_DI(hs, ls, cs, timeperiod=14)[-len(out) :]
    out["minus_di_14"] = talib.MINUS_DI(hs, ls, cs, timeperiod=14)[-len(out) :]
    return out[list(TECHNICAL_COLUMNS)]


def sql_technicals(conn: psycopg.Connection, pair: str, timeframe: str, n: int, *args: object) -> pd.DataFrame:
    extra = "".join(", %s" for _ in args)
    cur = conn.execute(f"SELECT * FROM technicals(%s, %s, %s{extra})", (pair, timeframe, n, *args))
    cols = [d.name for d in cur.description]
    frame = pd.DataFrame(cur.fetchall(), columns=cols)
    frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True)
    return frame.set_index("bucket").astype(float)


def assert_same_technicals(sql: pd.DataFrame, ref: pd.DataFrame, columns: tuple[str, ...] = TECHNICAL_COLUMNS) -> None:
    """Same bars, and every column equal to 1e-9 with NULLs (NaN) in the same places."""
    assert list(sql.index) == list(ref.index), "same bars, oldest first"
    for col in columns:
        np.testing.assert_allclose(sql[col].to_numpy(), ref[col].to_numpy(), rtol=0, atol=1e-9, err_msg=col)


def reference_profile(bars: pd.DataFrame, rows: int = 24, value_area: float = 0.70) -> list[tuple]:
    """The issue's volume profile in plain Python loops: (row, low, high, ticks, poc, in_value_area)."""
    lo, hi = float(bars["low"].min()), float(bars["high"].max())
    w = (hi - lo) / rows
    edges = [(lo + (i - 1) * w, hi if i == rows else lo + i * w) for i in range(1, rows + 1)]
    bins = []
    for i, (b_lo, b_hi) in enumerate(edges, start=1):
        s = 0.0
        for h, low, t in zip(bars["high"], bars["low"], bars["ticks"], strict=True):
            if h == low:
                s += float(t) if low >= b_lo and (low < b_hi or i == rows) else 0.0
            else:
                s += t * (max(0.0, min(h, b_hi) - max(low, b_lo)) / (h - low))
        bins.append(s)
    total, best = 0.0, 0
    for i, s in enumerate(bins):
        total += s
        if s > bins[best]:
            best = i
    va_lo = va_hi = best
    acc = bins[best]
    while acc < value_area * total:
        below = bins[va_lo - 1] if va_lo > 0 else None
        above = bins[va_hi + 1] if va_hi < rows - 1 else None
        if below is None and above is None:
            break
        if above is not None and (below is None or above >= below):
            va_hi += 1
            acc += above
        else:
            va_lo -= 1
            acc += below
    return [(i + 1, edges[i][0], edges[i][1], bins[i], i == best, va_lo <= i <= va_hi) for i in range(rows)]


def rollup_mid(conn: psycopg.Connection, view: str, pair: str) -> pd.DataFrame:
    """A rollup's bars as mid OHLC and ticks, oldest first, exactly as the view holds them."""
    rows = conn.execute(
        f"SELECT bucket, (bid_open + ask_open) / 2, (bid_high + ask_high) / 2, (bid_low + ask_low) / 2,"
        f" (bid_close + ask_close) / 2, ticks FROM {view} WHERE pair = %s ORDER BY bucket",
        (pair,),
    ).fetchall()
    frame = pd.DataFrame(rows, columns=["bucket", "open", "high", "low", "close", "ticks"])
    frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True)
    return frame.set_index("bucket").astype(float)
