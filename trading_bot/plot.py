"""Charts: mid candles with MA-200, Tenkan, Kijun, the Ichimoku cloud and the lagging line.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no display, no global figure
state), so it runs in the hardened service and in tests alike. Bars are placed by index, not
by time, so weekends and gaps leave no holes, exactly as the indicators count bars. The cloud
under each bar is what indicators() returns for it; the lagging line is the close drawn D-1 bars
back (display only: nothing is computed from the future).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

UP, DOWN = "#26a69a", "#ef5350"


def render_chart(frame: pd.DataFrame, path: str | Path, title: str | None = None, dpi: int = 110) -> Path:
    """Write a PNG of an indicators() frame; returns the path."""
    if frame.empty:
        raise ValueError("nothing to draw: the frame has no bars")
    path = Path(path)
    n = len(frame)
    x = np.arange(n)
    o, h, lo, c = (frame[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close"))

    fig = Figure(figsize=(max(8.0, min(24.0, n / 18)), 6.5), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)

    a, b = frame["senkou_a"].to_numpy(dtype=float), frame["senkou_b"].to_numpy(dtype=float)
    ax.fill_between(x, a, b, where=a >= b, color=UP, alpha=0.18, linewidth=0, interpolate=True, label="cloud (bullish)")
    ax.fill_between(
        x, a, b, where=a < b, color=DOWN, alpha=0.18, linewidth=0, interpolate=True, label="cloud (bearish)"
    )
    ax.plot(x, a, color=UP, linewidth=0.6, alpha=0.7)
    ax.plot(x, b, color=DOWN, linewidth=0.6, alpha=0.7)

    rising = c >= o
    colors = np.where(rising, UP, DOWN)
    ax.vlines(x, lo, h, colors=colors, linewidth=0.7)
    body_low, body_high = np.minimum(o, c), np.maximum(o, c)
    ax.bar(x, np.maximum(body_high - body_low, (np.nanmax(h) - np.nanmin(lo)) * 1e-4), bottom=body_low,
           width=0.6, color=colors, edgecolor=colors, linewidth=0.4)  # fmt: skip

    ax.plot(x, frame["ma_200"].to_numpy(dtype=float), color="#1f3b99", linewidth=1.6, label="MA-200")
    ax.plot(x, frame["tenkan"].to_numpy(dtype=float), color="#f39c12", linewidth=0.9, label="Tenkan (9)")
    ax.plot(x, frame["kijun"].to_numpy(dtype=float), color="#8e44ad", linewidth=0.9, label="Kijun (26)")
    shift = int(frame.attrs.get("displacement", 26)) - 1
    if 0 < shift < n:
        ax.plot(x[:-shift], c[shift:], color="#7f8c8d", linewidth=0.8, linestyle="--", label="Chikou")

    ticks = np.linspace(0, n - 1, num=min(8, n), dtype=int)
    ax.set_xticks(ticks)
    ax.set_xticklabels([frame.index[i].strftime("%m-%d %H:%M") for i in ticks], rotation=0, fontsize=8)
    ax.set_xlim(-1, n)
    ax.grid(True, linewidth=0.3, alpha=0.5)
    ax.set_ylabel("mid price")
    pair, tf = frame.attrs.get("pair", ""), frame.attrs.get("timeframe", "")
    last = frame.index[-1].strftime("%Y-%m-%d %H:%M UTC")
    ax.set_title(title or f"{pair} {tf}: {n} bars to {last}")
    ax.legend(loc="upper left", fontsize=8, ncol=3, framealpha=0.8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
