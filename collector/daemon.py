"""`ig-collector run`: the supervised daemon, wired from small parts.

Threads and who owns what:
- the Lightstreamer library's threads call our listeners, which only append to one deque
  (updates and stream state changes in the order the library saw them);
- the consumer thread drains the deque into the pipeline (validation -> aggregator -> writer),
  moves the market clock, and feeds the gap tracker: the stream going down and coming back
  brackets an interval in IG time whose buckets are flagged for REST repair (collector.consumer,
  collector.gaps);
- the writer thread commits ticks and candles (collector.store);
- the repair thread replaces flagged buckets from REST once they close (collector.repairs);
- before any of them, the main thread stands by until this collector holds the lease
  (collector.standby); the lease thread then renews it, and a lost lease or a fenced write
  re-executes the process as a standby;
- the main thread prepares the database (collector.startup), then supervises: login, connect,
  reconnect with backoff and jitter, the tick-age watchdog (collector.supervisor), token
  keep-alive, systemd notify, metrics (collector.daemon_metrics), maintenance, shutdown.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable

from . import __version__, logs
from .audit import AuditLoop
from .clock import Clock, make_clock
from .config import Settings, load_settings
from .consumer import Consumer
from .daemon_metrics import MetricsSync, record_flush
from .db import TimescaleInfo
from .gaps import GapTracker
from .ig_rest import EpicUnavailable, LoginFailed, RestClient, RestError
from .leadership import Fence, Lease, is_fenced
from .metrics import Metrics
from .migrate import migrate
from .pipeline import Pipeline
from .repairs import SETTLE_MS, PartialAwareSink, RepairBook, RepairWorker
from .spool import FlagSpool
from .standby import LeaseKeeper, Standby, stand_by_again
from .startup import Startup, check_epics, run_maintenance
from .store import Writer, WriterThread
from .supervisor import StreamSupervisor
from .systemd_notify import Notifier
from .vocabulary import StreamState

HELP = "run the collector daemon: stream, aggregate, write, supervise, backfill gaps"
log = logging.getLogger("collector.daemon")

MEMORY_TRIM_EVERY_S = 60.0  # see _release_freed_memory
MAINTENANCE_FIRST_S = 60.0  # the first maintenance run, once start-up has settled
MAINTENANCE_EVERY_S = 3600.0
METRICS_EVERY_S = 1.0
LOOP_S = 0.05
EXIT_EPIC_UNAVAILABLE = 2  # a configuration error (IG_EPIC_SUFFIX): no retry can fix it


class Daemon:
    """Builds the parts with their dependencies, runs them, and stops them in order."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        fence: Fence | None = None,
        on_fenced: Callable[[BaseException], None] | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        """`fence`: the leader's token, handed to every part that writes (None: no election, as
        in tests that run the daemon in-process). `on_fenced`: what to do, once, when a write is
        refused because this process no longer leads (main: re-execute as a standby)."""
        settings.require("database_url", "ig_username", "ig_password", "ig_api_key")
        self.settings = settings
        self.fence = fence
        self._on_fenced = on_fenced
        self._fenced_once = threading.Lock()
        self.url: str = settings.database_url  # type: ignore[assignment]
        self.clock = clock or make_clock(settings.clock, settings.ig_api_url)
        now_ms = self.clock.now_ms
        self.metrics = metrics or Metrics()
        self.metrics.init_labels(settings.pairs, settings.timeframes)
        with contextlib.suppress(ValueError):  # already tracked by a registry shared in tests
            self.metrics.track_period_spend(self.url)
        self.notifier = Notifier()
        self.stopping = stopping or threading.Event()
        self.writer = Writer.from_settings(
            settings, self.url, on_flush=functools.partial(record_flush, self.metrics), wall_ms=now_ms, fence=fence
        )
        self.book = RepairBook(self.writer)  # flags become durable with the candles they concern
        self.spool = FlagSpool(settings.spool_dir)
        self.writer_thread = WriterThread.from_settings(self.writer, settings)
        self.writer_thread.on_fenced = self.fenced
        self.pipeline = Pipeline(settings, PartialAwareSink(self.writer, self.book))
        self.repairs = RepairWorker(
            settings, self.url, self.book, self.metrics, now_ms,
            lambda: RestClient(settings, "collector", db_url=self.url, now_ms=now_ms, budget_on_clock=True),
            settle_ms=max(SETTLE_MS, settings.lateness_ms),  # a REST candle must not pre-empt a late tick
            fence=fence, on_fenced=self.fenced,
        )  # fmt: skip
        self.gaps = GapTracker(
            settings.pairs, settings.timeframes, repair_horizon_ms=int(settings.backfill_max_age_s * 1000)
        )
        self.consumer = Consumer(
            self.pipeline, self.gaps, self.book, metrics=self.metrics, now_ms=now_ms,
            write_coverage=self.writer.submit_coverage, wake_repairs=self.repairs.wake, stopping=self.stopping,
        )  # fmt: skip
        self.rest = RestClient(settings, "collector", db_url=self.url, now_ms=now_ms, budget_on_clock=True)
        self.auditor = AuditLoop(settings, self.url, self.metrics, now_ms)
        self.epics = {settings.epic(p): p for p in settings.pairs}  # epic -> pair
        self.supervisor = StreamSupervisor(
            settings, self.rest, self.consumer, epics=self.epics, writer=self.writer, metrics=self.metrics,
            notifier=self.notifier, now_ms=now_ms, stopping=self.stopping,
        )  # fmt: skip
        self.startup = Startup(
            settings, self.url, writer=self.writer, pipeline=self.pipeline, book=self.book, spool=self.spool,
            gaps=self.gaps, metrics=self.metrics, notifier=self.notifier, now_ms=now_ms, stopping=self.stopping,
            release_memory=lambda: _release_freed_memory(),  # looked up at call time: the memory probe wraps it
            fence=fence,
        )  # fmt: skip
        self.metrics_sync = MetricsSync(
            self.metrics, settings, consumer=self.consumer, gaps=self.gaps, aggregator=self.pipeline.aggregator,
            writer=self.writer, writer_thread=self.writer_thread,
        )  # fmt: skip
        self.edition: TimescaleInfo | None = None  # found at start; decides what maintenance does
        self._unhealthy_logged = False  # a dead worker thread is logged once, not every second

    # --- main loop ------------------------------------------------------------------------------
    def fenced(self, e: BaseException) -> None:
        """A write was refused because this process no longer leads: stop at once, write nothing."""
        if not self._fenced_once.acquire(blocking=False):
            return
        log.error("a write was fenced: this collector no longer leads", extra={"error": str(e)})
        if self._on_fenced is not None:
            self._on_fenced(e)
        else:
            self.stopping.set()

    def run(self) -> int:
        try:
            return self._run()
        except Exception as e:
            if not is_fenced(e):
                raise
            self.fenced(e)
            return 0

    def _run(self) -> int:
        self.metrics.set_stream_state(StreamState.STOPPED)
        self.edition = self.startup.prepare_database()
        if self.stopping.is_set():
            return 0
        self.writer_thread.start()
        self.consumer.start()
        self.repairs.start()
        self.auditor.start()
        code = self._check_epics()
        if code is not None:
            return code
        self._supervise()
        return self._shutdown()

    def _check_epics(self) -> int | None:
        """The exit code when the configured epics cannot work for this account; None to go on."""
        try:
            check_epics(self.rest, self.url, self.epics, self.settings.ig_epic_suffix, self.fence)
        except EpicUnavailable as e:
            log.error("epic check failed", extra={"error": str(e)})
            return EXIT_EPIC_UNAVAILABLE
        except LoginFailed as e:
            # The supervisor's logins report the refusal (metric, log) and back off until the
            # credentials are fixed; the epics are checked again at the next start.
            log.error("IG login refused at start", extra={"error": str(e)})
        except RestError as e:
            log.error("epic check failed", extra={"error": str(e)})
        return None

    def _supervise(self) -> None:
        now = time.monotonic()
        next_keepalive = now + self.settings.session_keepalive_s
        next_maint = now + MAINTENANCE_FIRST_S
        next_trim = now + MEMORY_TRIM_EVERY_S
        next_metrics = 0.0
        while not self.stopping.is_set():
            if not self.supervisor.supervise():
                continue
            now = time.monotonic()
            if now >= next_keepalive:
                next_keepalive = now + self.settings.session_keepalive_s
                try:
                    self.rest.keepalive()
                except Exception as e:
                    log.warning("session keep-alive failed; the next reconnect logs in again", extra={"error": str(e)})
            if now >= next_metrics:
                next_metrics = now + METRICS_EVERY_S
                self.metrics_sync.sync(self.clock.now_ms())
                self._watchdog()
            if now >= next_trim:
                next_trim = now + MEMORY_TRIM_EVERY_S
                _release_freed_memory()
            if now >= next_maint:
                next_maint = now + MAINTENANCE_EVERY_S
                threading.Thread(target=self._maintenance, name="maintenance", daemon=True).start()
            self.stopping.wait(LOOP_S)

    def _watchdog(self) -> None:
        """systemd restarts us when the pings stop: ping only while the data path lives."""
        if self.consumer.alive and self.writer_thread.alive:
            self.notifier.watchdog()
        elif not self._unhealthy_logged:
            self._unhealthy_logged = True
            log.error("a worker thread died; withholding the systemd watchdog ping so the unit restarts")

    def _maintenance(self) -> None:
        run_maintenance(self.url, self.edition, self.settings.ticks_retention, self.fence)

    def _shutdown(self) -> int:
        log.info("stopping: flushing forming candles")
        self.notifier.stopping("flushing")
        self.supervisor.set_status(StreamState.STOPPED)
        self.supervisor.disconnect()
        self.consumer.stop()
        mark = self.gaps.stopped()
        if mark is not None:
            self.writer.submit_coverage(mark)
        self.repairs.stop()
        self.auditor.stop()
        self.metrics_sync.sync(self.clock.now_ms())
        clean = self.writer_thread.stop(timeout=8.0)
        self.writer.close()
        self.rest.logout()
        if not clean:
            self._spool_unwritten_flags()
        log.info("stopped", extra={"ticks_written": self.writer.ticks_written})
        return 0

    def _spool_unwritten_flags(self) -> None:
        """The database is away at the end: the repair flags are kept on disk for the next start."""
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

    def stop(self) -> None:
        self.stopping.set()


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="overrides COLLECTOR_LOG_LEVEL")


def _release_freed_memory() -> None:
    """Give freed heap pages back to the OS (glibc only; a no-op elsewhere).

    glibc returns memory only from the top of a heap, so what bursts free in the middle (a
    resumed dedupe window, an outage's write buffer, a stream backlog, a batch of repairs)
    would stay resident and RSS would step up with every new largest burst. Cheap enough for
    once a minute and at start, never on the tick path (figures: docs/measurements/daemon.md).
    Looked up as a module global at each call: the soak's memory probe wraps it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def main(args: argparse.Namespace) -> int:
    # trading-ig imports pandas when it is installed, only to return DataFrames, which the
    # collector never asks for; it would cost a third of the RSS budget (docs/measurements/daemon.md).
    sys.modules.setdefault("pandas", None)  # type: ignore[arg-type]
    quiet = logging.getLogger("trading_ig.utils")
    quiet.disabled = True  # its "pandas is not present" warning is noise here
    import trading_ig  # noqa: F401

    quiet.disabled = False
    settings = load_settings(getattr(args, "config", None))
    logs.setup(args.log_level or settings.log_level, settings.log_format)
    settings.require("database_url", "ig_username", "ig_password", "ig_api_key")
    url: str = settings.database_url  # type: ignore[assignment]
    metrics = Metrics()
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    server, _ = metrics.serve(settings.metrics_host, settings.metrics_port)
    log.info(
        "collector starting",
        extra={"version": __version__, "pairs": len(settings.pairs), "timeframes": ",".join(settings.timeframes),
               "metrics": f"{settings.metrics_host}:{settings.metrics_port}", "node": settings.node},
    )  # fmt: skip
    lease = Lease(url, node_name=settings.node, lease_s=settings.lease_s)
    lost = functools.partial(_lost, metrics, stopping)
    try:
        fence = Standby(url, lease, metrics, Notifier(), stopping, prepare=lambda: migrate(url, settings),
                        retry_max_s=settings.db_retry_max_s).wait()  # fmt: skip
        if fence is None:
            return 0
        keeper = LeaseKeeper(lease, lambda why: lost()).start()
        daemon = Daemon(settings, metrics=metrics, fence=fence, on_fenced=lambda e: lost(), stopping=stopping)
        code = daemon.run()
        keeper.stop()
        if not stopping.is_set() or code:
            return code
        lease.release(bar_s=0)  # a clean stop hands over at once instead of after the lease
        return code
    finally:
        with contextlib.suppress(Exception):
            server.shutdown()  # type: ignore[attr-defined]


def _lost(metrics: Metrics, stopping: threading.Event) -> None:
    """Re-execute as a standby, unless a stop is under way: the database refuses whatever it
    still tries to write, and what it keeps on local disk (the spool) is still owed."""
    if stopping.is_set():
        log.warning("lost the lease while stopping; finishing the stop")
        metrics.leader.set(0)
        return
    stand_by_again(metrics)
