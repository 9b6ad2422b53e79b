"""Two collectors against one database (issue 18): a `Duo` is a fault `Scenario` whose world runs
two `ig-collector run` processes, each with its own node name, log, state directory, metrics port
and (optionally) its own TCP proxy in front of PostgreSQL, so a fault can hit one of them only.

The scenario's single-process helpers (`assert_still_streaming`, `snapshot_metrics`, the REST
settle) act on `Scenario.proc`; the duo points it at whichever node leads before using them. The
verdict is the kit's own (ground truth + the audit), plus what only two writers can break: no
write logged by an epoch after the next epoch began (`leader_overlaps`), every row written under
a fence, and the epochs' writes disjoint in time.

A takeover is measured twice, both from the moment of the fault (wall clock, which the database
shares on loopback): until the new leader's `ig_collector_leader` reads 1, and until the first
transaction of the new epoch that committed tick rows (flush_log joined to ticks on xmin).
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import signal
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.harness import CollectorProcess, wait_for
from tests.netproxy import TcpProxy

from .kit import MIN, P, Scenario, results_path

LEASE_S = 10.0  # COLLECTOR_LEASE_S's default: the scenarios run what production runs
TAKEOVER_LIMIT_S = 15.0  # issue 18: a standby takes over within 15 s of the leader's death


@dataclass
class Node:
    """One collector of the pair: a name (COLLECTOR_NODE_NAME) and its process."""

    name: str
    proc: CollectorProcess
    db_proxy: TcpProxy | None = None

    def metrics(self) -> dict[str, float] | None:
        """None when the endpoint does not answer (dead, frozen, or between exec and listen)."""
        try:
            return self.proc.metrics()
        except OSError:
            return None

    def metric(self, name: str, **labels: str) -> float:
        return self.proc.metric(f"{P}_{name}", **labels)

    def leads(self) -> bool:
        ms = self.metrics() if self.proc.alive() else None
        return ms is not None and ms.get(f"{P}_leader") == 1.0

    def stands_by(self) -> bool:
        """Alive, answering, and saying it does not lead (a dead node's 0 does not count)."""
        ms = self.metrics() if self.proc.alive() else None
        return ms is not None and ms.get(f"{P}_leader") == 0.0 and ms.get(f"{P}_stream_connected", 0.0) == 0.0

    def logged(self, text: str) -> int:
        return sum(1 for line in self.proc.log_text().splitlines() if text in line)

    def pid(self) -> int:
        assert self.proc.proc is not None
        return self.proc.proc.pid

    def freeze(self) -> None:
        os.kill(self.pid(), signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid(), signal.SIGCONT)

    def cut_db(self) -> None:
        assert self.db_proxy is not None, f"{self.name} was started without its own database proxy"
        self.db_proxy.stop()

    def heal_db(self) -> None:
        assert self.db_proxy is not None
        self.db_proxy.start()


@dataclass(frozen=True)
class Takeover:
    """One change of leader caused by a fault, timed from the fault."""

    old: str
    new: str
    epoch: int
    to_leader_s: float  # until the new leader's ig_collector_leader read 1
    to_first_tick_s: float  # until the new epoch's first committed tick rows (database clock)
    fault_at: dt.datetime  # wall clock of the fault

    def as_json(self) -> dict[str, Any]:
        return {"old": self.old, "new": self.new, "epoch": self.epoch, "to_leader_s": self.to_leader_s,
                "to_first_tick_s": self.to_first_tick_s, "fault_at": self.fault_at.isoformat()}  # fmt: skip


@dataclass
class Duo:
    """A scenario with two collectors, `a` and `b`; `a` is started first and so leads first."""

    s: Scenario
    nodes: list[Node] = field(default_factory=list)
    takeovers: list[Takeover] = field(default_factory=list)

    @classmethod
    def of(cls, s: Scenario, names: tuple[str, ...] = ("a", "b"), *, db_proxies: bool = False) -> Duo:
        duo = cls(s)
        env = dict(s.proc.env_extra)  # the scenario's env, with its defaults and REST proxy
        for name in names:
            workdir = s.workdir / name
            workdir.mkdir(exist_ok=True)
            url, proxy = s.collector_db_url or s.db_url, None
            if db_proxies:
                proxy, url = TcpProxy.for_url(s.db_url)
            node_env = {"COLLECTOR_NODE_NAME": name, **env}
            duo.nodes.append(Node(name, CollectorProcess(s.sim, url, workdir, node_env), proxy))
        s.proc = duo.nodes[0].proc
        return duo

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def other(self, node: Node) -> Node:
        return next(n for n in self.nodes if n is not node)

    def leader(self) -> Node | None:
        """The one node that says it leads; None when none or both do."""
        leading = [n for n in self.nodes if n.leads()]
        return leading[0] if len(leading) == 1 else None

    # --- lifecycle --------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> int:
        """Start `a`, wait until it leads and streams; then the others, until they stand by.
        Returns the simulated time the leader was first streaming (the verdict's start)."""
        first, *rest = self.nodes
        self.s.proc = first.proc
        t0 = self.s.start(timeout)
        assert first.leads(), f"{first.name} streams but does not say it leads"
        for n in rest:
            self.start_standby(n, timeout)
        return t0

    def start_standby(self, n: Node, timeout: float = 60) -> None:
        sessions = self.s.sessions()
        n.proc.start()
        wait_for(lambda: n.stands_by() and n.logged("standing by") >= 1, timeout, f"{n.name} to stand by")
        assert self.s.sessions() == sessions, f"{n.name} opened an IG stream while standing by"

    def stop(self, n: Node) -> None:
        code = n.proc.stop()
        assert code == 0, f"{n.name}: exit code {code} after SIGTERM"

    def await_takeover(self, old: Node, fault_at: dt.datetime, fault_mono: float) -> Takeover:
        """Wait until the other node leads and has written ticks under its epoch; record it."""
        new = self.other(old)
        try:
            wait_for(new.leads, 3 * TAKEOVER_LIMIT_S, f"{new.name} to take over from {old.name}", interval=0.1)
        except AssertionError as e:
            raise AssertionError(f"{e}; sessions in a transaction: {self.open_transactions()}") from None
        to_leader = round(time.monotonic() - fault_mono, 2)
        epoch = int(new.metric("leader_epoch"))
        wait_for(lambda: self.first_tick_commit(epoch) is not None, 30, f"epoch {epoch}'s first tick rows")
        first = self.first_tick_commit(epoch)
        assert first is not None
        t = Takeover(old.name, new.name, epoch, to_leader, round((first - fault_at).total_seconds(), 2), fault_at)
        self.takeovers.append(t)
        self.s.notes["takeovers"] = [x.as_json() for x in self.takeovers]
        self.s.proc = new.proc
        return t

    def open_transactions(self) -> list[tuple]:
        """Sessions of this database inside a transaction: a fenced one of a frozen leader holds
        the lease row FOR KEY SHARE, and the standby's takeover (FOR UPDATE) waits for it."""
        return self.s.sql(
            "SELECT application_name, state, xact_start, left(query, 60) FROM pg_stat_activity "
            "WHERE datname = current_database() AND xact_start IS NOT NULL AND pid <> pg_backend_pid()"
        )

    def first_tick_commit(self, epoch: int) -> dt.datetime | None:
        rows = self.s.sql(
            "SELECT min(f.logged_at) FROM flush_log f WHERE f.epoch = %s AND f.from_time IS NOT NULL "
            "AND EXISTS (SELECT 1 FROM ticks t WHERE t.time BETWEEN f.from_time AND f.to_time "
            "AND t.xmin = f.xid::xid)",
            epoch,
        )
        return rows[0][0]

    def finish(self, covered_from_ms: int) -> None:
        """The kit's ending with two processes: the leader still streams, repairs settle, the
        standbys stop first (so none takes over during the leader's stop), then the leader;
        the verdict; and the checks only two writers need."""
        lead = self.leader()
        assert lead is not None, f"exactly one node must lead at the end: {[(n.name, n.leads()) for n in self.nodes]}"
        self.s.proc = lead.proc
        self.s.assert_still_streaming()
        covered_to = self.s.sim.now_ms()
        self.s.settle(covered_to)
        self.s.snapshot_metrics()
        for n in self.nodes:
            if n is not lead and n.proc.alive():
                assert n.stands_by(), f"{n.name} should be standing by at the end"
                self.stop(n)
        self.stop(lead)
        self.s.verdict(covered_from_ms, covered_to)
        self.assert_single_writer()

    # --- two writers ------------------------------------------------------------------------
    def epochs(self) -> list[tuple[int, str, dt.datetime, dt.datetime | None, str | None]]:
        return [
            (int(e), h, s, u, r)
            for e, h, s, u, r in self.s.sql(
                "SELECT epoch, holder, since, until, end_reason FROM leader_history ORDER BY epoch"
            )
        ]

    def assert_single_writer(self) -> None:
        """No write of an epoch logged after the next began; every candle and tick row written
        by a fenced transaction of a known epoch, within that epoch's lease; tick rows of
        successive epochs in disjoint, ordered spans of IG time."""
        s = self.s
        overlaps = s.sql("SELECT count(*) FROM leader_overlaps")[0][0]
        assert overlaps == 0, f"writes logged after the next epoch began: {s.sql('SELECT * FROM leader_overlaps')[:5]}"
        s.notes["leader_overlaps"] = 0
        history = {e: (h, since, until) for e, h, since, until, _ in self.epochs()}
        s.notes["epochs"] = {str(e): h for e, (h, _, _) in history.items()}
        unlogged = s.sql("SELECT source, count(*) FROM candle_writers WHERE epoch IS NULL GROUP BY 1 ORDER BY 1")
        assert unlogged == [], f"candle rows (by source) whose writing transaction left no flush_log row: {unlogged}"
        outside = s.sql(
            "SELECT w.pair, w.timeframe, w.bucket, w.epoch, w.updated_at, h.since, h.until FROM candle_writers w "
            "JOIN leader_history h USING (epoch) "
            "WHERE w.holder IS DISTINCT FROM h.holder OR w.updated_at < h.since "
            "OR (h.until IS NOT NULL AND w.updated_at >= h.until)"
        )
        assert outside == [], f"candle rows written outside their epoch's lease: {outside[:5]}"
        spans = s.sql(
            "SELECT f.epoch, min(t.time), max(t.time), count(*) FROM ticks t "
            "LEFT JOIN flush_log f ON f.xid::xid = t.xmin GROUP BY f.epoch ORDER BY f.epoch NULLS FIRST"
        )
        assert all(e is not None for e, *_ in spans), f"tick rows written by no fenced transaction: {spans}"
        for (e1, _, hi1, _), (e2, lo2, _, _) in itertools.pairwise(spans):
            assert hi1 < lo2, f"tick rows of epochs {e1} and {e2} interleave in IG time: {hi1} >= {lo2}"
        s.notes["tick_rows_by_epoch"] = {str(e): int(n) for e, _, _, n in spans}

    def rest_points_since(self, since: dt.datetime) -> int:
        """REST points every spender recorded in rest_spend from `since` on."""
        return int(self.s.sql("SELECT coalesce(sum(points), 0) FROM rest_spend WHERE time >= %s", since)[0][0])


def fault_now() -> tuple[dt.datetime, float]:
    """The moment of a fault, on both clocks: wall (to compare with the database's) and monotonic."""
    return dt.datetime.now(dt.UTC), time.monotonic()


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": round(statistics.median(values), 2), "max": round(max(values), 2)}


def takeover_results_path() -> Path:
    """The takeover measurement's own file, beside the fault results (FAULTS_RESULTS)."""
    p = results_path()
    return p.with_name(p.stem + "-takeovers.json")


def sim_minutes(a_ms: int, b_ms: int) -> float:
    return round((b_ms - a_ms) / MIN, 1)
