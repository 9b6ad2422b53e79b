"""Start-up: a database ready for the writer, and the state a restart must carry over.

Before the writer thread runs: the schema is migrated, the open buckets are resumed into the
aggregator (so a restart mid-bucket continues the same candle), the repair flags a stop could
not write (the spool) and those a crash lost (incomplete rows with no repair on record) are
committed, a coverage interval a crash left open is closed, and the gap tracker learns where
the stream's coverage ended. Until the database answers, this retries with backoff; the
daemon starts nothing else meanwhile (docs/design.md §4 and §6).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

import psycopg

from . import __version__, db
from . import timeframes as tfs
from .config import Settings
from .db import TimescaleInfo
from .gaps import GapTracker
from .ig_rest import RestClient
from .leadership import Fence, is_fenced
from .metrics import Metrics
from .migrate import migrate
from .models import Flag
from .pipeline import Pipeline
from .repairs import RepairBook
from .spool import FlagSpool
from .store import Writer, WriterError, write_flags
from .systemd_notify import Notifier
from .vocabulary import FlagReason

log = logging.getLogger("collector.daemon")


class Startup:
    """Prepares the database and the daemon's carried-over state; runs once, before the threads."""

    def __init__(
        self,
        settings: Settings,
        url: str,
        *,
        writer: Writer,
        pipeline: Pipeline,
        book: RepairBook,
        spool: FlagSpool,
        gaps: GapTracker,
        metrics: Metrics,
        notifier: Notifier,
        now_ms: Callable[[], int],
        stopping: threading.Event,
        release_memory: Callable[[], None],
        fence: Fence | None = None,
    ) -> None:
        """`release_memory`: the resume state is the largest burst of the process's life; its
        pages go back to the OS as soon as it is dropped. `fence`: the leader's token, which
        opens the start-up's write transaction (None: no election, as in tests)."""
        self.fence = fence
        self.settings, self.url = settings, url
        self.writer, self.pipeline, self.book, self.spool, self.gaps = writer, pipeline, book, spool, gaps
        self.metrics, self.notifier, self.now_ms, self.stopping = metrics, notifier, now_ms, stopping
        self.release_memory = release_memory

    def prepare_database(self) -> TimescaleInfo | None:
        """The edition found, once the database is ready; None when stopped while waiting."""
        delay = 1.0
        while not self.stopping.is_set():
            try:
                return self._prepare()
            except (psycopg.Error, WriterError) as e:
                if is_fenced(e):
                    raise  # not the leader any more: retrying can never succeed
                log.warning("database not reachable at start; retrying", extra={"error": str(e).strip()})
                self.notifier.status("waiting for the database")
                self.stopping.wait(delay)
                delay = min(delay * 2, self.settings.db_retry_max_s)
        return None

    def _prepare(self) -> TimescaleInfo:
        s = self.settings
        report = migrate(self.url, s)
        self.metrics.info.info({"version": __version__, "timescaledb": report.info.describe()})
        log.info("database ready", extra={"timescaledb": report.info.describe()})
        self.metrics.db_up.set(1)
        for w in report.warnings:
            log.warning(w)
        state = self.writer.load_state(
            self.now_ms(), s.timeframes, close_grace_ms=s.close_grace_ms, lateness_ms=s.lateness_ms,
            dedupe_window_ms=self.pipeline.aggregator.dedupe_window_ms, future_tolerance_ms=s.future_tolerance_ms,
        )  # fmt: skip
        n = self.pipeline.resume(state)
        last = state.last_ticks.newest_ms()
        with psycopg.connect(self.url, autocommit=True) as conn:
            if last is None:
                last = db.newest_tick_ms(conn, s.backfill_max_age_s)
            with conn.transaction():
                if self.fence is not None:
                    self.fence(conn)
                spooled = self.spool.commit(conn, self.writer.origin)  # cleared once committed
                db.end_crashed_coverage(conn, last)
                rederived = self._rederive_flags(conn)
            self.spool.clear()
            self.book.load_open(conn)
        if spooled or rederived:
            log.warning(
                "repair flags recovered at start", extra={"from_spool": spooled, "rederived_incomplete": rederived}
            )
        # Whatever happened between the last committed tick and the first new one
        # (a restart, kill -9, a first start mid-bucket) is a gap to repair.
        self.gaps.resume(int(last) if last is not None else None)
        log.info("resumed open buckets", extra={"candles": n, "last_tick_ms": last})
        del state
        self.release_memory()
        return report.info

    def _rederive_flags(self, conn: psycopg.Connection) -> int:
        """A stream row still incomplete after its bucket closed, with no repair on record, is
        what a crash leaves when the flag (or the final row) was in memory: flag it now."""
        s, now = self.settings, self.now_ms()
        floor = now - int(s.backfill_max_age_s * 1000)
        flags: list[Flag] = []
        for tf in s.timeframes:
            settled = now - tfs.length_ms(tf) - s.close_grace_ms - s.lateness_ms
            rows = db.incomplete_unflagged(conn, tf, floor, settled)
            flags += [Flag(p, tf, b, FlagReason.INCOMPLETE_AT_START) for p, b in rows]
        return write_flags(conn, flags)


def check_epics(rest: RestClient, url: str, epics: Mapping[str, str], suffix: str, fence: Fence | None = None) -> None:
    """Every configured epic exists for this account (raises `EpicUnavailable` otherwise), and
    the instruments table says which are live. `epics`: epic -> pair."""
    for epic in epics:
        rest.check_epic(epic)
    log.info("epics checked", extra={"epics": len(epics), "suffix": suffix})
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        if fence is not None:
            fence(conn)
        db.publish_instruments(conn, epics)


def run_maintenance(url: str, edition: TimescaleInfo | None, ticks_retention: str, fence: Fence | None = None) -> None:
    """Apache edition: tick retention ourselves. Full edition without a working scheduler:
    materialize the rollups ourselves (real-time aggregation keeps answers right anyway).
    Retention is dropped inside a fenced transaction; a rollup refresh cannot run inside one
    (TimescaleDB refuses), so it is fenced just before: it only recomputes from stored ticks."""
    try:
        with psycopg.connect(url, autocommit=True, application_name="ig-collector maintenance") as conn:
            if edition is not None and edition.edition == "apache":
                with conn.transaction():
                    if fence is not None:
                        fence(conn)
                    db.drop_old_ticks(conn, ticks_retention)
            elif edition is not None and (db.rollup_jobs_failing(conn) or not edition.scheduler_running):
                if fence is not None:
                    with conn.transaction():
                        fence(conn)
                db.refresh_rollups(conn)
                log.warning("TimescaleDB jobs are failing or not scheduled; refreshed rollups ourselves")
    except psycopg.Error as e:
        log.warning("maintenance skipped", extra={"error": str(e).strip()})
