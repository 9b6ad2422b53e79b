"""What a restart continues from: open and recently closed stream candles, and each pair's
newest stored ticks, read on a connection of its own (never the flusher's, so it is safe
whenever it is called, writer thread running or not)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from .. import timeframes as tfs
from ..models import Candle, RecentTicks
from ..vocabulary import CandleSource, dt_to_ms, ms_to_dt
from .copy_codec import CopyFormatError, decode_recent_ticks
from .sql import WriterError

_CANDLES = f"""SELECT pair, timeframe, bucket, bid_open, bid_high, bid_low, bid_close,
           ask_open, ask_high, ask_low, ask_close, ticks, complete, open_time, close_time
    FROM candles
    WHERE source = '{CandleSource.STREAM}' AND timeframe = ANY(%s) AND pair = ANY(%s) AND bucket >= %s
    ORDER BY bucket"""
_RECENT_TICKS = """COPY (
    WITH newest AS (
        SELECT p.pair, (SELECT max(t.time) FROM ticks t WHERE t.pair = p.pair
                         AND t.time BETWEEN {lo} AND {hi}) AS m
        FROM unnest({pairs}::text[]) AS p(pair))
    SELECT array_position({pairs}::text[], t.pair)::int4 - 1,
           (extract(epoch FROM t.time) * 1000)::int8, t.bid::float8, t.ask::float8
    FROM newest JOIN ticks t ON t.pair = newest.pair
     AND t.time BETWEEN newest.m - {w} * interval '1 millisecond' AND newest.m
) TO STDOUT (FORMAT BINARY)"""


@dataclass(frozen=True)
class ResumeState:
    """What a restart continues from (see `Aggregator.resume`)."""

    open_candles: tuple[Candle, ...]
    closed_candles: tuple[Candle, ...]
    last_ticks: RecentTicks


@dataclass(frozen=True)
class ResumeWindow:
    """Which rows a restart needs, all relative to the market clock at start."""

    now_ms: int
    timeframes: tuple[str, ...]
    close_grace_ms: int
    lateness_ms: int
    dedupe_window_ms: int
    future_tolerance_ms: int = 30_000
    tick_lookback_ms: int = 7 * 86_400_000


def load_state(url: str, pairs: Sequence[str], window: ResumeWindow, *, connect_timeout_s: int = 5,
               application_name: str = "ig-collector resume") -> ResumeState:  # fmt: skip
    """Open buckets (not complete, not yet past close at `now_ms`), recently closed buckets a
    late tick may still correct, and each pair's newest stored ticks (within the dedupe window
    of its last one) so a re-subscription snapshot is recognised.

    An incomplete row already past its close (the collector was down when it ended) comes back
    as a closed candle with complete=False: late ticks merge into it, and it is never claimed
    complete here (REST repair is the backfill's job). Raises WriterError when the database
    cannot be read."""
    w = window
    lens = {tf: tfs.length_ms(tf) for tf in w.timeframes}
    horizon = w.now_ms - max(lens.values()) - w.close_grace_ms - w.lateness_ms
    try:
        with psycopg.connect(url, connect_timeout=connect_timeout_s, application_name=application_name) as conn:
            rows = conn.execute(_CANDLES, (list(w.timeframes), list(pairs), ms_to_dt(horizon))).fetchall()
            last_ticks = _recent_ticks(
                conn.cursor(), pairs, lo=ms_to_dt(w.now_ms - w.tick_lookback_ms),
                hi=ms_to_dt(w.now_ms + w.future_tolerance_ms), window_ms=w.dedupe_window_ms,
            )  # fmt: skip
    except (psycopg.Error, CopyFormatError) as e:
        raise WriterError(f"loading state failed: {e}") from e
    open_, closed = [], []
    for r in rows:
        b = dt_to_ms(r[2])
        c = Candle(
            r[0], r[1], b, *r[3:11], r[11], bool(r[12]), CandleSource.STREAM,
            None if r[13] is None else dt_to_ms(r[13]), None if r[14] is None else dt_to_ms(r[14]),
        )  # fmt: skip
        close = b + lens[c.timeframe] + w.close_grace_ms
        if not c.complete and close > w.now_ms:
            open_.append(c)
        elif close + w.lateness_ms >= w.now_ms:
            closed.append(c)
    return ResumeState(tuple(open_), tuple(closed), last_ticks)


def _recent_ticks(cur: psycopg.Cursor[Any], pairs: Sequence[str], *, lo: dt.datetime, hi: dt.datetime,
                  window_ms: int) -> RecentTicks:  # fmt: skip
    """Each pair's stored ticks within `window_ms` of its newest (searched in [lo, hi]), by
    binary COPY straight into numpy: no Python object per row (see RecentTicks)."""
    stmt = sql.SQL(_RECENT_TICKS).format(
        lo=sql.Literal(lo), hi=sql.Literal(hi), pairs=sql.Literal(list(pairs)), w=sql.Literal(window_ms)
    )
    with cur.copy(stmt) as cp:
        data = b"".join(bytes(chunk) for chunk in cp)
    return decode_recent_ticks(data, pairs)
