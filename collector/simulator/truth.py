"""Ground-truth candles: what a perfect collector would have stored for a list of ticks.

Deliberately the plainest possible aggregation (stable sort by IG time, then first, max, min,
last and a count per bucket), independent of the collector's aggregator, so the demo and the
end-to-end and fault tests can judge the collector against it.
"""

from __future__ import annotations

from collections.abc import Iterable

from .. import timeframes as tfs
from ..models import Tick

Key = tuple[str, str, int]  # pair, timeframe, bucket start (epoch ms)
Row = tuple  # bid open/high/low/close, ask open/high/low/close, ticks


def reference_candles(ticks: Iterable[Tick], timeframes: Iterable[str]) -> dict[Key, Row]:
    ordered = sorted(ticks, key=lambda t: t.time_ms)  # stable: ties keep generation order
    out: dict[Key, list] = {}
    for tf in timeframes:
        n = tfs.length_ms(tf)
        for t in ordered:
            k = (t.pair, tf, t.time_ms - t.time_ms % n)
            c = out.get(k)
            if c is None:
                out[k] = [t.bid, t.bid, t.bid, t.bid, t.ask, t.ask, t.ask, t.ask, 1]
            else:
                c[1], c[2], c[3] = max(c[1], t.bid), min(c[2], t.bid), t.bid
                c[5], c[6], c[7] = max(c[5], t.ask), min(c[6], t.ask), t.ask
                c[8] += 1
    return {k: tuple(v) for k, v in out.items()}
