"""Strategies decide on the newest complete bar; the runner does everything else.

A strategy sees a frame from `MarketData.indicators()` (oldest first, `frame.attrs` naming pair,
timeframe and displacement), with the columns of `MarketData.technicals()` joined when it sets
`technicals = True`, and returns a `Signal` for the newest bar or None. It has no I/O and
no state, so the same frame always gives the same answer: replaying history, re-evaluating a
bar after a restart and unit tests all see what the live bot saw.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import pandas as pd

Side = Literal["buy", "sell"]


@dataclass(frozen=True)
class Signal:
    """A decision on one bar, with the values that justified it (stored as jsonb)."""

    pair: str
    timeframe: str
    bucket: dt.datetime  # start of the bar decided on (UTC)
    strategy: str
    side: Side
    price: float  # mid close of that bar
    indicators: dict[str, float | None] = field(default_factory=dict)
    reason: str = ""


@runtime_checkable
class Strategy(Protocol):
    """What the runner needs from a strategy (an optional `technicals: bool` attribute asks for the
    technicals() columns too: ADX, Aroon, Ultimate Oscillator, OBV z-score, MA-21/50)."""

    name: str
    bars_needed: int  # newest bars evaluate() looks at; the runner fetches that many

    def evaluate(self, frame: pd.DataFrame) -> Signal | None: ...


# The rest of the indicator set, recorded with a signal as context (they do not change the decision).
CONTEXT = (
    "ma_21",
    "ma_50",
    "adx_14",
    "plus_di_14",
    "minus_di_14",
    "aroon_up_25",
    "aroon_down_25",
    "ultosc",
    "obv_z_50",
)


def _value(x: object) -> float | None:
    v = float(x)  # type: ignore[arg-type]
    return None if math.isnan(v) else v


@dataclass(frozen=True)
class IchimokuMa200:
    """Trend-following: trade Tenkan/Kijun crosses only with the trend and outside the cloud.

    Buy on the bar where Tenkan crosses above Kijun while the close is above MA-200, above the
    cloud under the bar (both Senkou spans) and above the close D-1 bars back (Chikou confirms).
    Sell on the mirror image. No signal while any value is NULL: a cross seen with a partial
    window is not a cross.
    """

    name: str = "ichimoku_ma200"
    bars_needed: int = 2
    technicals: bool = True  # record ADX, Aroon, ... with each signal

    def evaluate(self, frame: pd.DataFrame) -> Signal | None:
        if len(frame) < 2:
            return None
        prev, bar = frame.iloc[-2], frame.iloc[-1]
        needed = ("close", "ma_200", "tenkan", "kijun", "senkou_a", "senkou_b", "chikou_ref")
        if bar[list(needed)].isna().any() or pd.isna(prev["tenkan"]) or pd.isna(prev["kijun"]):
            return None
        close = float(bar["close"])
        cloud_top = max(bar["senkou_a"], bar["senkou_b"])
        cloud_bottom = min(bar["senkou_a"], bar["senkou_b"])
        crossed_up = prev["tenkan"] <= prev["kijun"] and bar["tenkan"] > bar["kijun"]
        crossed_down = prev["tenkan"] >= prev["kijun"] and bar["tenkan"] < bar["kijun"]
        side: Side | None = None
        if crossed_up and close > bar["ma_200"] and close > cloud_top and close > bar["chikou_ref"]:
            side, reason = "buy", "Tenkan crossed above Kijun; close above MA-200, the cloud and the Chikou price"
        elif crossed_down and close < bar["ma_200"] and close < cloud_bottom and close < bar["chikou_ref"]:
            side, reason = "sell", "Tenkan crossed below Kijun; close below MA-200, the cloud and the Chikou price"
        if side is None:
            return None
        values = {k: _value(bar[k]) for k in needed}
        values |= {"prev_tenkan": _value(prev["tenkan"]), "prev_kijun": _value(prev["kijun"])}
        values |= {k: _value(bar[k]) for k in CONTEXT if k in frame.columns}
        bucket = frame.index[-1].to_pydatetime()
        return Signal(
            pair=str(frame.attrs["pair"]),
            timeframe=str(frame.attrs["timeframe"]),
            bucket=bucket,
            strategy=self.name,
            side=side,
            price=close,
            indicators=values | {"displacement": float(frame.attrs.get("displacement", 26))},
            reason=reason,
        )


STRATEGIES: dict[str, type[IchimokuMa200]] = {"ichimoku_ma200": IchimokuMa200}


def strategy_by_name(name: str) -> Strategy:
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; available: {', '.join(STRATEGIES)}") from None
