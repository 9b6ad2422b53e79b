"""Who leads: a lease in PostgreSQL (sql/012_leadership.sql), held on a connection of its own.

Two guards, because either alone fails somewhere. The database refuses a stale leader's write
(`leader_fence`, SQLSTATE `IGL01`): that holds even for a leader frozen mid-flush and resumed.
The leader's own clock makes it stop streaming BEFORE the database lets a standby take over, so
two IG streams never overlap: it counts its lease from the moment it SENT the last successful
renew (the database's expiry is at least that plus the lease) and gives up a margin earlier, on
the monotonic clock, which keeps running while the process is frozen.
"""

from __future__ import annotations

import enum
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString

import psycopg

FENCED_SQLSTATE = "IGL01"  # raised by leader_fence: "not the leader" (class IG = this project)
FENCE_SQL = "SELECT leader_fence(%s, %s)"  # epoch, holder: first statement of every write transaction
FLUSH_SQL = "SELECT leader_flush(%s, %s, %s, %s, %s)"  # fence + flush_log row: epoch, pairs, from, to, holder
STEP_DOWN_BAR_LEASES = 2  # a holder that stepped down may not acquire again for this many leases


class NotLeader(RuntimeError):
    """A write was about to happen without a live lease: the caller must stop, not retry."""


def is_fenced(e: BaseException) -> bool:
    """True when `e` (or what caused it) means "this process is not the leader": the database's
    fence refused the write, or `Lease.require` did. Retrying such a write can never succeed."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, NotLeader) or getattr(cur, "sqlstate", None) == FENCED_SQLSTATE:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def fence(conn: psycopg.Connection, epoch: int, holder: str | None = None) -> None:
    """Fence the transaction open on `conn`: raises (is_fenced) unless `epoch` of `holder` leads.
    Pass the holder: after a database failover that lost an acquire, an epoch NUMBER can be
    handed out twice (sql/012_leadership.sql)."""
    conn.execute(FENCE_SQL, (epoch, holder))


@dataclass(frozen=True)
class Fence:
    """The leader's token, handed to every part that writes: `fence(conn)` opens a write
    transaction's proof of leadership, `flush(...)` also logs the writer (flush_log). `trusted`
    is the local clock's word (Lease.leads): a lease this process can no longer vouch for is
    refused before the database is even asked."""

    epoch: int
    holder: str
    trusted: Callable[[], bool] = lambda: True

    def check(self) -> None:
        if not self.trusted():
            raise NotLeader(f"{self.holder} can no longer trust its lease of epoch {self.epoch}")

    def __call__(self, conn: psycopg.Connection[Any] | psycopg.Cursor[Any]) -> None:
        """Fence and log the transaction (no pairs, no span): every row a leader writes, a REST
        repair's or a start-up's included, can then be traced to its epoch (`candle_writers`)."""
        self.check()
        conn.execute(FLUSH_SQL, (self.epoch, [], None, None, self.holder))

    def flush(
        self,
        conn: psycopg.Connection[Any] | psycopg.Cursor[Any],
        pairs: list[str],
        from_time: object | None,
        to_time: object | None,
    ) -> None:
        self.check()
        conn.execute(FLUSH_SQL, (self.epoch, pairs, from_time, to_time, self.holder))


def default_node_name() -> str:
    return socket.gethostname()


@dataclass(frozen=True)
class Instance:
    """The process that holds a lease, as the kernel names it: boot, PID namespace and PID. Two
    instances on one host compare their boot and namespace, so a PID is only ever looked up
    where it means the same process."""

    boot_id: str
    pid_ns: str
    pid: int

    def __str__(self) -> str:
        return f"{self.boot_id}/{self.pid_ns}/{self.pid}"

    @classmethod
    def parse(cls, text: str | None) -> Instance | None:
        boot_id, _, rest = (text or "").partition("/")
        pid_ns, _, pid = rest.rpartition("/")
        return cls(boot_id, pid_ns, int(pid)) if boot_id and pid_ns and pid.isdigit() else None

    @classmethod
    def current(cls) -> Instance | None:
        """This process, or None where the kernel does not say (then no lease is ever reclaimed)."""
        try:
            boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
            pid_ns = os.readlink("/proc/self/ns/pid")
        except OSError:
            return None
        return cls(boot_id, pid_ns, os.getpid()) if boot_id and "/" not in pid_ns else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def dead_predecessor(recorded: str | None, me: Instance | None, alive: Callable[[int], bool] = pid_alive) -> str | None:
    """`recorded` (the instance holding this holder name's lease) when it is provably dead: the
    same boot and PID namespace as this process, another PID, and no such process. Anything
    less certain (another host under the same name, a reboot, PID reused) answers None, and the
    lease is waited out as before: a live leader is never displaced by its namesake."""
    prev = Instance.parse(recorded)
    if me is None or prev is None or (prev.boot_id, prev.pid_ns) != (me.boot_id, me.pid_ns):
        return None
    if prev.pid == me.pid or alive(prev.pid):
        return None  # the same PID is this very process re-executed after it yielded its lease
    return recorded


class Role(enum.StrEnum):
    STANDBY = "standby"  # holds no lease: no IG stream, no writes; tries to acquire
    LEAD = "lead"  # holds a live lease: streams and writes under its epoch
    LOST = "lost"  # held one and can no longer prove it: stop streaming now, then stand by


@dataclass(frozen=True)
class LeaseTiming:
    """Renew every lease/3 (two renewals may fail before the lease is in danger); consider the
    lease lost `margin_s` before it could expire in the database."""

    lease_s: float = 10.0
    margin_s: float | None = None  # None: a fifth of the lease
    standby_poll_s: float = 1.0  # how often a standby asks; capped at lease/3

    def __post_init__(self) -> None:
        if self.lease_s <= 0:
            raise ValueError(f"lease must be positive, got {self.lease_s}")
        if not 0 < self.margin < self.lease_s - self.renew_every_s:
            raise ValueError(f"margin {self.margin} s must be in (0, {self.lease_s - self.renew_every_s}) s")

    @property
    def margin(self) -> float:
        return self.lease_s / 5 if self.margin_s is None else self.margin_s

    @property
    def renew_every_s(self) -> float:
        return self.lease_s / 3

    @property
    def poll_every_s(self) -> float:
        return min(self.standby_poll_s, self.renew_every_s)

    @property
    def trusted_s(self) -> float:
        """How long after sending a successful acquire/renew this process may act as leader."""
        return self.lease_s - self.margin


_STANDBYS = "SELECT leader_standbys(%s, %s)"
_OWN_INSTANCE = "SELECT instance FROM collector_leader WHERE holder = %s"  # a lease under this name


class LeaderState:
    """The leadership decisions, free of I/O: fed the outcome of each acquire/renew with the
    monotonic time the request was SENT, and the clock; it says lead, stand by or lost."""

    def __init__(self, timing: LeaseTiming) -> None:
        self.timing = timing
        self.role = Role.STANDBY
        self.epoch: int | None = None
        self.trusted_until: float | None = None  # monotonic; only while leading
        # Standbys alive at the last answer. None of them: a leader cut off from the database
        # keeps streaming and buffering (nobody can take over, and the database still fences
        # it should one appear); one or more: it yields when its trust runs out, because one of
        # them will take over.
        self.standbys = 0
        self._last_attempt: float | None = None

    def acquired(self, epoch: int | None, sent_at: float, standbys: int = 0) -> Role:
        self._last_attempt = sent_at
        self.standbys = standbys
        if self.role is Role.LEAD:
            raise RuntimeError("acquire while leading: renew instead")
        if epoch is None:
            self.role = Role.STANDBY
            return self.role
        self.role, self.epoch = Role.LEAD, epoch
        self.trusted_until = sent_at + self.timing.trusted_s
        return self.role

    def renewed(self, ok: bool, sent_at: float, standbys: int = 0) -> Role:
        """The database answered a renew: yes extends the trust; no means the lease is gone."""
        self._last_attempt = sent_at
        if self.role is not Role.LEAD:
            return self.role  # a lost lease is never revived: acquire again, under a new epoch
        if not ok:
            return self._lose()
        assert self.trusted_until is not None
        if sent_at >= self.trusted_until and self.standbys:
            return self._lose()  # sent after we stopped trusting it: too late to count
        self.standbys = standbys
        self.trusted_until = max(self.trusted_until, sent_at + self.timing.trusted_s)
        return self.role

    def unanswered(self, sent_at: float) -> Role:
        """A request failed without an answer (connection lost, timeout): only the clock decides."""
        self._last_attempt = sent_at
        return self.tick(sent_at)

    def tick(self, now: float) -> Role:
        if self.role is Role.LEAD and self.trusted_until is not None and now >= self.trusted_until and self.standbys:
            return self._lose()
        return self.role

    def stood_down(self) -> Role:
        """The caller stopped streaming and writing after LOST (or stepped down): stand by."""
        self.role, self.epoch, self.trusted_until = Role.STANDBY, None, None
        return self.role

    def due(self, now: float) -> bool:
        """Whether to ask the database now: renew while leading, acquire while standing by."""
        if self._last_attempt is None:
            return True
        every = self.timing.renew_every_s if self.role is Role.LEAD else self.timing.poll_every_s
        return now - self._last_attempt >= every

    def leads(self, now: float) -> bool:
        return self.tick(now) is Role.LEAD

    def _lose(self) -> Role:
        self.role, self.trusted_until = Role.LOST, None
        return self.role


class Lease:
    """The lease on its own autocommit connection, so a busy or broken writer connection never
    delays a renewal. Reconnects on the next call after a connection error (libpq's multi-host
    URL then finds the promoted primary). Safe across threads: database calls are serialized on
    one lock, while `leads`, `epoch` and `role` read the state under another and so never wait
    for a renewal stuck on the network."""

    def __init__(
        self,
        url: str,
        *,
        node_name: str | None = None,
        lease_s: float = 10.0,
        margin_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.holder = node_name or default_node_name()
        self.instance = Instance.current()
        self.timing = LeaseTiming(lease_s=lease_s, margin_s=margin_s)
        self.state = LeaderState(self.timing)
        self._clock = clock
        self._conn: psycopg.Connection | None = None
        self._io = threading.Lock()  # one request at a time on the lease connection
        self._mu = threading.Lock()  # the state; never held across a request

    @property
    def epoch(self) -> int | None:
        """The epoch this process leads under, or None."""
        with self._mu:
            return self.state.epoch if self.state.leads(self._clock()) else None

    @property
    def leads(self) -> bool:
        with self._mu:
            return self.state.leads(self._clock())

    @property
    def role(self) -> Role:
        with self._mu:
            return self.state.tick(self._clock())

    def due(self) -> bool:
        """Whether the caller's loop should renew (leading) or try to acquire (standing by) now."""
        with self._mu:
            return self.state.due(self._clock())

    def require(self) -> int:
        """The epoch to fence a write with; raises NotLeader when this process does not lead."""
        epoch = self.epoch
        if epoch is None:
            raise NotLeader(f"{self.holder} does not hold the collector lease")
        return epoch

    def fence(self, conn: psycopg.Connection) -> int:
        """Fence the write transaction open on `conn` (another connection) with this lease;
        returns the epoch. Raises NotLeader without asking when the local clock already says no."""
        epoch = self.require()
        fence(conn, epoch, self.holder)
        return epoch

    def try_acquire(self) -> int | None:
        """The new epoch if the lease was free or expired (the current one if this process
        already leads); None while another holds it, or when the database did not answer."""
        with self._io:
            with self._mu:
                if self.state.leads(self._clock()):
                    return self.state.epoch
                if self.state.role is Role.LOST:
                    self.state.stood_down()
                sent = self._clock()
            try:
                dead = dead_predecessor(self._call(_OWN_INSTANCE, (self.holder,)), self.instance)
                epoch = self._call(
                    "SELECT leader_acquire(%s, %s, %s, %s)",
                    (self.holder, self.timing.lease_s, None if self.instance is None else str(self.instance), dead),
                )
                standbys = int(self._call(_STANDBYS, (self.holder, self.timing.lease_s))) if epoch is not None else 0
            except psycopg.OperationalError:
                with self._mu:
                    self.state.unanswered(sent)
                return None
            with self._mu:
                self.state.acquired(None if epoch is None else int(epoch), sent, standbys)
                return self.state.epoch

    def renew(self) -> bool:
        """True when the database extended the lease. False when it refused (another took over,
        or it lapsed) or did not answer; `leads` then says whether the lease can still be trusted."""
        with self._io:
            with self._mu:
                epoch = self.state.epoch if self.state.tick(self._clock()) is Role.LEAD else None
                sent = self._clock()
            if epoch is None:
                return False
            try:
                ok = bool(self._call("SELECT leader_renew(%s, %s, %s)", (epoch, self.timing.lease_s, self.holder)))
                standbys = int(self._call(_STANDBYS, (self.holder, self.timing.lease_s))) if ok else 0
            except psycopg.OperationalError:
                with self._mu:
                    self.state.unanswered(sent)
                return False
            with self._mu:
                return self.state.renewed(ok, sent, standbys) is Role.LEAD and ok

    def release(self, *, bar_s: float | None = None) -> bool:
        """Step down: the lease ends now so a standby takes over at once. The caller stops
        streaming and writing first. True when the database still had this epoch live.
        `bar_s`: how long this holder may not acquire again (default two leases, so a standby
        wins; 0 for a clean stop, after which this node may lead again as soon as it restarts)."""
        with self._io:
            with self._mu:
                epoch = self.state.epoch
                self.state.stood_down()
            if epoch is None:
                return False
            try:
                bar = STEP_DOWN_BAR_LEASES * self.timing.lease_s if bar_s is None else bar_s
                return bool(self._call("SELECT leader_release(%s, %s, %s)", (epoch, self.holder, bar)))
            except psycopg.OperationalError:
                return False  # it lapses by itself within the lease

    def close(self) -> None:
        with self._io:
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _call(self, query: LiteralString, params: tuple[object, ...]) -> Any:
        if self._conn is None or self._conn.closed:
            # Timeouts well inside the lease: a hung request must not outlive the trust in it.
            budget_ms = max(1000, int(self.timing.renew_every_s * 1000))
            self._conn = psycopg.connect(
                self.url,
                autocommit=True,
                application_name=f"ig-collector lease {self.holder}",
                connect_timeout=max(1, int(self.timing.renew_every_s)),
                options=f"-c statement_timeout={budget_ms} -c lock_timeout={budget_ms}",
                keepalives=1,
                keepalives_idle=max(1, int(self.timing.renew_every_s)),
                keepalives_interval=1,
                keepalives_count=2,
                tcp_user_timeout=budget_ms,
            )
        try:
            row = self._conn.execute(query, params).fetchone()
        except psycopg.OperationalError:
            self._close()
            raise
        return None if row is None else row[0]

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
