"""Standing by, taking the lease and keeping it: the collector's side of the election
(collector.leadership holds the lease itself; docs/design.md "Leadership and fencing").

A standby is warm, not hot: it migrates, serves its metrics and pings systemd, but logs in to
nothing (IG's streaming rules forbid a second connection to get round its limits) and writes
nothing. Once it holds the lease, the daemon starts as after a restart. A leader that can no
longer vouch for its lease, or whose write the database fenced, re-executes itself: a fresh
process has no stream, no buffered rows and no half-written state to get wrong, and starts
again as a standby under the same PID, so systemd sees no restart.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from .leadership import Fence, Lease, Role
from .metrics import Metrics
from .systemd_notify import Notifier

log = logging.getLogger("collector.standby")

CHANGES_ENV = "IG_COLLECTOR_LEADER_CHANGES"  # carries the changes counter across the re-exec
KEEP_EVERY_S = 0.2  # how often the keeper looks at the lease: well inside its margin
_LEADER_SQL = "SELECT holder, epoch, since, alive FROM collector_leadership"


def carried_changes(environ: dict[str, str] | os._Environ[str] = os.environ) -> int:
    try:
        return max(0, int(environ.get(CHANGES_ENV, "0")))
    except ValueError:
        return 0


def reexec_command() -> list[str]:
    """The command line this process was started with (`-m collector.cli run` or the
    `ig-collector` entry point, interpreter options included), to run it again."""
    return [sys.executable, *sys.orig_argv[1:]]


def stand_by_again(metrics: Metrics) -> None:
    """Replace this process with a fresh one that stands by. Nothing is flushed first: whatever
    is still buffered was written under a lease this process no longer holds."""
    metrics.leader.set(0)
    os.environ[CHANGES_ENV] = str(int(metrics.leader_changes._value.get()) + 1)
    log.warning("lost the lease, standing by")
    for h in logging.getLogger().handlers:
        with contextlib.suppress(Exception):  # a broken handler must not keep a stale leader alive
            h.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, reexec_command())


def leader_fence(lease: Lease, epoch: int) -> Fence:
    """The token for `epoch`, trusted only while `lease` still leads under that very epoch."""
    return Fence(epoch, lease.holder, trusted=lambda: lease.epoch == epoch)


class Standby:
    """Waits for the lease: `wait()` returns the leader's Fence, or None when stopped first."""

    def __init__(
        self,
        url: str,
        lease: Lease,
        metrics: Metrics,
        notifier: Notifier,
        stopping: threading.Event,
        *,
        prepare: Callable[[], Any],
        retry_max_s: float = 30.0,
    ) -> None:
        """`prepare`: the standby's only database change, the schema migration (retried)."""
        self.url, self.lease, self.metrics, self.notifier, self.stopping = url, lease, metrics, notifier, stopping
        self.prepare, self.retry_max_s = prepare, retry_max_s
        self._announced: tuple[str | None, int] | None = None

    def wait(self) -> Fence | None:
        self.metrics.leader.set(0)
        self.metrics.leader_epoch.set(0)
        self.metrics.leader_changes.inc(carried_changes())  # this PID's count before the re-exec
        if not self._prepared():
            return None
        self.notifier.ready("standing by")
        while not self.stopping.is_set():
            epoch = self.lease.try_acquire()
            if epoch is not None:
                log.info(f"leading (epoch {epoch})", extra={"holder": self.lease.holder, "epoch": epoch})
                self.metrics.leader.set(1)
                self.metrics.leader_epoch.set(epoch)
                self.metrics.leader_changes.inc()
                self.notifier.status(f"leading (epoch {epoch})")
                return leader_fence(self.lease, epoch)
            self._announce()
            self.notifier.watchdog()
            self.stopping.wait(self.lease.timing.poll_every_s)
        return None

    def _prepared(self) -> bool:
        delay = 1.0
        while not self.stopping.is_set():
            try:
                self.prepare()
                return True
            except psycopg.Error as e:
                log.warning("database not reachable at start (standing by); retrying", extra={"error": str(e).strip()})
                self.notifier.status("waiting for the database")
                self.stopping.wait(delay)
                delay = min(delay * 2, self.retry_max_s)
        return False

    def _announce(self) -> None:
        """Log who leads once per leader (and epoch), not once a second."""
        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                row = conn.execute(_LEADER_SQL).fetchone()
        except psycopg.Error:
            return
        if row is None:
            return
        holder, epoch, since, alive = row
        key = (holder if alive else None, int(epoch))
        if key == self._announced:
            return
        self._announced = key
        if alive:
            log.info(f"standing by: {holder} leads since {since.isoformat()}", extra={"epoch": int(epoch)})
            self.notifier.status(f"standing by: {holder} leads")
        else:
            log.info("standing by: no live leader yet", extra={"epoch": int(epoch)})


class LeaseKeeper:
    """Renews the lease while leading, on its own thread; calls `on_lost` once, as soon as the
    lease can no longer be trusted (a renew refused, or unanswered past lease - margin)."""

    def __init__(self, lease: Lease, on_lost: Callable[[str], None]) -> None:
        self.lease, self.on_lost = lease, on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease", daemon=True)

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.lease.due():
                self.lease.renew()
            if self.lease.role is not Role.LEAD:
                if not self._stop.is_set():
                    self.on_lost("lease lost")
                return
            self._stop.wait(KEEP_EVERY_S)
