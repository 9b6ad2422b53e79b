"""`ig-collector run`: the supervised daemon.

Threads and who owns what:
- the Lightstreamer library's threads call our listeners, which only append to one deque
  (updates and stream state changes in the order the library saw them);
- the consumer thread drains the deque into the pipeline (validation -> aggregator -> writer),
  moves the market clock, and notices gaps: the stream going down and coming back brackets an
  interval in IG time whose buckets are flagged for REST repair;
- the writer thread commits ticks and candles (collector.store);
- the repair thread replaces flagged buckets from REST once they close (collector.repairs);
- the main thread supervises: login, connect, reconnect with backoff and jitter, the tick-age
  watchdog (market-hours aware), token keep-alive, systemd notify, metrics, shutdown.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import logging
import random
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import numpy as np
import psycopg

from . import __version__, logs
from . import timeframes as tfs
from .aggregator import CandleClosed, CandleCorrected, Event
from .audit import AuditLoop
from .clock import Clock, make_clock
from .config import Settings, load_settings
from .ig_rest import IGSession, LoginFailed, RestClient, RestError
from .ig_stream import LostUpdates, RawUpdate, StreamClient, StreamEvent
from .market_hours import is_open
from .metrics import Metrics
from .migrate import migrate
from .models import CoverageMark, Flag
from .pipeline import Pipeline
from .repairs import SETTLE_MS, RepairBook, RepairWorker, flags_for_interval
from .spool import FlagSpool
from .store import FlushStats, Writer, WriterError, WriterThread, dt_to_ms, ms_to_dt, write_flags
from .systemd_notify import Notifier
from .validation import Reject

HELP = "run the collector daemon: stream, aggregate, write, supervise, backfill gaps"
log = logging.getLogger("collector.daemon")

STREAMING = ("CONNECTED:WS-STREAMING", "CONNECTED:HTTP-STREAMING", "CONNECTED:WS-POLLING", "CONNECTED:HTTP-POLLING")
TERMINAL_STATUS = "DISCONNECTED"
DRAIN_MAX = 50_000
MEMORY_TRIM_EVERY_S = 60.0  # see _release_freed_memory


@dataclasses.dataclass(frozen=True, slots=True)
class _Marker:
    """A stream state change, queued in order with the updates around it."""

    up: bool
    at_ms: int  # clock time the library reported it


class PartialAwareSink:
    """Between the pipeline and the writer: a closing bucket that the stream saw only in part
    (flagged for repair) is written incomplete and without NOTIFY; the repair notifies later."""

    def __init__(self, writer: Writer, book: RepairBook) -> None:
        self.writer, self.book = writer, book

    def submit_tick(self, *a: Any, **kw: Any) -> None:
        self.writer.submit_tick(*a, **kw)

    def submit_ticks(self, *a: Any, **kw: Any) -> None:
        self.writer.submit_ticks(*a, **kw)

    def submit_candles(self, candles: Iterable[Any], kind: str) -> None:
        self.writer.submit_candles(candles, kind)

    def submit_events(self, events: Iterable[Event]) -> None:
        keep: list[Event] = []
        partial = []
        for e in events:
            if isinstance(e, CandleClosed | CandleCorrected):
                c = e.candle
                if self.book.is_flagged(c.pair, c.timeframe, c.bucket_ms):
                    partial.append(dataclasses.replace(c, complete=False))
                    continue
            keep.append(e)
        if keep:
            self.writer.submit_events(keep)
        if partial:
            self.writer.submit_candles(partial, "forming")


class Consumer:
    """Drains stream updates into the pipeline on one thread; tracks gaps in IG time."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.updates: deque[RawUpdate | _Marker | LostUpdates] = deque()
        self.last_utm: dict[str, int] = {}  # newest IG time per pair
        self.last_arrival_ms = 0  # clock time of the newest accepted update
        self.gap_start: int | None = None  # IG time the stream went down; None while up
        self.awaiting_first = False  # down->up seen; the gap ends at the next live tick
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="consumer", daemon=True)
        # Totals written by this thread only; the metrics sync reads them and adds the difference.
        self.received_by_pair: dict[str, int] = {}
        # Buckets of updates dropped at the queue bound, by the library's thread; a set of keys,
        # so an overload of any length costs memory bounded by the buckets it spans.
        self._overflowed: set[tuple[str, str, int]] = set()
        self._overflow_lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def overflow(self, r: RawUpdate) -> None:
        """The consumer fell behind the bound: the tick is lost, its buckets must be repaired.
        Runs on the library's thread: note the buckets only; the consumer flags them."""
        self.d.metrics.updates_lost.labels("queue_full").inc()
        with contextlib.suppress(TypeError, ValueError):
            t = int(r.utm)  # type: ignore[arg-type]
            keys = [(r.pair, tf, tfs.bucket_start(t, tfs.length_ms(tf))) for tf in self.d.settings.timeframes]
            with self._overflow_lock:
                self._overflowed.update(keys)

    def _flag_overflowed(self) -> None:
        """Before any bucket can close in this drain: its lost updates are flagged first."""
        if not self._overflowed:
            return
        with self._overflow_lock:
            keys, self._overflowed = self._overflowed, set()
        self.d.book.flag(Flag(p, tf, b, "queue_overflow") for p, tf, b in keys)
        self.d.repairs.wake()

    def _run(self) -> None:
        d = self.d
        while not self._stop.is_set():
            try:
                n = self.drain()
                d.pipeline.tick(d.clock.now_ms())
            except Exception:  # a bug must not silently stop candle building; log and go on
                log.exception("consumer failed on a batch; continuing")
                n = 0
            if n == 0:
                self._stop.wait(0.02)
        self.drain()
        d.pipeline.tick(d.clock.now_ms(), force_forming=True)

    def drain(self) -> int:
        d = self.d
        self._flag_overflowed()
        dq = self.updates
        pairs: list[str] = []
        bids: list[str | None] = []
        ofrs: list[str | None] = []
        utms: list[str | None] = []
        recv: list[int] = []
        n = 0
        while dq and n < DRAIN_MAX:
            item = dq.popleft()
            if isinstance(item, _Marker | LostUpdates):
                self._feed(pairs, bids, ofrs, utms, recv)
                pairs, bids, ofrs, utms, recv = [], [], [], [], []
                if isinstance(item, _Marker):
                    self._on_marker(item)
                else:
                    self._on_lost(item)
                continue
            n += 1
            if self.awaiting_first and not item.snapshot:
                self._close_gap(item)
            pairs.append(item.pair)
            bids.append(item.bid)
            ofrs.append(item.ofr)
            utms.append(item.utm)
            recv.append(item.received_ms)
            self.received_by_pair[item.pair] = self.received_by_pair.get(item.pair, 0) + 1
        self._feed(pairs, bids, ofrs, utms, recv)
        self.received += n
        d.metrics.queue_depth.set(len(dq))
        return n

    def _feed(self, pairs: list[str], bids: list, ofrs: list, utms: list, recv: list[int]) -> None:
        if not pairs:
            return
        try:
            res = self.d.pipeline.feed_batch(pairs, bids, ofrs, utms, np.asarray(recv, dtype=np.int64))
        except Exception:
            # These updates are out of the queue and not in the candles: their buckets are short
            # of them, so flag them before anything else closes, and go on with the next item
            # (a stream marker behind them must still be seen).
            log.exception("consumer failed on a batch of updates; their buckets will be repaired")
            self._flag_batch(pairs, utms, "consumer_error")
            return
        ok = res.reason == 0
        if ok.any():
            self.last_arrival_ms = max(self.last_arrival_ms, recv[-1])
            for i in np.flatnonzero(ok).tolist():
                try:
                    t = int(utms[i])  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    continue
                if t > self.last_utm.get(pairs[i], 0):
                    self.last_utm[pairs[i]] = t

    def _flag_batch(self, pairs: list[str], utms: list, reason: str) -> None:
        span: dict[str, tuple[int, int]] = {}
        for pair, raw in zip(pairs, utms, strict=True):
            try:
                t = int(raw)
            except (TypeError, ValueError):
                continue
            lo, hi = span.get(pair, (t, t))
            span[pair] = (min(lo, t), max(hi, t))
        flags = [
            f
            for pair, (lo, hi) in span.items()
            if pair in self.d.settings.pairs
            for f in flags_for_interval([pair], self.d.settings.timeframes, lo, hi, reason)
        ]
        n = self.d.book.flag(flags)
        log.warning("flagged the failed batch's buckets", extra={"buckets": n, "updates": len(pairs)})
        self.d.repairs.wake()

    def _on_marker(self, m: _Marker) -> None:
        if not m.up:
            if self.gap_start is None:
                self.gap_start = max(self.last_utm.values(), default=None) or m.at_ms
                why = "stopped" if self.d.stopping.is_set() else "outage"
                self.d.writer.submit_coverage(CoverageMark(up=False, at_ms=self.gap_start, reason=why))
                log.info("stream down: buckets from here on will be repaired from REST")
            self.awaiting_first = False
        elif self.gap_start is not None:
            self.awaiting_first = True

    def _on_lost(self, lost: LostUpdates) -> None:
        """The server dropped updates of one pair between its last delivered tick and now."""
        if lost.pair not in self.d.settings.pairs:
            return
        self.d.metrics.updates_lost.labels("server_dropped").inc(lost.count)
        start = self.last_utm.get(lost.pair, lost.at_ms)
        log.warning(
            "the server dropped updates; their buckets will be repaired",
            extra={"pair": lost.pair, "lost": lost.count},
        )
        self.d.book.flag(
            flags_for_interval(
                [lost.pair], self.d.settings.timeframes, min(start, lost.at_ms), lost.at_ms, "lost_updates"
            )
        )
        self.d.repairs.wake()

    def _close_gap(self, first: RawUpdate) -> None:
        try:
            end = int(first.utm)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return
        self.awaiting_first = False
        start, self.gap_start = self.gap_start, None
        self.d.writer.submit_coverage(CoverageMark(up=True, at_ms=end))
        if start is None:  # a first start: the bucket it started in was seen only in part
            self.d.flag_gap(end, end, "first_start")
            return
        # The bucket of the first tick back is partial whatever the clocks say.
        self.d.flag_gap(min(start, end), end, "stream_gap")

    def last_tick_ms(self) -> int | None:
        return max(self.last_utm.values(), default=None)


class Daemon:
    def __init__(self, settings: Settings, *, clock: Clock | None = None, metrics: Metrics | None = None) -> None:
        settings.require("database_url", "ig_username", "ig_password", "ig_api_key")
        self.settings = settings
        self.url: str = settings.database_url  # type: ignore[assignment]
        self.clock = clock or make_clock(settings.clock, settings.ig_api_url)
        self.metrics = metrics or Metrics()
        self.metrics.init_labels(settings.pairs, settings.timeframes)
        with contextlib.suppress(ValueError):  # already tracked by a registry shared in tests
            self.metrics.track_period_spend(self.url)
        self.notifier = Notifier()
        self.writer = Writer.from_settings(settings, self.url, on_flush=self._on_flush, wall_ms=self.clock.now_ms)
        self.book = RepairBook(self.writer)  # flags become durable with the candles they concern
        self.spool = FlagSpool(settings.spool_dir)
        self.writer_thread = WriterThread.from_settings(self.writer, settings)
        self.pipeline = Pipeline(settings, PartialAwareSink(self.writer, self.book))
        self.consumer = Consumer(self)
        self.rest = RestClient(settings, "collector", db_url=self.url, now_ms=self.clock.now_ms, budget_on_clock=True)
        self.repairs = RepairWorker(
            settings, self.url, self.book, self.metrics, self.clock.now_ms,
            lambda: RestClient(settings, "collector", db_url=self.url, now_ms=self.clock.now_ms, budget_on_clock=True),
            settle_ms=max(SETTLE_MS, settings.lateness_ms),  # a REST candle must not pre-empt a late tick
        )  # fmt: skip
        self.auditor = AuditLoop(settings, self.url, self.metrics, self.clock.now_ms)
        self.epics = {settings.epic(p): p for p in settings.pairs}
        self.stream: StreamClient | None = None
        self.session: IGSession | None = None
        self.status = "STOPPED"
        self.connected_at_ms: int | None = None
        self.stopping = threading.Event()
        self._events: deque[StreamEvent] = deque()
        self._attempt = 0
        self._agg_seen: dict[str, int] = {}

    # --- helpers ----------------------------------------------------------------------------
    def flag_gap(self, start_ms: int, end_ms: int, reason: str) -> None:
        """Flag every market-hours bucket overlapping [start, end] for all pairs and timeframes."""
        s = self.settings
        floor = self.clock.now_ms() - int(s.backfill_max_age_s * 1000)
        if start_ms < floor:
            log.warning(
                "gap older than COLLECTOR_BACKFILL_MAX_AGE_S not repaired automatically; "
                "use `ig-collector backfill --since`",
                extra={"gap_start": start_ms, "repair_from": floor},
            )
            start_ms = floor
        if end_ms < start_ms:
            return
        flags = flags_for_interval(s.pairs, s.timeframes, start_ms, end_ms, reason)
        self.book.flag(flags)
        self.repairs.wake()
        log.info("gap flagged for REST repair", extra={"from_ms": start_ms, "to_ms": end_ms, "buckets": len(flags)})

    def _on_flush(self, st: FlushStats) -> None:
        log.debug(
            "flushed", extra={"ticks": st.ticks, "candles": sum(st.candles.values()), "seconds": round(st.seconds, 4)}
        )
        m = self.metrics
        m.write_seconds.observe(st.seconds)
        m.ticks_written.inc(st.ticks_inserted)
        for (tf, kind), n in st.candles.items():
            m.candles_written.labels(tf, kind).inc(n)
        m.db_up.set(1)
        if st.oldest_submit_age_s:
            m.visible_lag.observe(st.oldest_submit_age_s)
        for _pair, tf, bucket in st.closed:
            lag = (st.committed_at_ms - (bucket + tfs.length_ms(tf))) / 1000
            m.close_lag.observe(max(0.0, lag))

    def _sync_metrics(self) -> None:
        m, ag, now = self.metrics, self.pipeline.aggregator, self.clock.now_ms()
        for pair, n in list(self.consumer.received_by_pair.items()):
            self._inc(f"recv:{pair}", n, m.ticks_received.labels(pair))
        for kind, n in list(self.writer.rows_quarantined.items()):
            self._inc(f"quarantined:{kind}", n, m.rows_quarantined.labels(kind))
        for r in Reject:
            self._inc(f"rej:{r.label}", ag.rejected[r], m.ticks_rejected.labels(r.label))
        for i, pair in enumerate(ag.pairs):
            self._inc(f"acc:{pair}", ag.accepted_by_pair[i], m.ticks_accepted.labels(pair))
        self._inc("late:corrected", sum(ag.late_corrected), m.late_ticks.labels("corrected"))
        self._inc("late:dropped", sum(ag.late_dropped), m.late_ticks.labels("dropped"))
        self._inc("dropped", self.writer.ticks_dropped, m.ticks_dropped)
        self._inc("write_errors", self.writer.flush_errors, m.write_errors)
        m.buffer_ticks.set(self.writer.buffer_depth)
        m.buffer_capacity.set(self.settings.buffer_max_ticks)
        if self.writer_thread.last_error:
            m.db_up.set(0)
        m.market_open.set(1 if is_open(now) else 0)
        for pair in self.settings.pairs:
            last = self.consumer.last_utm.get(pair)
            if last is not None:
                m.tick_age.labels(pair).set(max(0.0, (now - last) / 1000))

    def _inc(self, key: str, total: int, counter: Any) -> None:
        delta = total - self._agg_seen.get(key, 0)
        if delta > 0:
            counter.inc(delta)
            self._agg_seen[key] = total

    def _set_status(self, status: str) -> None:
        self.status = status
        self.metrics.set_stream_state(status)
        self.notifier.status(f"stream {status}; {self.consumer.received} updates; buffer {self.writer.buffer_depth}")

    def _on_stream_event(self, e: StreamEvent) -> None:  # library thread: enqueue only
        if e.kind == "status":
            self.consumer.updates.append(_Marker(up=e.status in STREAMING, at_ms=self.clock.now_ms()))
        self._events.append(e)

    # --- start-up -----------------------------------------------------------------------------
    def _prepare_database(self) -> None:
        delay = 1.0
        while not self.stopping.is_set():
            try:
                report = migrate(self.url, self.settings)
                self.edition = report.info
                self.metrics.info.info({"version": __version__, "timescaledb": report.info.describe()})
                log.info("database ready", extra={"timescaledb": report.info.describe()})
                self.metrics.db_up.set(1)
                for w in report.warnings:
                    log.warning(w)
                state = self.writer.load_state(
                    self.clock.now_ms(), self.settings.timeframes,
                    close_grace_ms=self.settings.close_grace_ms, lateness_ms=self.settings.lateness_ms,
                    dedupe_window_ms=self.pipeline.aggregator.dedupe_window_ms,
                    future_tolerance_ms=self.settings.future_tolerance_ms,
                )  # fmt: skip
                n = self.pipeline.resume(state)
                last = state.last_ticks.newest_ms()
                with psycopg.connect(self.url, autocommit=True) as conn:
                    if last is None:
                        last = conn.execute(
                            "SELECT (extract(epoch FROM max(time)) * 1000)::bigint FROM ticks "
                            "WHERE time > now() - make_interval(secs => %s)",
                            (self.settings.backfill_max_age_s,),
                        ).fetchone()[0]
                    with conn.transaction():
                        spooled = self.spool.commit(conn, self.writer.origin)  # cleared once committed
                        # An interval a crash left open ends at the last tick that was committed.
                        conn.execute(
                            "UPDATE stream_coverage SET ended_at = greatest(started_at, coalesce(%s, started_at)), "
                            "end_reason = 'crashed' WHERE ended_at IS NULL",
                            (ms_to_dt(last) if last is not None else None,),
                        )
                        rederived = self._rederive_flags(conn)
                    self.spool.clear()
                    self.book.load_open(conn)
                if spooled or rederived:
                    log.warning(
                        "repair flags recovered at start",
                        extra={"from_spool": spooled, "rederived_incomplete": rederived},
                    )
                # Whatever happened between the last committed tick and the first new one
                # (a restart, kill -9, a first start mid-bucket) is a gap to repair.
                self.consumer.gap_start = int(last) if last is not None else None
                self.consumer.awaiting_first = True
                self._first_start = last is None
                log.info("resumed open buckets", extra={"candles": n, "last_tick_ms": last})
                del state
                _release_freed_memory()
                return
            except (psycopg.Error, WriterError) as e:
                log.warning("database not reachable at start; retrying", extra={"error": str(e).strip()})
                self.notifier.status("waiting for the database")
                self.stopping.wait(delay)
                delay = min(delay * 2, self.settings.db_retry_max_s)

    def _rederive_flags(self, conn: psycopg.Connection) -> int:
        """A stream row still incomplete after its bucket closed, with no repair on record, is
        what a crash leaves when the flag (or the final row) was in memory: flag it now."""
        s, now = self.settings, self.clock.now_ms()
        floor = now - int(s.backfill_max_age_s * 1000)
        flags: list[Flag] = []
        for tf in s.timeframes:
            settled = now - tfs.length_ms(tf) - s.close_grace_ms - s.lateness_ms
            rows = conn.execute(
                "SELECT c.pair, c.bucket FROM candles c WHERE c.source = 'stream' AND NOT c.complete "
                "AND c.timeframe = %s AND c.bucket >= %s AND c.bucket < %s AND NOT EXISTS ("
                "SELECT 1 FROM candle_repairs r WHERE r.pair = c.pair AND r.timeframe = c.timeframe "
                "AND r.bucket = c.bucket)",
                (tf, ms_to_dt(floor), ms_to_dt(settled)),
            ).fetchall()
            flags += [Flag(p, tf, dt_to_ms(b), "incomplete_at_start") for p, b in rows]
        return write_flags(conn, flags)

    def _check_epics(self) -> None:
        for epic in self.epics:
            self.rest.check_epic(epic)
        log.info("epics checked", extra={"epics": len(self.epics), "suffix": self.settings.ig_epic_suffix})
        # The instruments table tells readers (Grafana, the bot) which epics and pairs are live.
        with psycopg.connect(self.url, autocommit=True) as conn, conn.transaction():
            conn.execute(
                "UPDATE instruments SET enabled = (pair = ANY(%s)), updated_at = now()", (list(self.settings.pairs),)
            )
            conn.cursor().executemany(
                "UPDATE instruments SET epic = %s, updated_at = now() WHERE pair = %s AND epic <> %s",
                [(epic, pair, epic) for epic, pair in self.epics.items()],
            )

    # --- connection management ----------------------------------------------------------------
    def _backoff(self, cause: str) -> None:
        self._attempt += 1
        cap = min(self.settings.reconnect_max_backoff_s, 0.5 * 2 ** min(self._attempt, 10))
        delay = random.uniform(cap / 2, cap)  # jitter: many collectors never reconnect in step
        self.metrics.reconnects.labels(cause).inc()
        log.info("reconnecting", extra={"cause": cause, "attempt": self._attempt, "delay_s": round(delay, 2)})
        self.stopping.wait(delay)

    def _drop_stream(self) -> None:
        if self.stream is not None:
            with contextlib.suppress(Exception):
                self.stream.disconnect()
            self.stream = None
        self.consumer.updates.append(_Marker(up=False, at_ms=self.clock.now_ms()))

    def _connect(self) -> bool:
        """Fresh login (new CST/XST) and a new Lightstreamer client."""
        self._set_status("LOGGING_IN")
        try:
            self.session = self.rest.login()
            self.metrics.logins.labels("ok").inc()
        except LoginFailed as e:
            self.metrics.logins.labels("refused").inc()
            log.error("IG login refused", extra={"error": str(e)})
            return False
        except (RestError, OSError) as e:
            self.metrics.logins.labels("error").inc()
            log.warning("IG login failed", extra={"error": str(e)})
            return False
        self._events.clear()
        self.stream = StreamClient(
            self.session, self.epics, self.consumer.updates, self._on_stream_event, self.clock.now_ms,
            max_queue=self.settings.buffer_max_ticks, on_overflow=self.consumer.overflow,
            scales=self.rest.scales, on_transport=self.metrics.set_stream_transport,  # issue 14's hook
        )  # fmt: skip
        self._set_status("CONNECTING")
        self.stream.connect()
        self.connected_at_ms = None
        self._connect_started = time.monotonic()
        return True

    def _handle_events(self) -> str | None:
        """Process queued stream events; returns a reconnect cause or None."""
        while self._events:
            e = self._events.popleft()
            log.debug("stream event", extra={"kind": e.kind, "status": e.status, "code": e.code})
            if e.kind == "status":
                log.info("stream status", extra={"status": e.status})
                if e.status in STREAMING:
                    self._set_status("CONNECTED")
                    self._attempt = 0
                    self.connected_at_ms = self.clock.now_ms()
                    if not getattr(self, "_ready_sent", False):
                        self.notifier.ready("streaming")
                        self._ready_sent = True
                elif e.status == TERMINAL_STATUS:
                    self._set_status("DISCONNECTED")
                    return "server_end"
                elif e.status.startswith("DISCONNECTED"):
                    self._set_status("RETRYING")
                    self._connect_started = time.monotonic()
            elif e.kind == "server_error":
                log.warning("stream server error", extra={"code": e.code, "message": e.message})
                return "server_error"
            elif e.kind == "subscription_error":
                log.error(
                    "subscription refused: check IG_EPIC_SUFFIX for this account type",
                    extra={"code": e.code, "message": e.message},
                )
                return "server_error"
        return None

    def _stale(self) -> bool:
        """Silent stream during market hours (the client never reports STALLED itself)."""
        if self.status != "CONNECTED":
            return False
        now = self.clock.now_ms()
        if not is_open(now):
            return False
        last = max(self.consumer.last_arrival_ms, self.connected_at_ms or 0)
        return now - last > self.settings.stale_after_s * 1000

    # --- main loop ------------------------------------------------------------------------------
    def run(self) -> int:
        s = self.settings
        self.metrics.set_stream_state("STOPPED")
        self._prepare_database()
        if self.stopping.is_set():
            return 0
        self.writer_thread.start()
        self.consumer.start()
        self.repairs.start()
        self.auditor.start()
        try:
            self._check_epics()
        except RestError as e:
            log.error("epic check failed", extra={"error": str(e)})
            if "not available" in str(e):
                return 2
        except LoginFailed as e:
            log.error("IG login refused at start", extra={"error": str(e)})
        next_keepalive = time.monotonic() + s.session_keepalive_s
        next_maint = time.monotonic() + 60
        next_trim = time.monotonic() + MEMORY_TRIM_EVERY_S
        next_metrics = 0.0
        connected = False
        while not self.stopping.is_set():
            if not connected:
                connected = self._connect()
                if not connected:
                    self._backoff("login_failed")
                    continue
            cause = self._handle_events()
            if cause is None and self._stale():
                cause = "stale"
                log.warning("no ticks during market hours; reconnecting", extra={"stale_after_s": s.stale_after_s})
            if (
                cause is None
                and self.status in ("CONNECTING", "RETRYING")
                and time.monotonic() - self._connect_started > max(30.0, s.stale_after_s)
            ):
                cause = "stale"  # the library's own retries are not getting anywhere
            if cause:
                self._drop_stream()
                connected = False
                self._set_status("DISCONNECTED")
                self._backoff(cause)
                continue
            now = time.monotonic()
            if now >= next_keepalive:
                next_keepalive = now + s.session_keepalive_s
                try:
                    self.rest.keepalive()
                except Exception as e:
                    log.warning("session keep-alive failed; the next reconnect logs in again", extra={"error": str(e)})
            if now >= next_metrics:
                next_metrics = now + 1.0
                self._sync_metrics()
                # systemd restarts us when the pings stop: ping only while the data path lives.
                if self.consumer.alive and self.writer_thread.alive:
                    self.notifier.watchdog()
                elif not getattr(self, "_unhealthy_logged", False):
                    self._unhealthy_logged = True
                    log.error("a worker thread died; withholding the systemd watchdog ping so the unit restarts")
            if now >= next_trim:
                next_trim = now + MEMORY_TRIM_EVERY_S
                _release_freed_memory()
            if now >= next_maint:
                next_maint = now + 3600
                threading.Thread(target=self._maintenance, name="maintenance", daemon=True).start()
            self.stopping.wait(0.05)
        return self._shutdown()

    def _maintenance(self) -> None:
        """Apache edition: tick retention ourselves. Full edition without a working scheduler:
        materialize the rollups ourselves (real-time aggregation keeps answers right anyway)."""
        info = getattr(self, "edition", None)
        try:
            with psycopg.connect(self.url, autocommit=True, application_name="ig-collector maintenance") as conn:
                if info is not None and info.edition == "apache":
                    conn.execute(
                        "SELECT drop_chunks('ticks', older_than => %s::interval)", (self.settings.ticks_retention,)
                    )
                elif info is not None:
                    failing = conn.execute(
                        "SELECT count(*) FROM timescaledb_information.job_stats WHERE last_run_status = 'Failed' "
                        "AND hypertable_name IN ('candles_1h', 'candles_4h', 'candles_1d')"
                    ).fetchone()[0]
                    if failing or not info.scheduler_running:
                        for view in ("candles_1h", "candles_4h", "candles_1d"):
                            conn.execute(
                                f"CALL refresh_continuous_aggregate('{view}', now() - interval '3 days', "
                                "now() - interval '1 hour')"
                            )
                        log.warning("TimescaleDB jobs are failing or not scheduled; refreshed rollups ourselves")
        except psycopg.Error as e:
            log.warning("maintenance skipped", extra={"error": str(e).strip()})

    def _shutdown(self) -> int:
        log.info("stopping: flushing forming candles")
        self.notifier.stopping("flushing")
        self._set_status("STOPPED")
        if self.stream is not None:
            with contextlib.suppress(Exception):
                self.stream.disconnect()
        self.consumer.stop()
        last = self.consumer.last_tick_ms()
        if last is not None and self.consumer.gap_start is None:
            self.writer.submit_coverage(CoverageMark(up=False, at_ms=last, reason="stopped"))
        self.repairs.stop()
        self.auditor.stop()
        self._sync_metrics()
        clean = self.writer_thread.stop(timeout=8.0)
        self.writer.close()
        self.rest.logout()
        if not clean:
            flags, marks = self.writer.unwritten_flags()
            where = None
            try:
                where = self.spool.save(flags, marks) if flags or marks else None
            except OSError as e:
                log.error(
                    "could not keep the repair flags on disk; the next start's audit reports their buckets",
                    extra={"flags": len(flags), "spool": str(self.spool.path), "error": str(e)},
                )
            log.error(
                "database unreachable at shutdown: tick and candle rows not written are re-derived at the next "
                "start (their buckets are repaired from REST); repair flags kept on disk for it",
                extra={"flags_spooled": len(flags), "spool": str(where) if where else None},
            )
        log.info("stopped", extra={"ticks_written": self.writer.ticks_written})
        return 0

    def stop(self) -> None:
        self.stopping.set()


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="overrides COLLECTOR_LOG_LEVEL")


def _release_freed_memory() -> None:
    """Give freed heap pages back to the OS (glibc only; a no-op elsewhere).

    glibc returns memory only from the top of a heap; what bursts free in the middle (resuming
    a 120,000-tick dedupe window, a database outage's buffer, Lightstreamer's backlog after a
    stall, a batch of REST repairs) stays resident. Under a fault a minute the soak measured the
    heap in use flat at 17-24 MB while glibc's free chunks rose 1.4 -> 16.6 MB in 7 minutes, and
    RSS with them, with every new largest burst. malloc_trim(0) releases those pages (madvise;
    0.6-9.7 MB in 0.4-7.3 ms in the soaks); called at start and once a minute from the
    supervisor loop, never from the tick path."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def main(args: argparse.Namespace) -> int:
    # trading-ig imports pandas when it is installed (~50 MB resident, a third of the collector's
    # 150 MB budget) only to return DataFrames, which the collector never asks for.
    sys.modules.setdefault("pandas", None)  # type: ignore[arg-type]
    quiet = logging.getLogger("trading_ig.utils")
    quiet.disabled = True  # its "pandas is not present" warning is noise here
    import trading_ig  # noqa: F401

    quiet.disabled = False
    settings = load_settings(getattr(args, "config", None))
    logs.setup(args.log_level or settings.log_level, settings.log_format)
    daemon = Daemon(settings)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: daemon.stop())
    server, _ = daemon.metrics.serve(settings.metrics_host, settings.metrics_port)
    log.info(
        "collector starting",
        extra={"version": __version__, "pairs": len(settings.pairs), "timeframes": ",".join(settings.timeframes),
               "metrics": f"{settings.metrics_host}:{settings.metrics_port}"},
    )  # fmt: skip
    try:
        return daemon.run()
    finally:
        with contextlib.suppress(Exception):
            server.shutdown()  # type: ignore[attr-defined]
