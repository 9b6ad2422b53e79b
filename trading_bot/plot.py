"""Charts: mid candles with MA-200, Tenkan, Kijun, the Ichimoku cloud and the lagging line;
optionally ADX/+DI/-DI, Aroon and the Ultimate Oscillator in panels under the price, and the
volume profile beside it.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no display, no global figure
state), so it runs in the hardened service and in tests alike. Bars are placed by index, not
by time, so weekends and gaps leave no holes, exactly as the indicators count bars. The cloud
under each bar is what indicators() returns for it; the lagging line is the close drawn D-1 bars
back (display only: nothing is computed from the future). The oscillator panels share the price
panel's bar positions; the profile shares its price axis.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec

UP, DOWN = "#26a69a", "#ef5350"


def render_chart(
    frame: pd.DataFrame,
    path: str | Path,
    title: str | None = None,
    dpi: int = 110,
    technicals: pd.DataFrame | None = None,
    profile: pd.DataFrame | None = None,
) -> Path:
    """Write a PNG of an indicators() frame, with the oscillators of a technicals() frame of the
    same bars under it and a volume_profile() frame beside it when given; returns the path."""
    if frame.empty:
        raise ValueError("nothing to draw: the frame has no bars")
    if technicals is not None and not technicals.index.equals(frame.index):
        raise ValueError("the technicals frame must hold the same bars as the chart")
    path = Path(path)
    n = len(frame)
    x = np.arange(n)
    o, h, lo, c = (frame[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close"))

    panels = 3 if technicals is not None else 0
    side = profile is not None and not profile.empty
    fig = Figure(figsize=(max(8.0, min(24.0, n / 18)) + (2.0 if side else 0.0), 6.5 + 1.8 * panels), dpi=dpi)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1 + panels, 2 if side else 1, height_ratios=[5.0] + [1.6] * panels,
                            width_ratios=[6.0, 1.2] if side else None, wspace=0.02, hspace=0.08)  # fmt: skip
    ax = fig.add_subplot(grid[0, 0])

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
    if technicals is not None:
        _oscillators(fig, grid, ax, technicals, x)
        ax.tick_params(labelbottom=False)
    if side:
        _profile(fig.add_subplot(grid[0, 1], sharey=ax), profile)
    fig.subplots_adjust(left=0.06, right=0.98, top=0.95, bottom=0.06)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _oscillators(fig: Figure, grid: GridSpec, price_ax: Axes, tech: pd.DataFrame, x: np.ndarray) -> None:
    """ADX/+DI/-DI, Aroon and the Ultimate Oscillator, one panel each, on the price panel's bars."""
    specs = (
        (
            "ADX 14",
            (("adx_14", "ADX", "#2c3e50", 1.4), ("plus_di_14", "+DI", UP, 0.9), ("minus_di_14", "-DI", DOWN, 0.9)),
        ),
        ("Aroon 25", (("aroon_up_25", "up", UP, 0.9), ("aroon_down_25", "down", DOWN, 0.9))),
        ("UltOsc", (("ultosc", "7/14/28", "#8e44ad", 1.0),)),
    )
    axes = []
    for row, (label, lines) in enumerate(specs, start=1):
        ax = fig.add_subplot(grid[row, 0], sharex=price_ax)
        for col, name, color, width in lines:
            ax.plot(x, tech[col].to_numpy(dtype=float), color=color, linewidth=width, label=name)
        for level in (30, 70) if label == "UltOsc" else (25,) if label == "ADX 14" else ():
            ax.axhline(level, color="#95a5a6", linewidth=0.5, linestyle=":")
        ax.set_ylim(0, 100)
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(labelsize=7, labelbottom=False)
        ax.grid(True, linewidth=0.3, alpha=0.5)
        ax.legend(loc="upper left", fontsize=7, ncol=3, framealpha=0.8)
        axes.append(ax)
    axes[-1].tick_params(labelbottom=True)


def _profile(ax: Axes, profile: pd.DataFrame) -> None:
    """The volume profile as horizontal bars over its price bins: value area darker, POC marked."""
    low, high = profile["price_low"].to_numpy(dtype=float), profile["price_high"].to_numpy(dtype=float)
    ticks = profile["ticks"].to_numpy(dtype=float)
    inside = profile["in_value_area"].to_numpy(dtype=bool)
    colors = np.where(inside, "#5d6d7e", "#d5dbdb")
    ax.barh(low, ticks, height=np.maximum(high - low, 1e-12), align="edge", color=colors, edgecolor="white",
            linewidth=0.3)  # fmt: skip
    poc = profile.loc[profile["poc"]]
    if not poc.empty:
        mid = float((poc["price_low"].iloc[0] + poc["price_high"].iloc[0]) / 2)
        ax.axhline(mid, color="#e67e22", linewidth=1.0, label="POC")
        ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    ax.set_xlabel(f"ticks, last {profile.attrs.get('bars', len(profile))} bars", fontsize=7)
    ax.tick_params(labelleft=False, labelsize=7)
    ax.grid(True, axis="x", linewidth=0.3, alpha=0.5)
