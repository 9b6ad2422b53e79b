"""Run the real collector process against the IG simulator and a real database, then compare
what it stored with ground truth (the simulator's `/_sim/ticks.csv`).

Shared by the end-to-end tests and the fault-injection suite: each scenario starts a simulator
on a fast clock (a weekday, market hours), a fresh database, and `ig-collector run` as a child
process, injects its fault through `/_sim/` or the process, and then asks `compare()`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from collector import timeframes as tfs
from collector.models import Tick
from collector.simulator.server import Simulator
from collector.simulator.truth import Key, Row, reference_candles

ROOT = Path(__file__).resolve().parents[2]
WEDNESDAY_10_UTC = int(dt.datetime(2026, 11, 18, 10, 0, tzinfo=dt.UTC).timestamp() * 1000)
SPEED = 60.0  # one simulated minute per wall second: a 5m bucket closes every 5 s


def rss_mb(pid: int | str = "self") -> float | None:
    """Resident memory of a process from /proc (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_simulator(**kw: object) -> Simulator:
    args: dict[str, object] = {
        "seed": 11, "ticks_per_second": 150.0, "speed": SPEED, "start_ms": WEDNESDAY_10_UTC, "keepalive_ms": 1000,
    }  # fmt: skip
    args.update(kw)
    sim = Simulator(**args)  # type: ignore[arg-type]
    sim.start()
    return sim


@dataclass
class CollectorProcess:
    """`ig-collector run` as a child process, configured only through its environment."""

    sim: Simulator
    db_url: str
    workdir: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    metrics_port: int = field(default_factory=free_port)
    runs: int = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / "collector.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IG_", "COLLECTOR_", "DATABASE_URL"))}
        env.update(
            DATABASE_URL=self.db_url, IG_USERNAME=self.sim.username, IG_PASSWORD=self.sim.password,
            IG_API_KEY=self.sim.api_key, IG_ACCOUNT_ID=self.sim.account_id, IG_API_URL=self.sim.url,
            COLLECTOR_CLOCK=self.sim.market_clock().spec(), COLLECTOR_METRICS_PORT=str(self.metrics_port),
            COLLECTOR_LOG_FORMAT="json", COLLECTOR_LOG_LEVEL="INFO",
            COLLECTOR_REST_REQUESTS_PER_MINUTE="6000", COLLECTOR_STALE_AFTER_S="240",
            COLLECTOR_STATE_DIR=str(self.workdir / "state"),
        )  # fmt: skip
        env.update(self.env_extra)
        return env

    def start(self) -> CollectorProcess:
        self.runs += 1
        log = open(self.log_path, "a")  # noqa: SIM115 - handed to the child for its lifetime
        # FAULTS_COLLECTOR_ROOT runs another checkout's collector under this suite (to show a
        # scenario failing on an older version); by default the collector of this checkout.
        root = Path(os.environ.get("FAULTS_COLLECTOR_ROOT") or ROOT)
        env = self.env()
        if root != ROOT:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
            if "/_sim/clock" in (root / "collector" / "clock.py").read_text():
                env["COLLECTOR_CLOCK"] = "simulator"  # a checkout whose collector reads the simulator itself
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "run"], env=env, cwd=root, stdout=log, stderr=log
        )
        return self

    def stop(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def metrics(self) -> dict[str, float]:
        """Every sample as `name{labels}` -> value (labels sorted), from the live endpoint."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        key = f"{name}{{{','.join(f'{k}={v}' for k, v in sorted(labels.items()))}}}" if labels else name
        try:
            return self.metrics().get(key, 0.0)
        except OSError:
            return 0.0


def wait_for(pred: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


# --- ground truth ---------------------------------------------------------------------------------


def reference(ticks: Iterable[Tick], timeframes: Iterable[str]) -> dict[Key, Row]:
    return reference_candles(ticks, timeframes)


@dataclass
class Stored:
    row: Row
    complete: bool
    source: str


def stored_candles(db_url: str) -> dict[Key, Stored]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT pair, timeframe, bucket, bid_open, bid_high, bid_low, bid_close, "
            "ask_open, ask_high, ask_low, ask_close, ticks, complete, source FROM candles"
        ).fetchall()
    return {(r[0], r[1], int(r[2].timestamp() * 1000)): Stored(tuple(r[3:12]), r[12], r[13]) for r in rows}


@dataclass
class Comparison:
    compared: int = 0
    by_source: dict[str, int] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)
    missing: list[Key] = field(default_factory=list)
    incomplete: list[Key] = field(default_factory=list)

    def summary(self) -> str:
        return json.dumps(
            {"compared": self.compared, "by_source": self.by_source, "mismatches": len(self.mismatches),
             "missing": len(self.missing), "incomplete": len(self.incomplete)}
        )  # fmt: skip


def compare(
    db_url: str, sim: Simulator, timeframes: Iterable[str], covered_from_ms: int, covered_to_ms: int
) -> Comparison:
    """Every complete stored candle must equal ground truth; every ground-truth bucket that
    closed within [covered_from_ms, covered_to_ms] must be stored complete."""
    timeframes = list(timeframes)
    ref = reference(sim.ticks(), timeframes)
    got = stored_candles(db_url)
    cmp = Comparison()
    for k, s in got.items():
        if not s.complete:
            cmp.incomplete.append(k)
            continue
        cmp.compared += 1
        cmp.by_source[s.source] = cmp.by_source.get(s.source, 0) + 1
        want = ref.get(k)
        if want != s.row:
            cmp.mismatches.append(f"{k} {s.source}: stored {s.row} != truth {want}")
    for k in ref:
        _pair, tf, b = k
        if b >= covered_from_ms and b + tfs.length_ms(tf) <= covered_to_ms and not (k in got and got[k].complete):
            cmp.missing.append(k)
    return cmp


def pending_repairs(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT count(*) FROM candle_repairs WHERE resolved_at IS NULL").fetchone()[0]
