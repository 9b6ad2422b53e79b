"""The fault-injection kit: one `Scenario` = the IG simulator, a fresh database, the real
`ig-collector run` process, and the verdict that compares what it stored with ground truth.

A scenario reads as: start, let it stream, inject a fault (through `/_sim/`, a TCP proxy in front
of PostgreSQL or the process itself), wait for recovery with a bounded wait, keep collecting,
check it is still streaming, let the REST repairs finish, stop, and judge:

* every complete candle in the database (stream or REST) equals the simulator's ticks
  aggregated plainly;
* every bucket that closed in the covered interval is stored complete, or is reported: still
  pending a repair or declared unrecoverable in `candle_repairs`, with the metric and a log line;
* the process ran to the end, streaming, and stopped cleanly.

Each scenario's figures (candles compared by source, repairs, reconnects, time to recover) go
to the results file (`FAULTS_RESULTS`, default in the temp directory) that
`python -m tests.faults.report` renders into docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from collector import timeframes as tfs
from collector.audit import Class as AuditClass
from collector.audit import Verdict as AuditVerdict
from collector.audit import run_audit
from collector.config import load_settings
from collector.simulator.server import Simulator
from collector.simulator.truth import Key
from collector.store import ms_to_dt
from tests.e2e.harness import CollectorProcess, Comparison, compare, wait_for
from tests.netproxy import TcpProxy

TIMEFRAMES = ("5m", "15m")
P = "ig_collector"
MIN = 60_000


def results_path() -> Path:
    """Where the suite writes its figures and the report script reads them."""
    return Path(os.environ.get("FAULTS_RESULTS") or Path(tempfile.gettempdir()) / "ig-collector-faults.json")


def record_result(entry: dict[str, Any]) -> None:
    """Merge one scenario's figures into the results file (a run of a subset keeps the others)."""
    path = results_path()
    lock = path.with_suffix(".lock")
    with open(lock, "w") as lk:
        import fcntl

        fcntl.flock(lk, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.exists() else {}
        data.setdefault("scenarios", {})[entry.get("test") or entry["scenario"]] = entry
        data["updated_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        tmp.replace(path)


class CountingProxy(TcpProxy):
    """A loopback proxy in front of the simulator's REST gateway that counts requests by path
    prefix (the stream does not pass here: its endpoint comes from the session response)."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        super().__init__(upstream_host, upstream_port)
        self.requests: dict[str, int] = {}
        self._count_lock = threading.Lock()

    def count(self, prefix: str) -> int:
        with self._count_lock:
            return self.requests.get(prefix, 0)

    def _pipe(self, src: Any, dst: Any, up: bool) -> None:
        if not up:
            return super()._pipe(src, dst, up)
        tail = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                buf = tail + data
                for prefix in (b"GET /prices/", b"POST /session", b"GET /session", b"GET /markets/"):
                    n = buf.count(prefix) - tail.count(prefix)
                    if n:
                        with self._count_lock:
                            key = prefix.decode()
                            self.requests[key] = self.requests.get(key, 0) + n
                tail = buf[-16:]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)


@dataclass
class Verdict:
    cmp: Comparison
    reported: set[Key]
    unexplained: list[Key]


@dataclass
class Scenario:
    """One fault scenario's world and its record."""

    name: str
    fault: str
    sim: Simulator
    db_url: str  # direct: what the verdict reads
    workdir: Path
    collector_db_url: str | None = None  # what the collector uses (through a proxy, maybe)
    env: dict[str, str] = field(default_factory=dict)
    rest_proxy: CountingProxy | None = None
    db_proxy: TcpProxy | None = None
    proc: CollectorProcess = field(init=False)
    recoveries: list[float] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    recovered: str = ""
    started_ms: int = 0

    def __post_init__(self) -> None:
        # A silent stream is noticed after 2 simulated minutes (2 s here) unless a scenario says
        # otherwise: lightstreamer-client-lib 1.0.3 does not notice a server-side close itself.
        env = {"COLLECTOR_STALE_AFTER_S": "120", **self.env}
        self.proc = CollectorProcess(self.sim, self.collector_db_url or self.db_url, self.workdir, env)
        if self.rest_proxy is not None:
            self.proc.env_extra["IG_API_URL"] = f"http://127.0.0.1:{self.rest_proxy.port}"

    # --- observation ------------------------------------------------------------------------
    def metric(self, name: str, **labels: str) -> float:
        return self.proc.metric(f"{P}_{name}", **labels)

    def metric_sum(self, name: str) -> float:
        """A counter summed over all its labels."""
        try:
            ms = self.proc.metrics()
        except OSError:
            return 0.0
        full = f"{P}_{name}"
        return sum(v for k, v in ms.items() if k == full or k.startswith(full + "{"))

    def streaming(self) -> bool:
        return self.metric("stream_connected") == 1 and self.metric("ticks_written_total") > 0

    def log_records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.proc.log_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def logged(self, text: str) -> int:
        """How many log records carry `text` in their message."""
        return sum(1 for r in self.log_records() if text in str(r.get("msg", "")))

    def sql(self, query: str, *params: Any) -> list[tuple]:
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            return conn.execute(query, params or None).fetchall()

    # --- lifecycle --------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> int:
        """Start the collector and wait until it streams and writes; the simulated time then."""
        self.proc.start()
        wait_for(self.streaming, timeout, f"{self.name}: the collector to stream and write ticks")
        if not self.started_ms:
            self.started_ms = self.sim.now_ms()
        return self.sim.now_ms()

    def collect(self, sim_minutes: float) -> None:
        """Let the market run `sim_minutes` of simulated time."""
        end = self.sim.now_ms() + int(sim_minutes * MIN)
        while self.sim.now_ms() < end:
            time.sleep(0.1)

    def sleep_until_phase(self, tf: str, phase_min: float, *, min_wait_min: float = 0.0) -> None:
        """Wait until simulated time is `phase_min` minutes into a `tf` bucket (at least
        `min_wait_min` from now): faults land mid-bucket, not on a boundary by luck."""
        n = tfs.length_ms(tf)
        now = self.sim.now_ms()
        target = now - now % n + int(phase_min * MIN)
        while target < now + int(min_wait_min * MIN):
            target += n
        while self.sim.now_ms() < target:
            time.sleep(0.02)

    def sessions(self) -> int:
        """Stream sessions the simulator has created so far (a reconnect creates one)."""
        return int(self.sim.stats()["sessions_created"])

    def recovered_within(
        self,
        since: float,
        sessions_before: int | None = None,
        timeout: float = 60,
        what: str = "the stream",
        *,
        database: bool = True,
    ) -> float:
        """Wait until the collector streams again on a new session (when `sessions_before` is
        given) and new ticks arrive and - unless the database is meant to be away - are
        committed; records and returns the wall seconds since `since` (time.monotonic() when
        the fault was injected or ended)."""
        if sessions_before is not None:
            wait_for(lambda: self.sessions() > sessions_before, timeout, f"{self.name}: a new session for {what}")
        name, counter = ("ticks_written_total", self.metric) if database else ("ticks_received_total", self.metric_sum)
        before = counter(name)
        wait_for(
            lambda: self.metric("stream_connected") == 1 and counter(name) > before,
            timeout,
            f"{self.name}: {what} to stream{' and write' if database else ''} again",
        )
        took = round(time.monotonic() - since, 2)
        self.recoveries.append(took)
        return took

    def assert_still_streaming(self) -> None:
        """The end state every scenario demands: alive, connected, ticks still increasing."""
        assert self.proc.alive(), f"{self.name}: the collector process died; log:\n{self.proc.log_text()[-3000:]}"
        assert self.metric("stream_connected") == 1, f"{self.name}: not connected at the end"
        before = self.metric_sum("ticks_received_total")
        wait_for(lambda: self.metric_sum("ticks_received_total") > before, 30, f"{self.name}: ticks to keep coming")
        written = self.metric("ticks_written_total")
        wait_for(lambda: self.metric("ticks_written_total") > written, 30, f"{self.name}: ticks to keep being written")

    def settle(self, covered_to_ms: int, timeout: float = 90, *, allow_pending: bool = False) -> None:
        """Wait until every repair of a bucket that ended by `covered_to_ms` is resolved (or,
        with `allow_pending`, just until those buckets are closed and stored)."""
        wait_for(lambda: self.sim.now_ms() > covered_to_ms + MIN, 30, "the covered buckets to close")
        if allow_pending:
            return
        wait_for(
            lambda: self.unresolved_before(covered_to_ms) == 0,
            timeout,
            f"{self.name}: REST repairs of buckets closed before the end to finish "
            f"({self.unresolved_before(covered_to_ms)} left)",
        )

    def unresolved_before(self, end_ms: int) -> int:
        rows = self.sql("SELECT timeframe, bucket FROM candle_repairs WHERE resolved_at IS NULL")
        return sum(1 for tf, b in rows if _ms(b) + tfs.length_ms(tf) <= end_ms)

    def stop(self) -> None:
        code = self.proc.stop()
        assert code == 0, f"{self.name}: exit code {code} after SIGTERM"

    # --- verdict ----------------------------------------------------------------------------
    def reported_buckets(self) -> set[Key]:
        """Buckets the collector owns up to: repair still pending, or declared unrecoverable."""
        rows = self.sql(
            "SELECT pair, timeframe, bucket FROM candle_repairs "
            "WHERE resolved_at IS NULL OR resolution = 'unrecoverable'"
        )
        return {(p, tf, _ms(b)) for p, tf, b in rows}

    def audit(self, since_ms: int, until_ms: int) -> AuditVerdict:
        """`ig-collector audit` over the range, as a user would run it on their database."""
        settings = load_settings(timeframes=",".join(TIMEFRAMES))
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            return run_audit(conn, settings, since_ms, until_ms, self.sim.now_ms())

    def assert_audit_clean(self, since_ms: int, until_ms: int) -> AuditVerdict:
        v = self.audit(since_ms, until_ms)
        self.notes["audit"] = {"unaccounted": v.count(AuditClass.UNACCOUNTED), "differing": len(v.differing),
                               "checked_against_ticks": v.checked_against_ticks, "classes": v.classes}  # fmt: skip
        assert v.ok, (
            f"{self.name}: the audit found {v.count(AuditClass.UNACCOUNTED)} unaccounted buckets "
            f"(e.g. {v.unaccounted[:5]}) and {len(v.differing)} candles differing from ticks ({v.differing[:5]})"
        )
        return v

    def verdict(self, covered_from_ms: int, covered_to_ms: int) -> Verdict:
        """Ground truth against the database; asserts nothing is wrong and nothing is silently
        missing, and that the audit (which knows no ground truth) agrees. Returns the figures
        for further, scenario-specific assertions."""
        self.assert_audit_clean(covered_from_ms, covered_to_ms)
        cmp = compare(self.db_url, self.sim, TIMEFRAMES, covered_from_ms, covered_to_ms)
        assert cmp.mismatches == [], f"{self.name}: {len(cmp.mismatches)} candles differ: {cmp.mismatches[:5]}"
        reported = self.reported_buckets()
        unexplained = [k for k in cmp.missing if k not in reported]
        assert unexplained == [], (
            f"{self.name}: {len(unexplained)} closed buckets neither stored complete nor reported, "
            f"e.g. {unexplained[:5]}; {cmp.summary()}"
        )
        self.notes["compared"] = cmp.compared
        self.notes["by_source"] = dict(sorted(cmp.by_source.items()))
        self.notes["missing_reported"] = len(cmp.missing)
        self.notes["covered_sim_minutes"] = round((covered_to_ms - covered_from_ms) / MIN, 1)
        return Verdict(cmp, reported, unexplained)

    def assert_from_rest(self, buckets: list[int], tf: str = "5m", pairs: Iterable[str] | None = None) -> None:
        """Every candle of these buckets (of these pairs, default all) that the market had - a
        pair with ticks in it - is stored complete with `source = 'rest'`: it was replaced."""
        n = tfs.length_ms(tf)
        only = set(pairs) if pairs is not None else None
        want = {
            (t.pair, b)
            for b in buckets
            for t in self.sim.ticks(from_ms=b, to_ms=b + n - 1)
            if b <= t.time_ms < b + n and (only is None or t.pair in only)
        }
        rows = self.sql(
            "SELECT pair, bucket, source, complete FROM candles WHERE timeframe = %s AND bucket = ANY(%s)",
            tf,
            [ms_to_dt(b) for b in buckets],
        )
        got = {(p, _ms(b)): (src, c) for p, b, src, c in rows}
        bad = sorted((k, got.get(k)) for k in want if got.get(k) != ("rest", True))
        assert want and bad == [], f"{self.name}: outage buckets not replaced from REST: {bad[:5]} ({len(bad)})"
        self.notes.setdefault("rest_checked", 0)
        self.notes["rest_checked"] += len(want)

    def ticks_table_vs_truth(self, before_ms: int | None = None) -> tuple[int, int, int]:
        """(stored, shortfall, foreign): tick rows stored; ground-truth ticks missing from the
        table within each pair's stored span (and before `before_ms`, when a later stream gap
        is expected); stored rows that are not ground truth. The unique index on ticks makes a
        duplicate row impossible, so a set comparison is exact."""
        rows = self.sql("SELECT pair, (extract(epoch FROM time) * 1000)::bigint, bid, ask FROM ticks")
        stored = {(p, int(t), b, a) for p, t, b, a in rows}
        span: dict[str, tuple[int, int]] = {}
        for p, t, _, _ in stored:
            lo, hi = span.get(p, (t, t))
            span[p] = (min(lo, t), max(hi, t))
        truth = {(t.pair, t.time_ms, t.bid, t.ask) for t in self.sim.ticks()}
        end = before_ms if before_ms is not None else 2**63
        in_span = {k for k in truth if k[0] in span and span[k[0]][0] <= k[1] <= span[k[0]][1] and k[1] < end}
        return len(rows), len(in_span - stored), len(stored - truth)

    def repairs_by_resolution(self) -> dict[str, int]:
        rows = self.sql("SELECT coalesce(resolution, 'pending'), count(*) FROM candle_repairs GROUP BY 1")
        return dict(sorted((r, int(n)) for r, n in rows))

    def snapshot_metrics(self) -> None:
        """Figures taken from the live process before it stops."""
        self.notes["reconnects"] = int(self.metric_sum("stream_reconnects_total"))
        self.notes["logins_ok"] = int(self.metric("logins_total", result="ok"))
        self.notes["logins_refused"] = int(self.metric("logins_total", result="refused"))
        self.notes["ticks_written"] = int(self.metric("ticks_written_total"))
        self.notes["ticks_dropped"] = int(self.metric("ticks_dropped_total"))
        self.notes["rejected"] = int(self.metric_sum("ticks_rejected_total"))
        self.notes["rest_errors"] = int(self.metric("rest_errors_total"))
        self.notes["rest_points"] = int(self.metric("rest_points_spent_total", purpose="repair"))
        with contextlib.suppress(Exception):
            self.notes["stream_sessions"] = int(self.sim.stats()["sessions_created"])

    def finish(self, covered_from_ms: int, covered_to_ms: int | None = None, **settle_kw: Any) -> Verdict:
        """The common ending: still streaming, repairs settled, clean stop, verdict. (The record
        is written by the fixture after the test, with its outcome.)"""
        self.assert_still_streaming()
        covered_to = covered_to_ms if covered_to_ms is not None else self.sim.now_ms()
        self.settle(covered_to, **settle_kw)
        self.snapshot_metrics()
        self.stop()
        return self.verdict(covered_from_ms, covered_to)

    def write_record(self, outcome: str, test: str = "") -> None:
        with contextlib.suppress(Exception):
            self.notes["repairs"] = self.repairs_by_resolution()
        record_result(
            {
                "test": test,
                "scenario": self.name,
                "outcome": outcome,
                "fault": self.fault,
                "recovered": self.recovered,
                "recover_s": self.recoveries,
                **self.notes,
                "ran_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }
        )


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def buckets_between(start_ms: int, end_ms: int, tf: str) -> list[int]:
    """Bucket starts of `tf` lying wholly inside [start_ms, end_ms]."""
    n = tfs.length_ms(tf)
    b = start_ms - start_ms % n + (n if start_ms % n else 0)
    out = []
    while b + n <= end_ms:
        out.append(b)
        b += n
    return out


@contextlib.contextmanager
def timed() -> Iterator[Callable[[], float]]:
    t0 = time.monotonic()
    yield lambda: time.monotonic() - t0
