"""Coarser candles from finer ones: a 15m candle is exactly its three 5m candles.

Why this exists: IG charges one REST point per candle, so a 15m candle bought when its three
5m candles are already known is a point spent twice. The warm-up, the importer (1m or 5m input
fills 15m) and the repair worker compose instead of buying.

The rule is strict, because a composed candle is stored as `complete`: a coarse bucket is built
only when *every* fine bucket inside it is present and complete. A fine bucket with no candle
may be an empty bucket at IG (no tick) or one we never got; the two cannot be told apart here,
so such a coarse bucket is left alone (the caller buys it or leaves it missing). Per side:
open of the first, close of the last, highest high, lowest low; ticks add up.
"""

from __future__ import annotations

from collections.abc import Iterable

from . import timeframes as tfs
from .models import Candle
from .vocabulary import CandleSource

# When inputs disagree, the composed row is only as authoritative as its weakest input: an
# imported row is replaced by REST or the stream, a REST row by nothing but a newer REST row.
_WEAKEST_FIRST = (CandleSource.IMPORT, CandleSource.REST, CandleSource.STREAM)


def _source(parts: list[Candle]) -> str:
    sources = {c.source for c in parts}
    return next((s for s in _WEAKEST_FIRST if s in sources), parts[0].source)


def compose(candles: Iterable[Candle], target_tf: str) -> list[Candle]:
    """Candles of `target_tf` for every bucket whose finer candles are all present and complete.

    Inputs may mix pairs and come in any order, but must share one timeframe that divides
    `target_tf`; duplicates of one bucket are an error (the caller must pick one first).
    Output is ordered by pair, then bucket.
    """
    items = list(candles)
    if not items:
        return []
    source_tfs = {c.timeframe for c in items}
    if len(source_tfs) != 1:
        raise ValueError(f"compose needs candles of one timeframe, got {', '.join(sorted(source_tfs))}")
    (source_tf,) = source_tfs
    fine_ms, coarse_ms = tfs.length_ms(source_tf), tfs.length_ms(target_tf)
    if coarse_ms <= fine_ms or coarse_ms % fine_ms:
        raise ValueError(f"cannot compose {target_tf} from {source_tf}: {target_tf} is not a multiple of it")
    per = coarse_ms // fine_ms
    groups: dict[tuple[str, int], dict[int, Candle]] = {}
    for c in items:
        if c.bucket_ms % fine_ms:
            raise ValueError(f"{c.pair} {source_tf} bucket {c.bucket_ms} is not aligned to {source_tf}")
        slots = groups.setdefault((c.pair, tfs.bucket_start(c.bucket_ms, coarse_ms)), {})
        if c.bucket_ms in slots:
            raise ValueError(f"{c.pair} {source_tf} bucket {c.bucket_ms} given twice")
        slots[c.bucket_ms] = c
    out = []
    for (pair, bucket), slots in sorted(groups.items()):
        if len(slots) != per or not all(c.complete for c in slots.values()):
            continue
        parts = [slots[b] for b in sorted(slots)]
        first, last = parts[0], parts[-1]
        out.append(
            Candle(
                pair=pair, timeframe=target_tf, bucket_ms=bucket,
                bid_open=first.bid_open, bid_high=max(c.bid_high for c in parts),
                bid_low=min(c.bid_low for c in parts), bid_close=last.bid_close,
                ask_open=first.ask_open, ask_high=max(c.ask_high for c in parts),
                ask_low=min(c.ask_low for c in parts), ask_close=last.ask_close,
                ticks=sum(c.ticks for c in parts), complete=True, source=_source(parts),
                open_ms=first.open_ms, close_ms=last.close_ms,
            )
        )  # fmt: skip
    return out
