"""The database writer: ticks and candles into TimescaleDB, fast, idempotent and outage-proof.

Shape. Producers (the pipeline, on the stream's consumer thread) `submit_*` into in-memory
buffers under a lock and never wait for the database; one flusher (`WriterThread`, or replay's
loop) calls `flush()`, which swaps the buffers out and writes them:

* ticks: binary COPY (built with numpy, no Python per row) straight into `ticks` under a
  savepoint; when a row is already stored (a re-subscription duplicate that slipped past the
  aggregator's filter, a retried flush) the savepoint rolls back and the rows go through a temp
  staging table and `INSERT ... ON CONFLICT DO NOTHING`, so each tick is stored once;
* candles: staged the same way and upserted with their full state (never deltas), guarded so a
  REST row is never overwritten and a forming row never overwrites a complete one; a
  correction is just a newer full state of a closed candle;
* `NOTIFY candle_closed` for each closed candle and `candle_repairs` rows for buckets that
  received a too-late tick, in the same transaction as the final row.

The candles in a flush reflect only ticks submitted before them, and those ticks commit in the
same transaction or an earlier one, so a reader never sees a candle that the ticks table
contradicts (the other way round, ticks may be ahead of the forming row by one interval).

Every write is a pure function of the state being written, so retrying a flush whose commit
outcome is unknown (the connection died after COMMIT was sent) is harmless.

Outages. When the database is unreachable `flush()` raises `WriterError`, puts everything back
and the caller retries with exponential backoff. Submissions keep being accepted into a buffer
bounded at `buffer_max_ticks` tick rows: at the bound the oldest tick rows are dropped (logged,
counted in `ticks_dropped`). Candle state is held by the aggregator and the pending candle map
is bounded by the number of buckets, so candles stay exact even when tick rows are lost.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
from psycopg import sql

from . import timeframes as tfs
from .aggregator import CandleClosed, CandleCorrected, Event, RepairNeeded
from .models import Candle, CoverageMark, Flag, RecentTicks
from .vocabulary import NOTIFY_CHANNEL, STREAM_KINDS, dt_to_ms, encode_notice, ms_to_dt

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger(__name__)

EPOCH_2000_MS = 946_684_800_000  # PostgreSQL's binary timestamps count microseconds from 2000-01-01
UTC = dt.UTC
KINDS = STREAM_KINDS
notify_payload = encode_notice

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER = struct.pack("!h", -1)
# One row of `_recent_ticks`' binary COPY: field count, then (length, value) per column.
_RECENT_ROW = np.dtype(
    [("n", ">i2"), ("l1", ">i4"), ("code", ">i4"), ("l2", ">i4"), ("t", ">i8"),
     ("l3", ">i4"), ("b", ">f8"), ("l4", ">i4"), ("a", ">f8")]
)  # fmt: skip

_STAGE_TICKS = """CREATE TEMP TABLE IF NOT EXISTS _stage_ticks (
    time timestamptz, pair text, bid float8, ask float8, received_at timestamptz
) ON COMMIT DELETE ROWS"""
_STAGE_CANDLES = """CREATE TEMP TABLE IF NOT EXISTS _stage_candles (
    pair text, timeframe text, bucket timestamptz,
    bid_open float8, bid_high float8, bid_low float8, bid_close float8,
    ask_open float8, ask_high float8, ask_low float8, ask_close float8,
    ticks integer, complete boolean, open_time timestamptz, close_time timestamptz
) ON COMMIT DELETE ROWS"""
_CANDLE_COLS = (
    "pair, timeframe, bucket, bid_open, bid_high, bid_low, bid_close, "
    "ask_open, ask_high, ask_low, ask_close, ticks, complete, open_time, close_time"
)
_INSERT_TICKS = (
    "INSERT INTO ticks (time, pair, bid, ask, received_at) "
    "SELECT time, pair, bid, ask, received_at FROM _stage_ticks ON CONFLICT DO NOTHING"
)
# A REST row (always complete) is never touched; a forming row never replaces a complete one;
# an imported row (sql/011) always gives way: the stream is the authority for a bucket it saw.
_UPSERT_CANDLES = f"""
INSERT INTO candles AS c ({_CANDLE_COLS}, source, updated_at)
SELECT {_CANDLE_COLS}, 'stream', now() FROM _stage_candles
ON CONFLICT (pair, timeframe, bucket) DO UPDATE SET
    bid_open = EXCLUDED.bid_open, bid_high = EXCLUDED.bid_high, bid_low = EXCLUDED.bid_low,
    bid_close = EXCLUDED.bid_close, ask_open = EXCLUDED.ask_open, ask_high = EXCLUDED.ask_high,
    ask_low = EXCLUDED.ask_low, ask_close = EXCLUDED.ask_close, ticks = EXCLUDED.ticks,
    complete = EXCLUDED.complete, source = 'stream', updated_at = now(),
    open_time = EXCLUDED.open_time, close_time = EXCLUDED.close_time
WHERE c.source = 'import' OR (c.source = 'stream' AND (EXCLUDED.complete OR NOT c.complete))
RETURNING pair, timeframe, bucket"""
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


def write_flags(conn: psycopg.Connection | psycopg.Cursor[Any], flags: Iterable[Flag]) -> int:
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


def write_coverage(conn: psycopg.Connection | psycopg.Cursor[Any], marks: Iterable[CoverageMark], who: str) -> None:
    """Open and close `stream_coverage` intervals in order (one open interval at a time)."""
    for mark in marks:
        if mark.up:
            conn.execute(_COVERAGE_CLOSE, (ms_to_dt(mark.at_ms), "crashed"))  # never two open at once
            conn.execute(_COVERAGE_OPEN, (ms_to_dt(mark.at_ms), who))
        else:
            conn.execute(_COVERAGE_CLOSE, (ms_to_dt(mark.at_ms), mark.reason or "outage"))


def is_permanent(e: BaseException) -> bool:
    """A row the database will refuse however often it is sent (a CHECK, NOT NULL or value out of
    range, a trigger's RAISE), as opposed to an outage, a restart or a lock timeout."""
    state = getattr(e, "sqlstate", None) or ""
    return isinstance(e, psycopg.Error) and (state[:2] in ("22", "23") or state == "P0001") and state != "23505"


class WriterError(RuntimeError):
    """A flush failed (database unreachable or refused); nothing was lost, retry later."""


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


@dataclass(frozen=True)
class ResumeState:
    """What a restart continues from (see `Aggregator.resume`)."""

    open_candles: tuple[Candle, ...]
    closed_candles: tuple[Candle, ...]
    last_ticks: RecentTicks


@dataclass
class _Chunk:
    codes: np.ndarray  # int16 index into pairs
    times: np.ndarray  # int64 ms
    bids: np.ndarray
    asks: np.ndarray
    received: np.ndarray  # int64 ms, -1 = NULL
    submitted: float  # monotonic time of submission

    def __len__(self) -> int:
        return len(self.times)

    def tail(self, start: int) -> _Chunk:
        return self[start:]

    def __getitem__(self, s: slice) -> _Chunk:
        return _Chunk(self.codes[s], self.times[s], self.bids[s], self.asks[s], self.received[s], self.submitted)


@dataclass
class _Pending:
    chunks: deque[_Chunk] = field(default_factory=deque)
    candles: dict[tuple[str, str, int], tuple[Candle, str]] = field(default_factory=dict)
    notify: dict[tuple[str, str, int], None] = field(default_factory=dict)
    repairs: dict[tuple[str, str, int], str] = field(default_factory=dict)  # flags: key -> reason
    coverage: list[CoverageMark] = field(default_factory=list)
    # (pair, reason) -> [from_ms, to_ms, rows]: coalesced, so the map stays small under any overload
    tick_gaps: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    first_submit: float | None = None

    def empty(self) -> bool:
        return not (self.chunks or self.candles or self.notify or self.repairs or self.coverage or self.tick_gaps)


def _later(old: tuple[Candle, str] | None, new: tuple[Candle, str]) -> tuple[Candle, str]:
    """The newer state wins, except that a forming row never displaces a final one."""
    if old is not None and old[0].complete and not new[0].complete:
        return old
    if old is not None and old[1] == "closed" and new[1] == "correction":
        return new[0], "closed"  # still the bucket's first final row: count it as closed
    return new


def _gaps_of(
    pairs: Sequence[str], codes: np.ndarray, times: np.ndarray, reason: str
) -> dict[tuple[str, str], list[int]]:
    out = {}
    for code in np.unique(codes).tolist():
        t = times[codes == code]
        out[(pairs[code], reason)] = [int(t.min()), int(t.max()), len(t)]
    return out


def _merge_gaps(into: dict[tuple[str, str], list[int]], more: dict[tuple[str, str], list[int]]) -> None:
    for key, (lo, hi, n) in more.items():
        have = into.get(key)
        into[key] = [lo, hi, n] if have is None else [min(have[0], lo), max(have[1], hi), have[2] + n]


class Writer:
    """Buffers submissions from any thread; `flush()` from one thread at a time writes them.

    Counters (plain attributes, read without a lock): `ticks_submitted`, `ticks_written`
    (new rows committed), `ticks_dropped` (lost at the buffer bound), `candles_written`
    ({(timeframe, kind): rows}), `notifies_sent`, `repairs_written`, `flushes`,
    `flush_errors`, `last_flush_s`, `db_up`; `buffer_depth` is the tick rows waiting.
    `on_flush(FlushStats)` is called after each successful flush (metrics hook).
    """

    def __init__(
        self,
        url: str,
        pairs: Sequence[str],
        *,
        buffer_max_ticks: int = 2_000_000,
        max_tx_ticks: int = 250_000,
        eager_rows: int = 50_000,
        connect_timeout_s: int = 5,
        application_name: str = "ig-collector writer",
        on_flush: Callable[[FlushStats], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        names = [p.encode("ascii") for p in pairs]
        if len({len(n) for n in names}) != 1:
            raise ValueError("pair names must all have the same length (six letters)")
        self.url = url
        self.pairs = tuple(pairs)
        self._pair_bytes = np.array(names)
        self.buffer_max_ticks = buffer_max_ticks
        self.max_tx_ticks = max_tx_ticks
        self.eager_rows = eager_rows  # this many waiting tick rows wake the flusher at once
        self.connect_timeout_s = connect_timeout_s
        self.application_name = application_name
        self.origin = f"{socket.gethostname()}:{os.getpid()}"  # who opened a coverage interval
        self.on_flush = on_flush
        self._mono = monotonic
        self._wall_ms = wall_ms

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # signalled after every flush attempt
        self.wakeup = threading.Event()  # set when something should be written soon
        self._pending = _Pending()
        self._small: list[tuple[int, int, float, float, int]] = []
        self._depth = 0  # tick rows not yet committed (pending + in flight)
        self._inflight = 0  # of which taken by the running flush
        self._flushing = False
        self._conn: psycopg.Connection | None = None
        self._flush_lock = threading.Lock()
        self._last_drop_log = 0.0
        self._dropped_since_log = 0

        self.ticks_submitted = 0
        self.ticks_written = 0
        self.ticks_dropped = 0
        self.candles_written: dict[tuple[str, str], int] = {}
        self.notifies_sent = 0
        self.repairs_written = 0
        self.flushes = 0
        self.flush_errors = 0
        self.ticks_copy_fallbacks = 0  # flushes whose ticks needed the ON CONFLICT path
        self.rows_quarantined: dict[str, int] = {}  # kind -> rows the database refused for good
        self._refusals_logged: set[tuple[Any, ...]] = set()
        self.last_flush_s = 0.0
        self.db_up = False

    @classmethod
    def from_settings(cls, settings: Settings, url: str | None = None, **kw: Any) -> Writer:
        url = url or settings.database_url
        if not url:
            raise ValueError("no database URL")
        kw.setdefault("buffer_max_ticks", settings.buffer_max_ticks)
        return cls(url, settings.pairs, **kw)

    # ------------------------------------------------------------------ submission (any thread)
    @property
    def buffer_depth(self) -> int:
        return self._depth

    def submit_tick(self, code: int, time_ms: int, bid: float, ask: float, received_ms: int | None = None) -> None:
        """One accepted tick (the per-tick live path); cheap: appends a tuple."""
        with self._lock:
            self._small.append((code, time_ms, bid, ask, -1 if received_ms is None else received_ms))
            self._depth += 1
            self.ticks_submitted += 1
            if self._pending.first_submit is None:
                self._pending.first_submit = self._mono()
            if len(self._small) >= 4096:
                self._seal_small()
            if self._depth - self._inflight > self.buffer_max_ticks:
                self._enforce_bound()

    def submit_ticks(
        self,
        codes: np.ndarray,
        times: np.ndarray,
        bids: np.ndarray,
        asks: np.ndarray,
        received_ms: int | np.ndarray | None = None,
    ) -> None:
        """Accepted ticks as columns (batch path)."""
        n = len(times)
        if not n:
            return
        if received_ms is None:
            received = np.full(n, -1, dtype=np.int64)
        else:
            received = np.broadcast_to(np.asarray(received_ms, dtype=np.int64), (n,)).copy()
        chunk = _Chunk(
            np.asarray(codes, dtype=np.int16).copy(),
            np.asarray(times, dtype=np.int64).copy(),
            np.asarray(bids, dtype=np.float64).copy(),
            np.asarray(asks, dtype=np.float64).copy(),
            received,
            self._mono(),
        )
        with self._lock:
            self._seal_small()
            self._pending.chunks.append(chunk)
            self._depth += n
            self.ticks_submitted += n
            if self._pending.first_submit is None:
                self._pending.first_submit = chunk.submitted
            if self._depth - self._inflight > self.buffer_max_ticks:
                self._enforce_bound()
            eager = self._depth - self._inflight >= self.eager_rows
        if eager:
            self.wakeup.set()

    def submit_candles(self, candles: Iterable[Candle], kind: str) -> None:
        """Forming rows (kind "forming"), final rows ("closed", NOTIFY sent) or corrections."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        with self._lock:
            p = self._pending
            for c in candles:
                key = (c.pair, c.timeframe, c.bucket_ms)
                p.candles[key] = _later(p.candles.get(key), (c, kind))
                if kind == "closed":
                    p.notify[key] = None
                if p.first_submit is None:
                    p.first_submit = self._mono()
        self.wakeup.set()

    def submit_flags(self, flags: Iterable[Flag | RepairNeeded]) -> None:
        """Repair flags: committed in the same transaction as the candles submitted with or
        after them, so a partial candle is never on disk without its flag. Keyed by bucket:
        duplicates cost nothing, and the map is bounded by the buckets, not by the events."""
        with self._lock:
            for r in flags:
                key = (r.pair, r.timeframe, r.bucket_ms)
                # The newest reason wins, except that a too-late tick's (which re-opens even a
                # REST-repaired bucket) is never displaced before it is written.
                if self._pending.repairs.get(key) != "late_tick":
                    self._pending.repairs[key] = r.reason
            if self._pending.first_submit is None:
                self._pending.first_submit = self._mono()
        self.wakeup.set()

    def submit_coverage(self, mark: CoverageMark) -> None:
        """The stream started or stopped covering the market (see `stream_coverage`)."""
        with self._lock:
            self._pending.coverage.append(mark)
        self.wakeup.set()

    def unwritten_flags(self) -> tuple[list[Flag], list[CoverageMark]]:
        """What a stop could not commit and the next start could not re-derive: the repair
        flags and coverage marks still pending (the daemon spools them to disk)."""
        with self._lock:
            flags = [Flag(p, tf, b, r) for (p, tf, b), r in self._pending.repairs.items()]
            return flags, list(self._pending.coverage)

    def submit_events(self, events: Iterable[Event]) -> None:
        """The aggregator's drained events, routed to the right kind."""
        closed, corrected, repairs = [], [], []
        for e in events:
            if isinstance(e, CandleClosed):
                closed.append(e.candle)
            elif isinstance(e, CandleCorrected):
                corrected.append(e.candle)
            else:
                repairs.append(e)
        # Order matters for the pending map: a correction of a bucket closed in the same
        # batch is the newer state.
        if closed:
            self.submit_candles(closed, "closed")
        if corrected:
            self.submit_candles(corrected, "correction")
        if repairs:
            self.submit_flags(repairs)

    def _seal_small(self) -> None:
        if not self._small:
            return
        c, t, b, a, r = (np.array(x) for x in zip(*self._small, strict=True))
        self._pending.chunks.append(
            _Chunk(
                c.astype(np.int16),
                t.astype(np.int64),
                b.astype(np.float64),
                a.astype(np.float64),
                r.astype(np.int64),
                self._pending.first_submit or self._mono(),
            )
        )
        self._small = []

    def _note_tick_gap(self, dropped: _Chunk, reason: str) -> None:
        """Tick rows the candles counted but `ticks` will not hold: recorded per pair as an
        interval, so the audit does not hold those buckets against the ticks table."""
        _merge_gaps(self._pending.tick_gaps, _gaps_of(self.pairs, dropped.codes, dropped.times, reason))

    def _enforce_bound(self) -> None:
        """Drop the oldest tick rows beyond the bound (caller holds the lock)."""
        self._seal_small()
        excess = self._depth - self._inflight - self.buffer_max_ticks
        chunks = self._pending.chunks
        while excess > 0 and chunks:
            head = chunks[0]
            if len(head) <= excess:
                chunks.popleft()
                n = len(head)
            else:
                chunks[0] = head.tail(excess)
                n = excess
            self._note_tick_gap(head[:n], "buffer_full")
            excess -= n
            self._depth -= n
            self.ticks_dropped += n
            self._dropped_since_log += n
        now = self._mono()
        if now - self._last_drop_log >= 10.0:
            log.warning(
                "write buffer full: dropped oldest tick rows (candles stay exact)",
                extra={"dropped": self._dropped_since_log, "dropped_total": self.ticks_dropped,
                       "buffer_max_ticks": self.buffer_max_ticks},
            )  # fmt: skip
            self._last_drop_log = now
            self._dropped_since_log = 0

    # ------------------------------------------------------------------ flushing (one thread)
    def has_pending(self) -> bool:
        with self._lock:
            return bool(self._small) or not self._pending.empty()

    def wait_below(self, depth: int, timeout: float | None = None) -> bool:
        """Block until at most `depth` tick rows wait (replay's backpressure)."""
        deadline = None if timeout is None else self._mono() + timeout
        with self._changed:
            while self._depth > depth:
                left = None if deadline is None else deadline - self._mono()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(left if left is not None else 1.0)
            return True

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until everything submitted so far is committed (a flusher must be running)."""
        deadline = None if timeout is None else self._mono() + timeout
        with self._changed:
            while self._small or not self._pending.empty() or self._flushing:
                left = None if deadline is None else deadline - self._mono()
                if left is not None and left <= 0:
                    return False
                self.wakeup.set()
                self._changed.wait(0.5 if left is None else min(left, 0.5))
            return True

    def flush(self) -> FlushStats | None:
        """Write everything pending; None when there was nothing to write.

        Raises WriterError after putting the data back (retry later); the connection is
        re-opened on the next call.
        """
        with self._flush_lock:
            with self._lock:
                self._seal_small()
                taken = self._pending
                if taken.empty():
                    return None
                self._pending = _Pending()
                self._inflight = sum(len(c) for c in taken.chunks)
                self._flushing = True
            self.wakeup.clear()
            try:
                stats = self._write(taken)
            except BaseException as e:
                with self._changed:
                    self._put_back(taken)
                    self._flushing = False
                    self._changed.notify_all()
                self.flush_errors += 1
                self.db_up = False
                self._drop_connection()
                if isinstance(e, psycopg.Error):
                    raise WriterError(f"database write failed: {type(e).__name__}: {e}".strip()) from e
                raise
            with self._changed:
                self._depth -= stats.ticks
                self._inflight = 0
                self._flushing = False
                self._changed.notify_all()
            self.flushes += 1
            self.db_up = True
            self.last_flush_s = stats.seconds
            if self.on_flush is not None:
                try:
                    self.on_flush(stats)
                except Exception:  # a metrics bug must not stop the writer
                    log.exception("on_flush callback failed")
            return stats

    def flush_retrying(
        self, *, retry_min_s: float = 0.1, retry_max_s: float = 30.0, stop: threading.Event | None = None
    ) -> None:
        """Flush until nothing is pending, backing off exponentially while the database is away."""
        backoff = retry_min_s
        while self.has_pending():
            try:
                self.flush()
                backoff = retry_min_s
            except WriterError as e:
                log.warning("database unavailable, retrying", extra={"retry_in_s": round(backoff, 2), "error": str(e)})
                if stop is not None:
                    if stop.wait(backoff):
                        return
                else:
                    time.sleep(backoff)
                backoff = min(backoff * 2, retry_max_s)

    def _put_back(self, taken: _Pending) -> None:
        """Merge a failed flush's data in front of what was submitted meanwhile (lock held)."""
        cur = self._pending
        self._inflight = 0
        self._seal_small()
        taken.chunks.extend(cur.chunks)
        for key, val in cur.candles.items():
            taken.candles[key] = _later(taken.candles.get(key), val)
        taken.notify.update(cur.notify)
        for key, reason in cur.repairs.items():
            if taken.repairs.get(key) != "late_tick":
                taken.repairs[key] = reason
        taken.coverage.extend(cur.coverage)
        _merge_gaps(taken.tick_gaps, cur.tick_gaps)
        if taken.first_submit is None:
            taken.first_submit = cur.first_submit
        self._pending = taken
        if self._depth > self.buffer_max_ticks:
            self._enforce_bound()

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(
                self.url,
                autocommit=False,
                application_name=self.application_name,
                connect_timeout=self.connect_timeout_s,
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=3,
                tcp_user_timeout=15_000,
            )
            conn.execute(_STAGE_TICKS)
            conn.execute(_STAGE_CANDLES)
            conn.commit()
            self._conn = conn
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken; nothing to save
                conn.close()

    def _copy_rows(self, chunk: _Chunk) -> bytes:
        """Binary COPY rows (no header/trailer) for (time, pair, bid, ask, received_at), built
        column-wise: a structured big-endian array per row shape, no Python per row."""
        width = self._pair_bytes.dtype.itemsize
        parts = []
        has = chunk.received >= 0
        for with_recv in (True, False):
            sel = has if with_recv else ~has
            n = int(sel.sum())
            if not n:
                continue
            fields = [("n", ">i2"), ("l1", ">i4"), ("t", ">i8"), ("l2", ">i4"), ("p", f"S{width}"),
                      ("l3", ">i4"), ("b", ">f8"), ("l4", ">i4"), ("a", ">f8"), ("l5", ">i4")]  # fmt: skip
            if with_recv:
                fields.append(("r", ">i8"))
            rows = np.empty(n, dtype=np.dtype(fields))
            rows["n"] = 5
            rows["l1"], rows["l2"], rows["l3"], rows["l4"] = 8, width, 8, 8
            rows["t"] = (chunk.times[sel] - EPOCH_2000_MS) * 1000
            rows["p"] = self._pair_bytes[chunk.codes[sel]]
            rows["b"] = chunk.bids[sel]
            rows["a"] = chunk.asks[sel]
            if with_recv:
                rows["l5"] = 8
                rows["r"] = (chunk.received[sel] - EPOCH_2000_MS) * 1000
            else:
                rows["l5"] = -1
            parts.append(rows.tobytes())
        return b"".join(parts)

    def _write_ticks(self, cur: psycopg.Cursor, chunks: list[_Chunk]) -> int:
        """COPY straight into `ticks` inside a savepoint (the common case: every row is new); if
        a row is already stored (a repeat the aggregator's window did not cover, a retried
        flush) the savepoint is rolled back and the rows go through the staging table and
        `ON CONFLICT DO NOTHING`, so each tick is stored once either way."""
        payload = [_COPY_HEADER, *(self._copy_rows(c) for c in chunks), _COPY_TRAILER]
        n = sum(len(c) for c in chunks)
        copy_in = "COPY ticks (time, pair, bid, ask, received_at) FROM STDIN (FORMAT BINARY)"
        try:
            # Called inside the flush's transaction, so this is a savepoint, not a commit.
            with cur.connection.transaction(), cur.copy(copy_in) as cp:
                for part in payload:
                    cp.write(part)
            return n
        except psycopg.errors.UniqueViolation:
            self.ticks_copy_fallbacks += 1
        with cur.copy("COPY _stage_ticks (time, pair, bid, ask, received_at) FROM STDIN (FORMAT BINARY)") as cp:
            for part in payload:
                cp.write(part)
        cur.execute(_INSERT_TICKS)
        return max(cur.rowcount, 0)

    def _write(self, taken: _Pending) -> FlushStats:
        start = self._mono()
        conn = self._connection()
        try:
            return self._write_fast(conn, taken, start)
        except psycopg.Error as e:
            if not is_permanent(e):
                raise
            first_error = e
        # A row the database refuses for good would fail every retry and, behind it, every later
        # flush: find it (halving under savepoints), quarantine it, and write the rest.
        return self._write_isolating(conn, taken, start, first_error)

    def _write_fast(self, conn: psycopg.Connection, taken: _Pending, start: float) -> FlushStats:
        chunks = list(taken.chunks)
        # Slices of at most max_tx_ticks rows; all but the last commit on their own, the last
        # carries the candles, so candles never commit ahead of the ticks they reflect.
        slices: list[list[_Chunk]] = [[]]
        size = 0
        for ch in chunks:
            while len(ch):
                room = self.max_tx_ticks - size
                if room <= 0:
                    slices.append([])
                    size, room = 0, self.max_tx_ticks
                part = ch if len(ch) <= room else ch[:room]
                slices[-1].append(part)
                size += len(part)
                ch = ch.tail(len(part))
        committed = inserted = inserted_early = 0
        try:
            with conn.cursor() as cur:
                for sl in slices[:-1]:
                    with conn.transaction():
                        n_new = self._write_ticks(cur, sl)
                    committed += sum(len(c) for c in sl)
                    inserted_early += n_new
                    self.ticks_written += n_new
                # One transaction: the last ticks, the candles reflecting them, NOTIFY, repairs.
                with conn.transaction():
                    inserted = self._write_ticks(cur, slices[-1]) if slices[-1] else 0
                    written = self._write_candles(cur, taken.candles) if taken.candles else {}
                    if taken.notify:
                        cur.execute(
                            _NOTIFY,
                            (NOTIFY_CHANNEL, [notify_payload(*k) for k in sorted(taken.notify)]),
                        )
                    self._write_records(cur, taken)
        except psycopg.Error:
            if committed:  # earlier slices are stored: only the rest goes back
                remaining: deque[_Chunk] = deque()
                skip = committed
                for ch in chunks:
                    if skip >= len(ch):
                        skip -= len(ch)
                        continue
                    remaining.append(ch.tail(skip) if skip else ch)
                    skip = 0
                taken.chunks = remaining
                with self._lock:
                    self._depth -= committed
                    self._inflight -= committed
            raise
        return self._committed(taken, sum(len(c) for c in chunks), inserted_early + inserted, written, start)

    def _committed(self, taken: _Pending, sent: int, inserted: int, written: dict[tuple[str, str], int],
                   start: float) -> FlushStats:  # fmt: skip
        self.ticks_written += inserted
        for key, n in written.items():
            self.candles_written[key] = self.candles_written.get(key, 0) + n
        self.notifies_sent += len(taken.notify)
        self.repairs_written += len(taken.repairs)
        end = self._mono()
        return FlushStats(
            ticks=sent,
            ticks_inserted=inserted,
            candles=written,
            notifies=len(taken.notify),
            repairs=len(taken.repairs),
            seconds=end - start,
            oldest_submit_age_s=end - taken.first_submit if taken.first_submit is not None else 0.0,
            closed=tuple(sorted(taken.notify)),
            committed_at_ms=self._wall_ms(),
        )

    def _write_records(self, cur: psycopg.Cursor, taken: _Pending, *, flags: bool = True) -> None:
        """Repair flags, coverage marks and tick gaps, in the transaction of the candles they
        concern: after the candles, so a flag demotes a row that closed before it was known."""
        if flags and taken.repairs:
            write_flags(cur, [Flag(p, tf, b, r) for (p, tf, b), r in sorted(taken.repairs.items())])
        write_coverage(cur, taken.coverage, self.origin)
        if taken.tick_gaps:
            keys = sorted(taken.tick_gaps)
            cur.execute(
                _TICK_GAPS,
                ([k[0] for k in keys], [ms_to_dt(taken.tick_gaps[k][0]) for k in keys],
                 [ms_to_dt(taken.tick_gaps[k][1]) for k in keys], [taken.tick_gaps[k][2] for k in keys],
                 [k[1] for k in keys]),
            )  # fmt: skip

    # ------------------------------------------------------------------ refused rows
    def _write_isolating(self, conn: psycopg.Connection, taken: _Pending, start: float,
                         first_error: psycopg.Error) -> FlushStats:  # fmt: skip
        """Everything in one transaction, each part under a savepoint, halving a part the
        database refuses until the refused rows are found; those go to `quarantine` with the
        database's error. A refused candle's bucket is flagged for repair (it is not stored)."""
        refused: dict[str, int] = {}
        sent = sum(len(c) for c in taken.chunks)
        written: dict[tuple[str, str], int] = {}
        with conn.cursor() as cur, conn.transaction():

            def quarantine(kind: str, pair: str | None, at_ms: int | None, data: dict[str, Any],
                           err: psycopg.Error) -> None:  # fmt: skip
                cur.execute(_QUARANTINE, (kind, pair, None if at_ms is None else ms_to_dt(at_ms),
                                          json.dumps(data), err.sqlstate or "", str(err).strip()[:1000]))  # fmt: skip
                refused[kind] = refused.get(kind, 0) + 1

            def bad_ticks(part: _Chunk, err: psycopg.Error) -> None:
                for i in range(len(part)):
                    pair, t = self.pairs[int(part.codes[i])], int(part.times[i])
                    rec = int(part.received[i])
                    quarantine("tick", pair, t, {"time_ms": t, "bid": float(part.bids[i]), "ask": float(part.asks[i]),
                                                 "received_ms": rec if rec >= 0 else None}, err)  # fmt: skip
                _merge_gaps(taken.tick_gaps, _gaps_of(self.pairs, part.codes, part.times, "quarantined"))

            def good_ticks(part: _Chunk) -> int:
                n = self._write_ticks(cur, [part])
                cur.execute("DELETE FROM _stage_ticks")  # staged rows are kept until commit: not twice
                return n

            inserted = sum(_isolate(cur, ch, good_ticks, bad_ticks) for ch in taken.chunks)

            def good_candles(items: list[tuple[tuple[str, str, int], tuple[Candle, str]]]) -> int:
                got = self._write_candles(cur, dict(items))
                cur.execute("DELETE FROM _stage_candles")
                for k, n in got.items():
                    written[k] = written.get(k, 0) + n
                return sum(got.values())

            def bad_candles(items: list[tuple[tuple[str, str, int], tuple[Candle, str]]], err: psycopg.Error) -> None:
                for key, (c, kind) in items:
                    data = {f: getattr(c, f) for f in c.__dataclass_fields__}
                    quarantine("candle", c.pair, c.bucket_ms, {**data, "kind": kind}, err)
                    taken.notify.pop(key, None)  # not stored: nothing to announce
                    taken.repairs.setdefault(key, "quarantined")  # owed from REST instead

            _isolate(cur, list(taken.candles.items()), good_candles, bad_candles)
            if taken.notify:
                cur.execute(_NOTIFY, (NOTIFY_CHANNEL, [notify_payload(*k) for k in sorted(taken.notify)]))

            def bad_flags(items: list[tuple[tuple[str, str, int], str]], err: psycopg.Error) -> None:
                for (p, tf, b), r in items:
                    quarantine("repair", p, b, {"timeframe": tf, "reason": r}, err)

            def good_flags(items: list[tuple[tuple[str, str, int], str]]) -> int:
                return write_flags(cur, [Flag(p, tf, b, r) for (p, tf, b), r in items])

            _isolate(cur, sorted(taken.repairs.items()), good_flags, bad_flags)
            self._write_records(cur, taken, flags=False)
        for kind, n in refused.items():
            self.rows_quarantined[kind] = self.rows_quarantined.get(kind, 0) + n
        diag = getattr(first_error, "diag", None)
        signature = (tuple(sorted(refused)), first_error.sqlstate, getattr(diag, "constraint_name", None))
        if signature not in self._refusals_logged:  # once per kind of refusal, not once per flush
            self._refusals_logged.add(signature)
            log.error(
                "the database refused rows for good: moved to the quarantine table, writing the rest",
                extra={"quarantined": refused, "sqlstate": first_error.sqlstate,
                       "error": str(first_error).strip()[:300]},
            )  # fmt: skip
        return self._committed(taken, sent, inserted, written, start)

    def _write_candles(
        self, cur: psycopg.Cursor, candles: dict[tuple[str, str, int], tuple[Candle, str]]
    ) -> dict[tuple[str, str], int]:
        with cur.copy(f"COPY _stage_candles ({_CANDLE_COLS}) FROM STDIN") as cp:
            for c, _kind in candles.values():
                cp.write_row(
                    (
                        c.pair, c.timeframe, ms_to_dt(c.bucket_ms),
                        c.bid_open, c.bid_high, c.bid_low, c.bid_close,
                        c.ask_open, c.ask_high, c.ask_low, c.ask_close,
                        c.ticks, c.complete,
                        None if c.open_ms is None else ms_to_dt(c.open_ms),
                        None if c.close_ms is None else ms_to_dt(c.close_ms),
                    )
                )  # fmt: skip
        cur.execute(_UPSERT_CANDLES)
        written: dict[tuple[str, str], int] = {}
        for pair, tf, bucket in cur.fetchall():
            _, kind = candles[(pair, tf, dt_to_ms(bucket))]
            written[(tf, kind)] = written.get((tf, kind), 0) + 1
        return written

    # ------------------------------------------------------------------ restart
    def load_state(
        self,
        now_ms: int,
        timeframes: Sequence[str],
        *,
        close_grace_ms: int,
        lateness_ms: int,
        dedupe_window_ms: int,
        future_tolerance_ms: int = 30_000,
        tick_lookback_ms: int = 7 * 86_400_000,
    ) -> ResumeState:
        """Open buckets (not complete, not yet past close at `now_ms`), recently closed buckets
        a late tick may still correct, and each pair's newest stored ticks (within the dedupe
        window of its last one) so a re-subscription snapshot is recognised.

        An incomplete row already past its close (the collector was down when it ended) comes
        back as a closed candle with complete=False: late ticks merge into it, and it is never
        claimed complete here (REST repair is the backfill's job).
        """
        lens = {tf: tfs.length_ms(tf) for tf in timeframes}
        horizon = now_ms - max(lens.values()) - close_grace_ms - lateness_ms
        conn = self._connection()
        try:
            rows = conn.execute(
                """SELECT pair, timeframe, bucket, bid_open, bid_high, bid_low, bid_close,
                           ask_open, ask_high, ask_low, ask_close, ticks, complete, open_time, close_time
                    FROM candles
                    WHERE source = 'stream' AND timeframe = ANY(%s) AND pair = ANY(%s)
                      AND bucket >= %s
                    ORDER BY bucket""",
                (list(timeframes), list(self.pairs), ms_to_dt(horizon)),
            ).fetchall()
            last_ticks = self._recent_ticks(
                conn.cursor(),
                lo=ms_to_dt(now_ms - tick_lookback_ms),
                hi=ms_to_dt(now_ms + future_tolerance_ms),
                window_ms=dedupe_window_ms,
            )
            conn.commit()
        except (psycopg.Error, WriterError) as e:
            self._drop_connection()
            raise WriterError(f"loading state failed: {e}") from e
        open_, closed = [], []
        for r in rows:
            b = dt_to_ms(r[2])
            c = Candle(
                r[0], r[1], b, *r[3:11], r[11], bool(r[12]), "stream",
                None if r[13] is None else dt_to_ms(r[13]), None if r[14] is None else dt_to_ms(r[14]),
            )  # fmt: skip
            close = b + lens[c.timeframe] + close_grace_ms
            if not c.complete and close > now_ms:
                open_.append(c)
            elif close + lateness_ms >= now_ms:
                closed.append(c)
        return ResumeState(tuple(open_), tuple(closed), last_ticks)

    def _recent_ticks(
        self, cur: psycopg.Cursor[Any], *, lo: dt.datetime, hi: dt.datetime, window_ms: int
    ) -> RecentTicks:
        """Each pair's stored ticks within `window_ms` of its newest (searched in [lo, hi]),
        by binary COPY straight into numpy: no Python object per row (see RecentTicks)."""
        query = """COPY (
            WITH newest AS (
                SELECT p.pair, (SELECT max(t.time) FROM ticks t WHERE t.pair = p.pair
                                 AND t.time BETWEEN {lo} AND {hi}) AS m
                FROM unnest({pairs}::text[]) AS p(pair))
            SELECT array_position({pairs}::text[], t.pair)::int4 - 1,
                   (extract(epoch FROM t.time) * 1000)::int8, t.bid::float8, t.ask::float8
            FROM newest JOIN ticks t ON t.pair = newest.pair
             AND t.time BETWEEN newest.m - {w} * interval '1 millisecond' AND newest.m
        ) TO STDOUT (FORMAT BINARY)"""
        stmt = sql.SQL(query).format(
            lo=sql.Literal(lo),
            hi=sql.Literal(hi),
            pairs=sql.Literal(list(self.pairs)),
            w=sql.Literal(window_ms),
        )
        with cur.copy(stmt) as cp:
            data = b"".join(bytes(chunk) for chunk in cp)
        body = data[len(_COPY_HEADER) : len(data) - len(_COPY_TRAILER)]
        if not data.startswith(_COPY_HEADER) or len(body) % _RECENT_ROW.itemsize:
            raise WriterError(f"unexpected COPY output for recent ticks ({len(data)} bytes)")
        rows = np.frombuffer(body, dtype=_RECENT_ROW)
        if len(rows) and not (
            (rows["n"] == 4).all() and (rows["l1"] == 4).all() and (rows["l2"] == 8).all()
            and (rows["l3"] == 8).all() and (rows["l4"] == 8).all()
        ):  # fmt: skip
            raise WriterError("unexpected field layout in COPY output for recent ticks")
        return RecentTicks(
            self.pairs,
            rows["code"].astype(np.int32),
            rows["t"].astype(np.int64),
            rows["b"].astype(np.float64),
            rows["a"].astype(np.float64),
        )

    def close(self) -> None:
        self._drop_connection()


def _isolate(cur: psycopg.Cursor, items: Any, write: Callable[[Any], int],
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


class WriterThread:
    """Drives a Writer: flushes every `interval_s` (ticks and whatever candles are pending) or
    at once when woken (a close, a correction, a forming batch), backing off exponentially up
    to `retry_max_s` while the database is away. `stop()` makes a last attempt to flush."""

    def __init__(
        self,
        writer: Writer,
        *,
        interval_s: float = 0.1,
        retry_min_s: float = 0.1,
        retry_max_s: float = 30.0,
        name: str = "ig-writer",
    ) -> None:
        self.writer = writer
        self.interval_s = interval_s
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.last_error: str | None = None

    @classmethod
    def from_settings(cls, writer: Writer, settings: Settings, **kw: float) -> WriterThread:
        kw.setdefault("retry_max_s", settings.db_retry_max_s)
        return cls(writer, **kw)

    def start(self) -> WriterThread:
        self._thread.start()
        return self

    def _run(self) -> None:
        w = self.writer
        backoff = self.retry_min_s
        while not self._stop.is_set():
            w.wakeup.wait(self.interval_s)
            if self._stop.is_set():
                break
            try:
                w.flush()
                backoff = self.retry_min_s
                self.last_error = None
            except WriterError as e:
                if self.last_error is None:
                    log.warning("database write failed; buffering and retrying", extra={"error": str(e)})
                self.last_error = str(e)
                if self._stop.wait(backoff):
                    break
                backoff = min(backoff * 2, self.retry_max_s)
            except Exception:
                log.exception("writer flush crashed; retrying")
                if self._stop.wait(backoff):
                    break
                backoff = min(backoff * 2, self.retry_max_s)

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the loop and try to write what is left within `timeout`; True if nothing is left."""
        self._stop.set()
        self.writer.wakeup.set()
        self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        backoff = self.retry_min_s
        while self.writer.has_pending() and time.monotonic() < deadline:
            try:
                self.writer.flush()
            except WriterError:
                time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
                backoff = min(backoff * 2, self.retry_max_s)
        return not self.writer.has_pending()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
