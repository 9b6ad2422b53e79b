"""The writer: the write buffer, one database connection and the retry around them.

Producers submit into the buffer from any thread and never wait for the database; one flusher
(`WriterThread`, or replay's loop) calls `flush()`, which takes everything pending and writes
it in one batch (`sql.write_batch`). When the database is unreachable `flush()` raises
`WriterError` with everything put back, and the caller retries with exponential backoff; the
buffer keeps accepting, bounded (see `buffer.py`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import psycopg

from ..leadership import is_fenced
from .buffer import WriteBuffer
from .copy_codec import TickCodec
from .resume import ResumeState, ResumeWindow, load_state
from .sql import (
    FENCED_XACT_STATUS,
    STAGE_CANDLES,
    STAGE_TICKS,
    XACT_STATUS,
    BatchFailed,
    BatchOptions,
    FlushStats,
    WriterError,
    write_batch,
)

if TYPE_CHECKING:
    from ..config import Settings
    from ..leadership import Fence

log = logging.getLogger("collector.store")


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
        fence: Fence | None = None,
    ) -> None:
        """`fence`: the leader's token; every write transaction is refused by the database once
        it is stale (the flush then raises, `is_fenced`), so a lost leader cannot write."""
        codec = TickCodec(pairs)
        self.url = url
        self.pairs = codec.pairs
        self.connect_timeout_s = connect_timeout_s
        self.application_name = application_name
        self.origin = f"{socket.gethostname()}:{os.getpid()}"  # who opened a coverage interval
        self.on_flush = on_flush
        self.buffer = WriteBuffer(pairs, max_ticks=buffer_max_ticks, eager_rows=eager_rows, monotonic=monotonic)
        self._opts = BatchOptions(codec, self.origin, max_tx_ticks, monotonic, wall_ms, fence)
        self._conn: psycopg.Connection[Any] | None = None
        self._flush_lock = threading.Lock()
        self._maybe_inserted: dict[int, int] = {}  # xid of an unknown COMMIT -> rows it would have added
        self._maybe_started: dict[int, object] = {}  # xid of an unknown COMMIT -> its transaction's start
        self._refusals_logged: set[tuple[Any, ...]] = set()
        b = self.buffer  # the submission side is the buffer's own (bound once: the per-tick path is hot)
        self.wakeup = b.wakeup
        self.submit_tick = b.submit_tick
        self.submit_ticks = b.submit_ticks
        self.submit_candles = b.submit_candles
        self.submit_flags = b.submit_flags
        self.submit_coverage = b.submit_coverage
        self.submit_events = b.submit_events
        self.unwritten_flags = b.unwritten_flags
        self.has_pending = b.has_pending
        self.wait_below = b.wait_below
        self.wait_idle = b.wait_idle

        self.ticks_written = 0
        self.candles_written: dict[tuple[str, str], int] = {}
        self.notifies_sent = 0
        self.repairs_written = 0
        self.flushes = 0
        self.flush_errors = 0
        self.ticks_copy_fallbacks = 0  # flushes whose ticks needed the ON CONFLICT path
        self.rows_quarantined: dict[str, int] = {}  # kind -> rows the database refused for good
        self.last_flush_s = 0.0
        self.db_up = False

    @classmethod
    def from_settings(cls, settings: Settings, url: str | None = None, **kw: Any) -> Writer:
        url = url or settings.database_url
        if not url:
            raise ValueError("no database URL")
        kw.setdefault("buffer_max_ticks", settings.buffer_max_ticks)
        return cls(url, settings.pairs, **kw)

    @property
    def buffer_depth(self) -> int:
        return self.buffer.depth

    @property
    def ticks_submitted(self) -> int:
        return self.buffer.ticks_submitted

    @property
    def ticks_dropped(self) -> int:
        return self.buffer.ticks_dropped

    # ------------------------------------------------------------------ flushing (one thread)
    def flush(self) -> FlushStats | None:
        """Write everything pending; None when there was nothing to write.

        Raises WriterError after putting the data back (retry later); the connection is
        re-opened on the next call.
        """
        with self._flush_lock:
            if not self.buffer.has_pending():
                return None
            try:
                conn = self._connection()
                self._resolve_unknown_commits(conn)
            except psycopg.Error as e:
                self._failed()
                raise WriterError(f"database write failed: {type(e).__name__}: {e}".strip()) from e
            batch = self.buffer.take()
            if batch is None:
                return None
            try:
                stats = write_batch(conn, batch, self._opts)
            except BatchFailed as f:
                self.buffer.put_back(batch, committed_rows=f.committed_rows, maybe=f.maybe)
                self.ticks_written += f.inserted
                if f.maybe is not None:
                    self._maybe_inserted[f.maybe.xid] = f.maybe_inserted
                    self._maybe_started[f.maybe.xid] = f.maybe.started
                self._failed()
                raise WriterError(f"database write failed: {f}") from f.cause
            except BaseException:
                self.buffer.put_back(batch)
                self._failed()
                raise
            self.buffer.confirm(stats.ticks)
            self._count(stats)
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

    def _failed(self) -> None:
        self.flush_errors += 1
        self.db_up = False
        self._drop_connection()

    def _count(self, stats: FlushStats) -> None:
        self.ticks_written += stats.ticks_inserted
        for key, n in stats.candles.items():
            self.candles_written[key] = self.candles_written.get(key, 0) + n
        self.notifies_sent += stats.notifies
        self.repairs_written += stats.repairs
        self.ticks_copy_fallbacks += stats.copy_fallbacks
        for kind, n in stats.quarantined.items():
            self.rows_quarantined[kind] = self.rows_quarantined.get(kind, 0) + n
        self.flushes += 1
        self.db_up = True
        self.last_flush_s = stats.seconds
        r = stats.refusal
        if r is not None and (sig := (r.kinds, r.sqlstate, r.constraint)) not in self._refusals_logged:
            self._refusals_logged.add(sig)  # once per kind of refusal, not once per flush
            log.error(
                "the database refused rows for good: moved to the quarantine table, writing the rest",
                extra={"quarantined": stats.quarantined, "sqlstate": r.sqlstate, "error": r.error},
            )

    # ------------------------------------------------------------------ the connection
    def _connection(self) -> psycopg.Connection[Any]:
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
            try:
                conn.execute(STAGE_TICKS)
                conn.execute(STAGE_CANDLES)
                conn.commit()
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _resolve_unknown_commits(self, conn: psycopg.Connection[Any]) -> None:
        """Ask the server how each transaction whose COMMIT outcome was unknown ended, before
        anything is sent again: its rows are then either stored (not re-sent, their drops not
        counted) or not (drops counted and noted as tick gaps, as for any other drop)."""
        xids = self.buffer.undecided_xids()
        if not xids:
            return
        try:
            ids = sorted(xids)
            if self._opts.fence is not None:
                starts = [self._maybe_started.get(x) for x in ids]
                rows = conn.execute(FENCED_XACT_STATUS, (ids, starts)).fetchall()
            else:
                rows = conn.execute(XACT_STATUS, (ids,)).fetchall()
            conn.commit()
        except psycopg.errors.InvalidParameterValue:  # an id from another server (a failover)
            conn.rollback()
            rows = [(x, None) for x in xids]
        status = {int(x): (None if s == "in progress" else s == "committed") for x, s in rows}
        stored = self.buffer.resolve(status)
        for xid, committed in status.items():
            if committed is not None:
                n = self._maybe_inserted.pop(xid, 0)
                self._maybe_started.pop(xid, None)
                self.ticks_written += n if committed else 0
        if stored:
            log.info("rows of a commit whose outcome was unknown were stored: not sent again",
                     extra={"rows": stored})  # fmt: skip

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken; nothing to save
                conn.close()

    # ------------------------------------------------------------------ restart
    def load_state(self, now_ms: int, timeframes: Sequence[str], *, close_grace_ms: int, lateness_ms: int,
                   dedupe_window_ms: int, future_tolerance_ms: int = 30_000,
                   tick_lookback_ms: int = 7 * 86_400_000) -> ResumeState:  # fmt: skip
        """See `resume.load_state` (on its own connection, not the flusher's)."""
        window = ResumeWindow(now_ms, tuple(timeframes), close_grace_ms, lateness_ms, dedupe_window_ms,
                              future_tolerance_ms, tick_lookback_ms)  # fmt: skip
        return load_state(self.url, self.pairs, window, connect_timeout_s=self.connect_timeout_s,
                          application_name=f"{self.application_name} resume")  # fmt: skip

    def close(self) -> None:
        self._drop_connection()


class WriterThread:
    """Drives a Writer: flushes at once when woken (a forming candle, a close, a correction, a
    flag, a full batch of ticks) and the writer is free, so changes arriving during a write are
    coalesced into the next one; otherwise every `interval_s` while tick rows wait. Backs off
    exponentially up to `retry_max_s` while the database is away. `stop()` makes a last
    attempt to flush. A flush refused because this process no longer leads is never retried:
    `on_fenced` is called (the daemon stands by) and the loop ends."""

    def __init__(
        self,
        writer: Writer,
        *,
        interval_s: float = 0.1,
        retry_min_s: float = 0.1,
        retry_max_s: float = 30.0,
        name: str = "ig-writer",
        on_fenced: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.writer = writer
        self.on_fenced = on_fenced
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
                continue
            except Exception as e:
                if is_fenced(e):
                    self._fenced(e)
                    return
                if not isinstance(e, WriterError):
                    log.exception("writer flush crashed; retrying")
                elif self.last_error is None:
                    log.warning("database write failed; buffering and retrying", extra={"error": str(e)})
                self.last_error = str(e)
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self.retry_max_s)

    def _fenced(self, e: BaseException) -> None:
        self.last_error = str(e)
        log.error("write refused: this collector no longer leads", extra={"error": str(e)})
        if self.on_fenced is not None:
            self.on_fenced(e)

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
