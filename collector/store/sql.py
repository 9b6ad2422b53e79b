"""The writer's SQL: one flush's transactions (`write_batch`), and the flag and coverage writes
other modules share.

* Ticks: a live flush's few rows in one `INSERT ... ON CONFLICT DO NOTHING` from arrays (one
  round trip); many rows by binary COPY straight into `ticks` under a savepoint, and when a row
  is already stored (a re-subscription duplicate that slipped past the aggregator's filter, a
  retried flush) through a temp staging table and the same `ON CONFLICT`. Each tick is stored once.
* Candles: from arrays (staged by COPY when many), upserted with their full state (never
  deltas), guarded so a REST row is never overwritten and a forming row never overwrites a
  complete one; a correction is a newer full state of a closed candle.
* `NOTIFY candle_closed` for each closed candle, repair flags, coverage marks and tick gaps, in
  the transaction of the final rows they concern.

The candles of a flush reflect only ticks submitted before them, and those ticks commit in the
same transaction or an earlier one, so a reader never sees a candle the ticks table contradicts.
Every write is a pure function of the state written, so retrying a flush whose commit outcome
is unknown is harmless; each transaction reads its own id first, so that outcome can be asked
for later (`pg_xact_status`) instead of guessed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg

from ..models import Candle, CoverageMark, Flag
from ..vocabulary import (
    NOTIFY_CHANNEL,
    CandleSource,
    CoverageEnd,
    FlagReason,
    QuarantineKind,
    TickGapReason,
    dt_to_ms,
    encode_notice,
    ms_to_dt,
)
from .buffer import Batch, CandleKey, Chunk, MaybeCommitted, gaps_of, merge_gaps, split_rows
from .copy_codec import TICK_COLUMNS, TickCodec

if TYPE_CHECKING:
    from ..leadership import Fence

STAGE_TICKS = """CREATE TEMP TABLE IF NOT EXISTS _stage_ticks (
    time timestamptz, pair text, bid float8, ask float8, received_at timestamptz
) ON COMMIT DELETE ROWS"""
STAGE_CANDLES = """CREATE TEMP TABLE IF NOT EXISTS _stage_candles (
    pair text, timeframe text, bucket timestamptz,
    bid_open float8, bid_high float8, bid_low float8, bid_close float8,
    ask_open float8, ask_high float8, ask_low float8, ask_close float8,
    ticks integer, complete boolean, open_time timestamptz, close_time timestamptz
) ON COMMIT DELETE ROWS"""
_CANDLE_COLS = (
    "pair, timeframe, bucket, bid_open, bid_high, bid_low, bid_close, "
    "ask_open, ask_high, ask_low, ask_close, ticks, complete, open_time, close_time"
)
SMALL_ROWS = 2_000  # up to this many ticks (or candles) go in one statement, larger sets by COPY
_COPY_TICKS = f"COPY ticks ({TICK_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_COPY_STAGE_TICKS = f"COPY _stage_ticks ({TICK_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_INSERT_TICKS = f"INSERT INTO ticks ({TICK_COLUMNS}) SELECT {TICK_COLUMNS} FROM _stage_ticks ON CONFLICT DO NOTHING"
# A REST row (always complete) is never touched; a forming row never replaces a complete one;
# an imported row (sql/011) always gives way: the stream is the authority for a bucket it saw.
# Exact: an epoch-ms count (exactly representable as the float8 the interval product uses) times
# 1 ms, never a float seconds value passed to to_timestamp.
_INSERT_TICKS_ARRAYS = f"""INSERT INTO ticks ({TICK_COLUMNS})
SELECT 'epoch'::timestamptz + t * interval '1 millisecond', (%s::text[])[c + 1], b, a,
       CASE WHEN r < 0 THEN NULL ELSE 'epoch'::timestamptz + r * interval '1 millisecond' END
FROM unnest(%s::int2[], %s::int8[], %s::float8[], %s::float8[], %s::int8[]) AS x(c, t, b, a, r)
ON CONFLICT DO NOTHING"""
_CANDLE_ARRAYS = f"""unnest(%s::text[], %s::text[], %s::timestamptz[], %s::float8[], %s::float8[], %s::float8[],
    %s::float8[], %s::float8[], %s::float8[], %s::float8[], %s::float8[], %s::int[], %s::bool[],
    %s::timestamptz[], %s::timestamptz[]) AS s({_CANDLE_COLS})"""
_UPSERT_CANDLES_FROM = f"""
INSERT INTO candles AS c ({_CANDLE_COLS}, source, updated_at)
SELECT {_CANDLE_COLS}, '{CandleSource.STREAM}', now() FROM {{source}}
ON CONFLICT (pair, timeframe, bucket) DO UPDATE SET
    bid_open = EXCLUDED.bid_open, bid_high = EXCLUDED.bid_high, bid_low = EXCLUDED.bid_low,
    bid_close = EXCLUDED.bid_close, ask_open = EXCLUDED.ask_open, ask_high = EXCLUDED.ask_high,
    ask_low = EXCLUDED.ask_low, ask_close = EXCLUDED.ask_close, ticks = EXCLUDED.ticks,
    complete = EXCLUDED.complete, source = '{CandleSource.STREAM}', updated_at = now(),
    open_time = EXCLUDED.open_time, close_time = EXCLUDED.close_time
WHERE c.source = '{CandleSource.IMPORT}'
   OR (c.source = '{CandleSource.STREAM}' AND (EXCLUDED.complete OR NOT c.complete))
RETURNING pair, timeframe, bucket"""
_UPSERT_CANDLES = _UPSERT_CANDLES_FROM.format(source="_stage_candles")
_UPSERT_CANDLE_ARRAYS = _UPSERT_CANDLES_FROM.format(source=_CANDLE_ARRAYS)
_NOTIFY = "SELECT pg_notify(%s, x) FROM unnest(%s::text[]) AS x"
# Every flag, whoever raised it, goes through one SQL function with one conflict rule
# (sql/009_integrity.sql): re-open unless REST already replaced it, demote a complete stream row.
_FLAG = "SELECT flag_candle_repairs(%s::text[], %s::text[], %s::timestamptz[], %s::text[])"
_COVERAGE_OPEN = "INSERT INTO stream_coverage (started_at, opened_by) VALUES (%s, %s)"
_COVERAGE_CLOSE = (
    "UPDATE stream_coverage SET ended_at = greatest(started_at, %s), end_reason = %s WHERE ended_at IS NULL"
)
_TICK_GAPS = """INSERT INTO tick_gaps (pair, from_time, to_time, rows, reason)
SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[], %s::int[], %s::text[])"""
_QUARANTINE = "INSERT INTO quarantine (kind, pair, time, row_data, sqlstate, error) VALUES (%s, %s, %s, %s, %s, %s)"
_TICK_FIELDS = ("codes", "times", "bids", "asks", "received")
_XID = "SELECT pg_current_xact_id()::text::bigint, now()"
XACT_STATUS = "SELECT x, pg_xact_status(x::text::xid8) FROM unnest(%s::bigint[]) AS x"
# A fenced writer's transaction logged itself in flush_log first: it committed only if that row is
# there with its own start. pg_xact_status alone can be wrong after a failover: the promoted
# replica may have handed the same id to a later transaction if the COMMIT never reached it.
FENCED_XACT_STATUS = """SELECT x, CASE WHEN s = 'in progress' THEN s
                 WHEN EXISTS (SELECT 1 FROM flush_log f WHERE f.xid = x::text::xid8 AND f.xact_start = t)
                 THEN 'committed' ELSE 'aborted' END
  FROM unnest(%s::bigint[], %s::timestamptz[]) AS u(x, t), pg_xact_status(x::text::xid8) AS s"""

Conn = psycopg.Connection[Any]


class WriterError(RuntimeError):
    """A flush failed (database unreachable or refused); nothing was lost, retry later."""


def write_flags(conn: Conn | psycopg.Cursor[Any], flags: Iterable[Flag]) -> int:
    """Flag buckets for REST repair (the one rule, in SQL); returns the flags new or re-opened."""
    flags = list(flags)
    if not flags:
        return 0
    row = conn.execute(
        _FLAG,
        ([f.pair for f in flags], [f.timeframe for f in flags], [ms_to_dt(f.bucket_ms) for f in flags],
         [f.reason for f in flags]),
    ).fetchone()  # fmt: skip
    return int(row[0]) if row else 0


def write_coverage(conn: Conn | psycopg.Cursor[Any], marks: Iterable[CoverageMark], who: str) -> None:
    """Open and close `stream_coverage` intervals in order (one open interval at a time)."""
    for mark in marks:
        if mark.up:
            conn.execute(_COVERAGE_CLOSE, (ms_to_dt(mark.at_ms), CoverageEnd.CRASHED))  # never two open
            conn.execute(_COVERAGE_OPEN, (ms_to_dt(mark.at_ms), who))
        else:
            conn.execute(_COVERAGE_CLOSE, (ms_to_dt(mark.at_ms), mark.reason or CoverageEnd.OUTAGE))


def is_permanent(e: BaseException) -> bool:
    """A row the database will refuse however often it is sent (a CHECK, NOT NULL or value out of
    range, a trigger's RAISE), as opposed to an outage, a restart or a lock timeout."""
    state = getattr(e, "sqlstate", None) or ""
    return isinstance(e, psycopg.Error) and (state[:2] in ("22", "23") or state == "P0001") and state != "23505"


@dataclass(frozen=True)
class Refusal:
    """Why the database refused rows for good (the writer logs each kind once)."""

    kinds: tuple[str, ...]
    sqlstate: str | None
    constraint: str | None
    error: str


@dataclass(frozen=True)
class FlushStats:
    """What one successful flush committed, for logs and the metrics layer."""

    ticks: int  # tick rows sent
    ticks_inserted: int  # of which new (the rest were already stored)
    candles: dict[tuple[str, str], int]  # (timeframe, kind) -> rows written
    notifies: int
    repairs: int
    seconds: float  # from the first statement to the last commit
    oldest_submit_age_s: float  # age at commit of the oldest submission in this flush
    closed: tuple[tuple[str, str, int], ...]  # (pair, timeframe, bucket_ms) finalised
    committed_at_ms: int  # wall clock at the final commit
    copy_fallbacks: int = 0  # tick COPYs that met a stored row and took the ON CONFLICT path
    quarantined: dict[str, int] = field(default_factory=dict)  # kind -> rows refused for good
    refusal: Refusal | None = None


@dataclass(frozen=True)
class BatchOptions:
    codec: TickCodec
    origin: str  # who opens a coverage interval
    max_tx_ticks: int = 250_000
    monotonic: Callable[[], float] = time.monotonic
    wall_ms: Callable[[], int] = lambda: int(time.time() * 1000)
    # The leader's token: each transaction starts with leader_flush, so a stale leader's write is
    # refused by the database (SQLSTATE IGL01) and every committed one names its epoch. None:
    # unfenced (replay, import and tests that write without an election).
    fence: Fence | None = None


class BatchFailed(Exception):
    """A flush failed part-way: the first `committed_rows` tick rows (`inserted` of them new) are
    stored; `maybe` names a transaction whose COMMIT outcome is unknown and the rows it held."""

    def __init__(self, cause: psycopg.Error, committed_rows: int, inserted: int, maybe: MaybeCommitted | None,
                 maybe_inserted: int) -> None:  # fmt: skip
        super().__init__(f"{type(cause).__name__}: {cause}".strip())
        self.cause = cause
        self.committed_rows = committed_rows
        self.inserted = inserted
        self.maybe = maybe
        self.maybe_inserted = maybe_inserted


@dataclass
class _Tx:
    """One transaction as it goes: its id, and whether its COMMIT was under way."""

    rows: int = 0
    inserted: int = 0
    xid: int | None = None
    started: dt.datetime | None = None  # the transaction's now(), which flush_log records too
    committing: bool = False


@contextlib.contextmanager
def _transaction(cur: psycopg.Cursor[Any], tx: _Tx, opts: BatchOptions, chunks: Sequence[Chunk],
                 candles: Iterable[CandleKey] = ()) -> Iterator[None]:  # fmt: skip
    with cur.connection.transaction():
        row = cur.execute(_XID).fetchone()
        tx.xid, tx.started = (int(row[0]), row[1]) if row else (None, None)
        if opts.fence is not None:
            opts.fence.flush(cur, *_span(opts.codec.pairs, chunks, candles))
        yield
        tx.committing = True  # an error from here on is the COMMIT's: its outcome is unknown


def _span(pairs: Sequence[str], chunks: Sequence[Chunk],
          candles: Iterable[CandleKey]) -> tuple[list[str], dt.datetime | None, dt.datetime | None]:  # fmt: skip
    """The pairs and IG time span one transaction writes, for its flush_log row."""
    names: set[str] = set()
    lo: int | None = None
    hi: int | None = None
    for ch in chunks:
        if len(ch):
            names.update(pairs[int(c)] for c in np.unique(ch.codes))
            a, b = int(ch.times.min()), int(ch.times.max())
            lo, hi = (a if lo is None else min(lo, a)), (b if hi is None else max(hi, b))
    for pair, _tf, bucket_ms in candles:
        names.add(pair)
        lo, hi = (bucket_ms if lo is None else min(lo, bucket_ms)), (bucket_ms if hi is None else max(hi, bucket_ms))
    return sorted(names), (None if lo is None else ms_to_dt(lo)), (None if hi is None else ms_to_dt(hi))


@dataclass
class _Counts:
    copy_fallbacks: int = 0
    written: dict[tuple[str, str], int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)

    def add_written(self, more: dict[tuple[str, str], int]) -> int:
        for k, n in more.items():
            self.written[k] = self.written.get(k, 0) + n
        return sum(more.values())


def write_batch(conn: Conn, batch: Batch, opts: BatchOptions) -> FlushStats:
    """Write one batch: ticks in slices of at most `max_tx_ticks` rows, each committed on its
    own, the last one with the candles, NOTIFY and records, so candles never commit ahead of the
    ticks they reflect. A row the database refuses for good would fail every retry and, behind
    it, every later flush: then what is not yet committed is written again, refused rows isolated.

    Raises BatchFailed (after rollback) on any other database error."""
    start = opts.monotonic()
    counts = _Counts()
    slices = _slices(list(batch.chunks), opts.max_tx_ticks)
    committed = inserted = 0
    tx = _Tx()
    try:
        with conn.cursor() as cur:
            for sl in slices[:-1]:
                tx = _Tx(rows=sum(len(c) for c in sl))
                with _transaction(cur, tx, opts, sl):
                    tx.inserted = _write_ticks(cur, sl, opts.codec, counts)
                committed += tx.rows
                inserted += tx.inserted
            tx = _Tx(rows=sum(len(c) for c in slices[-1]))
            with _transaction(cur, tx, opts, slices[-1], batch.candles):
                tx.inserted = _write_ticks(cur, slices[-1], opts.codec, counts) if slices[-1] else 0
                if batch.candles:
                    counts.add_written(_write_candles(cur, batch.candles))
                _notify(cur, batch)
                _write_records(cur, batch, opts.origin)
            inserted += tx.inserted
    except psycopg.Error as e:
        if tx.committing or not is_permanent(e):
            maybe = MaybeCommitted(tx.xid, tx.rows, tx.started) if tx.committing and tx.xid is not None else None
            raise BatchFailed(e, committed, inserted, maybe, tx.inserted if maybe else 0) from e
        return _write_isolating(conn, batch, opts, e, start, committed, inserted, counts)
    return _stats(batch, opts, start, sent=committed + tx.rows, inserted=inserted, counts=counts)


def _slices(chunks: list[Chunk], max_rows: int) -> list[list[Chunk]]:
    slices: list[list[Chunk]] = [[]]
    size = 0
    for ch in chunks:
        while len(ch):
            room = max_rows - size
            if room <= 0:
                slices.append([])
                size, room = 0, max_rows
            part = ch if len(ch) <= room else ch[:room]
            slices[-1].append(part)
            size += len(part)
            ch = ch[len(part) :]
    return slices


def _write_ticks(cur: psycopg.Cursor[Any], chunks: Sequence[Chunk], codec: TickCodec, counts: _Counts) -> int:
    """Returns the rows new to the table. A few rows (a live flush) go in one statement with
    `ON CONFLICT DO NOTHING`: one round trip, which is what a flush's latency is made of. Many
    rows go by binary COPY straight into `ticks` inside a savepoint (every row is new, the
    common case); if one is already stored the savepoint rolls back and the rows go through the
    staging table and `ON CONFLICT DO NOTHING`. Each tick is stored once either way."""
    n = sum(len(c) for c in chunks)
    if n <= SMALL_ROWS:
        cols = [np.concatenate([getattr(c, f) for c in chunks]).tolist() for f in _TICK_FIELDS]
        cur.execute(_INSERT_TICKS_ARRAYS, (list(codec.pairs), *cols))
        inserted = max(cur.rowcount, 0)
        counts.copy_fallbacks += inserted < n  # rows already stored were met
        return inserted
    payload = codec.payload(chunks)
    try:
        with cur.connection.transaction(), cur.copy(_COPY_TICKS) as cp:  # a savepoint, not a commit
            for part in payload:
                cp.write(part)
        return n
    except psycopg.errors.UniqueViolation:
        counts.copy_fallbacks += 1
    with cur.copy(_COPY_STAGE_TICKS) as cp:
        for part in payload:
            cp.write(part)
    cur.execute(_INSERT_TICKS)
    return max(cur.rowcount, 0)


def _write_candles(
    cur: psycopg.Cursor[Any], candles: dict[CandleKey, tuple[Candle, str]]
) -> dict[tuple[str, str], int]:
    rows = [
        (
            c.pair, c.timeframe, ms_to_dt(c.bucket_ms),
            c.bid_open, c.bid_high, c.bid_low, c.bid_close,
            c.ask_open, c.ask_high, c.ask_low, c.ask_close,
            c.ticks, c.complete,
            None if c.open_ms is None else ms_to_dt(c.open_ms),
            None if c.close_ms is None else ms_to_dt(c.close_ms),
        )
        for c, _kind in candles.values()
    ]  # fmt: skip
    if len(rows) <= SMALL_ROWS:  # one statement, one round trip
        cur.execute(_UPSERT_CANDLE_ARRAYS, [list(col) for col in zip(*rows, strict=True)])
    else:
        with cur.copy(f"COPY _stage_candles ({_CANDLE_COLS}) FROM STDIN") as cp:
            for row in rows:
                cp.write_row(row)
        cur.execute(_UPSERT_CANDLES)
    written: dict[tuple[str, str], int] = {}
    for pair, tf, bucket in cur.fetchall():
        _, kind = candles[(pair, tf, dt_to_ms(bucket))]
        written[(tf, kind)] = written.get((tf, kind), 0) + 1
    return written


def _notify(cur: psycopg.Cursor[Any], batch: Batch) -> None:
    if batch.notify:
        cur.execute(_NOTIFY, (NOTIFY_CHANNEL, [encode_notice(*k) for k in sorted(batch.notify)]))


def _write_records(cur: psycopg.Cursor[Any], batch: Batch, origin: str, *, flags: bool = True) -> None:
    """Repair flags, coverage marks and tick gaps, in the transaction of the candles they
    concern: after the candles, so a flag demotes a row that closed before it was known."""
    if flags and batch.repairs:
        write_flags(cur, [Flag(p, tf, b, r) for (p, tf, b), r in sorted(batch.repairs.items())])
    write_coverage(cur, batch.coverage, origin)
    if batch.tick_gaps:
        keys = sorted(batch.tick_gaps)
        g = batch.tick_gaps
        cur.execute(
            _TICK_GAPS,
            ([k[0] for k in keys], [ms_to_dt(g[k][0]) for k in keys], [ms_to_dt(g[k][1]) for k in keys],
             [g[k][2] for k in keys], [k[1] for k in keys]),
        )  # fmt: skip


def _stats(batch: Batch, opts: BatchOptions, start: float, *, sent: int, inserted: int, counts: _Counts,
           refusal: Refusal | None = None) -> FlushStats:  # fmt: skip
    end = opts.monotonic()
    return FlushStats(
        ticks=sent,
        ticks_inserted=inserted,
        candles=counts.written,
        notifies=len(batch.notify),
        repairs=len(batch.repairs),
        seconds=end - start,
        oldest_submit_age_s=end - batch.first_submit if batch.first_submit is not None else 0.0,
        closed=tuple(sorted(batch.notify)),
        committed_at_ms=opts.wall_ms(),
        copy_fallbacks=counts.copy_fallbacks,
        quarantined=counts.refused,
        refusal=refusal,
    )


# ------------------------------------------------------------------ refused rows
def _write_isolating(conn: Conn, batch: Batch, opts: BatchOptions, first_error: psycopg.Error, start: float,
                     committed: int, inserted: int, counts: _Counts) -> FlushStats:  # fmt: skip
    """Everything not yet committed in one transaction, each part under a savepoint, halving a
    part the database refuses until the refused rows are found; those go to `quarantine` with
    the database's error. A refused candle's bucket is flagged for repair (it is not stored)."""
    _, rest = split_rows(batch.chunks, committed)  # the batch keeps its rows: a failure puts all back
    pairs = opts.codec.pairs
    tx = _Tx(rows=sum(len(c) for c in rest))
    try:
        with conn.cursor() as cur, _transaction(cur, tx, opts, list(rest), batch.candles):

            def quarantine(kind: str, pair: str | None, at_ms: int | None, data: dict[str, Any],
                           err: psycopg.Error) -> None:  # fmt: skip
                cur.execute(_QUARANTINE, (kind, pair, None if at_ms is None else ms_to_dt(at_ms),
                                          json.dumps(data), err.sqlstate or "", str(err).strip()[:1000]))  # fmt: skip
                counts.refused[kind] = counts.refused.get(kind, 0) + 1

            def bad_ticks(part: Chunk, err: psycopg.Error) -> None:
                for i in range(len(part)):
                    pair, t, rec = pairs[int(part.codes[i])], int(part.times[i]), int(part.received[i])
                    quarantine(QuarantineKind.TICK, pair, t, {"time_ms": t, "bid": float(part.bids[i]),
                               "ask": float(part.asks[i]), "received_ms": rec if rec >= 0 else None}, err)  # fmt: skip
                merge_gaps(batch.tick_gaps, gaps_of(pairs, part, TickGapReason.QUARANTINED))

            def good_ticks(part: Chunk) -> int:
                n = _write_ticks(cur, [part], opts.codec, counts)
                cur.execute("DELETE FROM _stage_ticks")  # staged rows are kept until commit: not twice
                return n

            tx.inserted = sum(_isolate(cur, ch, good_ticks, bad_ticks) for ch in rest)

            def good_candles(items: list[tuple[CandleKey, tuple[Candle, str]]]) -> int:
                got = _write_candles(cur, dict(items))
                cur.execute("DELETE FROM _stage_candles")
                return counts.add_written(got)

            def bad_candles(items: list[tuple[CandleKey, tuple[Candle, str]]], err: psycopg.Error) -> None:
                for key, (c, kind) in items:
                    data = {f: getattr(c, f) for f in c.__dataclass_fields__}
                    quarantine(QuarantineKind.CANDLE, c.pair, c.bucket_ms, {**data, "kind": kind}, err)
                    batch.notify.pop(key, None)  # not stored: nothing to announce
                    batch.repairs.setdefault(key, FlagReason.QUARANTINED)  # owed from REST instead

            _isolate(cur, list(batch.candles.items()), good_candles, bad_candles)
            _notify(cur, batch)

            def bad_flags(items: list[tuple[CandleKey, str]], err: psycopg.Error) -> None:
                for (p, tf, b), r in items:
                    quarantine(QuarantineKind.REPAIR, p, b, {"timeframe": tf, "reason": r}, err)

            def good_flags(items: list[tuple[CandleKey, str]]) -> int:
                return write_flags(cur, [Flag(p, tf, b, r) for (p, tf, b), r in items])

            _isolate(cur, sorted(batch.repairs.items()), good_flags, bad_flags)
            _write_records(cur, batch, opts.origin, flags=False)
    except psycopg.Error as e:
        maybe = MaybeCommitted(tx.xid, tx.rows, tx.started) if tx.committing and tx.xid is not None else None
        raise BatchFailed(e, committed, inserted, maybe, tx.inserted if maybe else 0) from e
    diag = getattr(first_error, "diag", None)
    refusal = Refusal(tuple(sorted(counts.refused)), first_error.sqlstate, getattr(diag, "constraint_name", None),
                      str(first_error).strip()[:300])  # fmt: skip
    return _stats(batch, opts, start, sent=committed + tx.rows, inserted=inserted + tx.inserted, counts=counts,
                  refusal=refusal)  # fmt: skip


def _isolate(cur: psycopg.Cursor[Any], items: Any, write: Callable[[Any], int],
             refuse: Callable[[Any, psycopg.Error], None]) -> int:  # fmt: skip
    """Write `items` (sliceable) under a savepoint; when the database refuses them for good,
    halve until each refused item is alone, and hand those to `refuse`. Other errors propagate."""
    if not len(items):
        return 0
    try:
        with cur.connection.transaction():
            return write(items)
    except psycopg.Error as e:
        if not is_permanent(e):
            raise
        if len(items) == 1:
            refuse(items, e)
            return 0
    mid = len(items) // 2
    return _isolate(cur, items[:mid], write, refuse) + _isolate(cur, items[mid:], write, refuse)
