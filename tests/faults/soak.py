"""Soak: the real collector under a full market with a random fault every minute.

    .venv/bin/python -m tests.faults.soak                                     # 30 min, 2,000 ticks/s, speed 1
    .venv/bin/python -m tests.faults.soak --minutes 60 --rate 2000 --out soak.json
    .venv/bin/python -m tests.faults.soak --minutes 35 --faults drop_close,drop_abort,end_48,end_32,stall,db_cut \
        --probe probe.jsonl --out soak.json                                   # one process, its own heap figures
    .venv/bin/python -m tests.faults.report --soak soak.json                  # into docs/reliability.md

28 pairs from the simulator at `--rate` ticks/s, a fresh database behind a TCP proxy, and
`ig-collector run` as a child process. Every `--fault-every` seconds one fault, drawn at random
(seeded): stream closed, stream reset (TCP abort), END 48, END 32, stream stalled, database cut
(proxy) or kill -9 and restart. Samples every 5 s: the collector's RSS (/proc/PID/status),
ticks, metrics. At the end: ticks/s, candles written, reconnects, rejects,
latency percentiles from the collector's histograms (tick_to_visible is wall time; the close lag
is on the market clock, so it is real seconds at --speed 1), RSS slope per process, and the
ground-truth comparison of every stored candle.

Memory verdict: each process's RSS after `--warmup` seconds of its life (allocator high-water
marks settle as each kind of fault is first met) is fitted with a least-squares line over at
least `--judge-min` seconds; it must not rise faster than `--max-slope` MB/min (0.25 MB/min
is 15 MB an hour, far above the fit's noise over 5 minutes of 5 s samples), and no sample may
reach 150 MB. A kill -9 starts a new process with its own warm-up, so keep `--minutes` at least
twice warm-up plus judge time (20 min with the defaults) for a verdict; leave kill9 out of
`--faults` for one process judged over the whole run. `--probe` tells a leak (live objects or
heap in use growing) from a backlog or from freed heap the allocator keeps.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from collector import devdb, tickfile
from collector.audit import Class as AuditClass
from collector.audit import run_audit
from collector.clock import LinearClock
from collector.config import load_settings
from collector.migrate import migrate
from collector.models import Tick
from collector.simulator.clock import read_clock
from tests.e2e.harness import WEDNESDAY_10_UTC, CollectorProcess, compare, free_port, rss_mb, wait_for
from tests.netproxy import TcpProxy

P = "ig_collector"
FAULTS = ("drop_close", "drop_abort", "end_48", "end_32", "stall", "db_cut", "kill9")


PROBE_DIR = Path(__file__).resolve().parent / "memprobe"


def probe_summary(path: Path, pids: list[int]) -> str:
    """Per process, the ranges the probe saw: what RSS is made of, and whether anything grows."""
    rows: dict[int, list[dict[str, Any]]] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        rows.setdefault(r["pid"], []).append(r)
    parts = []
    for n, pid in enumerate(pids, start=1):
        rs = rows.get(pid)
        if not rs:
            continue

        def span(key: str, fmt: str = ".1f", rs: list[dict[str, Any]] = rs) -> str:
            values = [r[key] for r in rs]
            return f"{min(values):{fmt}}-{max(values):{fmt}}"

        trims = [t for r in rs for t in r["trims"]]
        freed = f", {min(mb for _, mb in trims):.1f}-{max(mb for _, mb in trims):.1f} MB each" if trims else ""
        slowest = max(r["max_trim_ms"] for r in rs)
        parts.append(
            f"process {n}: heap in use {span('heap_in_use')} MB, free heap chunks {span('heap_free')} MB, "
            f"live objects {span('objects', ',')}, {rs[-1]['n_trims']} trims (max {slowest:.1f} ms{freed})"
        )
    return "; ".join(parts) or "no probe records"


def _fault_kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = sorted(set(kinds) - set(FAULTS))
    if not kinds or unknown:
        raise argparse.ArgumentTypeError(f"unknown fault kind(s) {unknown or text!r}; choose from {','.join(FAULTS)}")
    return kinds


class RemoteSimulator:
    """The IG simulator in a process of its own (as IG is remote: the soak's own threads - the
    database proxy, sampling - must not slow the market down), driven over `/_sim/`. Quacks like
    `Simulator` for CollectorProcess and compare()."""

    username, password, api_key, account_id = "sim-user", "sim-pass", "sim-key", "SIMACC1"

    def __init__(self, rate: float, speed: float, start_ms: int, seed: int, keepalive_ms: int = 1000) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        start = dt.datetime.fromtimestamp(start_ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "simulator", "--port", str(self.port), "--seed", str(seed),
             "--ticks-per-second", str(rate), "--speed", str(speed), "--start", start,
             "--keepalive-ms", str(keepalive_ms)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self._up, 30, "the simulator to listen")
        self._clock = read_clock(self.url)

    def _up(self) -> bool:
        try:
            self._get("/_sim/clock")
            return True
        except OSError:
            return False

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.load(r)

    def _post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        req = urllib.request.Request(self.url + path, data=json.dumps(body or {}).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    def now_ms(self) -> int:
        return self._clock.now_ms()

    def market_clock(self) -> LinearClock:
        return self._clock

    def stats(self) -> dict[str, Any]:
        return self._get("/_sim/stats")

    def ticks(self) -> list[Tick]:
        with urllib.request.urlopen(self.url + "/_sim/ticks.csv", timeout=300) as r:
            return tickfile.parse(io.TextIOWrapper(r, encoding="utf-8"))

    def drop_connections(self, mode: str) -> Any:
        return self._post("/_sim/drop", {"mode": mode})

    def end_sessions(self, code: int) -> Any:
        return self._post("/_sim/end", {"code": code})

    def stall_stream(self) -> Any:
        return self._post("/_sim/stall")

    def unstall_stream(self) -> Any:
        return self._post("/_sim/unstall")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def hist(ms: dict[str, float], name: str) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) of a Prometheus histogram from a metrics() dict."""
    out = []
    prefix = f"{name}_bucket{{le="
    for k, v in ms.items():
        if k.startswith(prefix):
            le = k[len(prefix) : -1]
            out.append((float("inf") if le in ("+Inf", "inf") else float(le), v))
    return sorted(out)


def quantile(buckets: list[tuple[float, float]], q: float) -> str:
    if not buckets or buckets[-1][1] == 0:
        return "n/a"
    total = buckets[-1][1]
    target = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= target:
            if le == float("inf"):
                return f"> {prev_le:g} s"
            frac = (target - prev_c) / (c - prev_c) if c > prev_c else 1.0
            return f"{(prev_le + (le - prev_le) * frac) * 1000:,.0f} ms"
        prev_le, prev_c = le, c
    return "n/a"


@dataclass
class Incarnation:
    """One collector process (a kill -9 starts the next)."""

    pid: int
    started: float
    rss: list[tuple[float, float]] = field(default_factory=list)  # (wall s since soak start, MB)
    last: dict[str, float] = field(default_factory=dict)  # last metrics sample


def summed(incs: list[Incarnation], prefix: str) -> dict[str, float]:
    """Counters and histogram buckets summed over every process's last sample."""
    out: dict[str, float] = {}
    for inc in incs:
        for k, v in inc.last.items():
            if k.startswith(prefix):
                out[k] = out.get(k, 0.0) + v
    return out


def by_label(ms: dict[str, float], name: str) -> str:
    parts = []
    for k, v in sorted(ms.items()):
        if k.startswith(name + "{") and v:
            parts.append(f"{k[len(name) + 1 : -1].split('=', 1)[1]} {v:,.0f}")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.faults.soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=2000.0, help="ticks per second over all pairs")
    ap.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second")
    ap.add_argument("--fault-every", type=float, default=60.0, help="seconds between faults")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--settle", type=float, default=120.0, help="seconds after the last fault for repairs")
    ap.add_argument("--out", type=Path, help="write the figures as JSON (for tests.faults.report --soak)")
    ap.add_argument(
        "--warmup", type=float, default=300.0, help="seconds of each process's life before its RSS trend is judged"
    )
    ap.add_argument(
        "--judge-min", type=float, default=300.0, help="seconds of samples after the warm-up needed to judge a trend"
    )
    ap.add_argument("--max-slope", type=float, default=0.25, help="MB/min above which RSS counts as growing")
    ap.add_argument(
        "--faults",
        type=_fault_kinds,
        default=FAULTS,
        help=f"comma-separated kinds to draw from (default all: {','.join(FAULTS)}); "
        "without kill9 one process lives the whole run, for the longest memory trend",
    )
    ap.add_argument(
        "--probe",
        type=Path,
        help="the collector logs its heap, live objects by type and each malloc_trim here (JSON lines, "
        "tests/faults/memprobe); summarized in the report",
    )
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    command = "python -m tests.faults.soak " + shlex.join(argv if argv is not None else sys.argv[1:])

    server = devdb.server_url()
    db_url = devdb.fresh_database(server, "soak")
    migrate(db_url, load_settings())
    proxy, proxied = TcpProxy.for_url(db_url)
    sim = RemoteSimulator(args.rate, args.speed, WEDNESDAY_10_UTC, args.seed)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    # A silent stream is noticed after 10 s here (the library does not notice a server-side
    # close; 2,000 ticks/s makes 10 s of silence unambiguous). Production default: 120 s.
    env = {"COLLECTOR_STALE_AFTER_S": str(10 * args.speed), "COLLECTOR_DB_RETRY_MAX_S": "10"}
    if args.probe:
        args.probe.write_text("")
        env["MEMPROBE_OUT"] = str(args.probe.resolve())
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROBE_DIR), os.environ.get("PYTHONPATH")]))
    c = CollectorProcess(sim, proxied, work, env)  # type: ignore[arg-type]
    try:
        t_start = time.monotonic()
        started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        print(f"soak: {args.minutes:g} min, {args.rate:,.0f} ticks/s, speed {args.speed:g}; log {c.log_path}")

        incs: list[Incarnation] = []

        def launch() -> None:
            c.start()
            assert c.proc is not None
            incs.append(Incarnation(c.proc.pid, time.monotonic() - t_start))
            wait_for(lambda: c.metric(f"{P}_stream_connected") == 1, 90, "the collector to stream")

        def sample() -> None:
            inc = incs[-1]
            mb = rss_mb(inc.pid)
            if mb is not None:
                inc.rss.append((time.monotonic() - t_start, mb))
            with contextlib.suppress(OSError):
                inc.last = c.metrics()

        launch()
        covered_from = sim.now_ms()
        faults: list[tuple[float, str]] = []
        end = t_start + args.minutes * 60
        next_fault = time.monotonic() + args.fault_every
        next_sample = 0.0
        pending_restore: list[tuple[float, str]] = []
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_sample:
                sample()
                next_sample = now + 5
                last = incs[-1].rss[-1][1] if incs[-1].rss else float("nan")
                m = incs[-1].last
                print(
                    f"  t={now - t_start:5.0f}s rss={last:6.1f} MB "
                    f"written={m.get(f'{P}_ticks_written_total', 0):>10,.0f} "
                    f"connected={m.get(f'{P}_stream_connected', 0):.0f} buffer={m.get(f'{P}_buffer_ticks', 0):,.0f}",
                    flush=True,
                )
            for due, what in list(pending_restore):
                if now >= due:
                    pending_restore.remove((due, what))
                    if what == "unstall":
                        sim.unstall_stream()
                    elif what == "db":
                        proxy.start()
            if now >= next_fault and not pending_restore:
                fault = rng.choice(args.faults)
                faults.append((now - t_start, fault))
                print(f"  t={now - t_start:5.0f}s fault: {fault}", flush=True)
                if fault == "drop_close":
                    sim.drop_connections("close")
                elif fault == "drop_abort":
                    sim.drop_connections("abort")
                elif fault == "end_48":
                    sim.end_sessions(48)
                elif fault == "end_32":
                    sim.end_sessions(32)
                elif fault == "stall":
                    sim.stall_stream()
                    pending_restore.append((now + 15, "unstall"))
                elif fault == "db_cut":
                    proxy.stop()
                    pending_restore.append((now + 20, "db"))
                elif fault == "kill9":
                    sample()
                    c.kill9()
                    time.sleep(3)
                    launch()
                next_fault = now + args.fault_every
            time.sleep(0.2)
        for _, what in pending_restore:
            sim.unstall_stream() if what == "unstall" else proxy.start()
        faults_end_ms = sim.now_ms()
        print(f"faults over; settling up to {args.settle:g} s for repairs", flush=True)
        settle_end = time.monotonic() + args.settle
        while time.monotonic() < settle_end:
            sample()
            with psycopg.connect(db_url) as conn:
                open_ = conn.execute(
                    "SELECT count(*) FROM candle_repairs WHERE resolved_at IS NULL AND bucket + "
                    "(CASE timeframe WHEN '5m' THEN interval '5 min' ELSE interval '15 min' END) "
                    "< to_timestamp(%s / 1000.0) - interval '2 min'",
                    (sim.now_ms(),),
                ).fetchone()[0]
            if open_ == 0 and time.monotonic() - t_start > args.minutes * 60 + 10:
                break
            time.sleep(5)
        sample()
        connected = incs[-1].last.get(f"{P}_stream_connected", 0)
        alive = c.alive()
        covered_to = sim.now_ms() - 2 * 60_000
        stats = sim.stats()
        code = c.stop()
        proxy.stop()

        # --- figures -----------------------------------------------------------------------------
        cmp = compare(db_url, sim, ("5m", "15m"), covered_from, covered_to)  # type: ignore[arg-type]
        with psycopg.connect(db_url) as conn:
            reported = {
                (p, tf, int(b.timestamp() * 1000))
                for p, tf, b in conn.execute(
                    "SELECT pair, timeframe, bucket FROM candle_repairs "
                    "WHERE resolved_at IS NULL OR resolution = 'unrecoverable'"
                )
            }
            tick_rows = conn.execute("SELECT count(*) FROM ticks").fetchone()[0]
            candle_rows = ", ".join(
                f"{n:,} {src}{'' if done else ' incomplete'}"
                for src, done, n in conn.execute(
                    "SELECT source, complete, count(*) FROM candles GROUP BY 1, 2 ORDER BY 1, 2 DESC"
                )
            )
            repairs = dict(
                conn.execute("SELECT coalesce(resolution, 'pending'), count(*) FROM candle_repairs GROUP BY 1")
            )
        unexplained = [k for k in cmp.missing if k not in reported]
        with psycopg.connect(db_url, autocommit=True) as conn:
            audit = run_audit(conn, load_settings(timeframes="5m,15m"), covered_from, covered_to, sim.now_ms())
        total = summed(incs, P)
        wall = time.monotonic() - t_start
        received = sum(v for k, v in total.items() if k.startswith(f"{P}_ticks_received_total{{"))
        visible = hist(total, f"{P}_tick_to_visible_seconds")
        close = hist(total, f"{P}_candle_close_lag_seconds")
        slopes, timeline, judged = [], [], []
        for i, inc in enumerate(incs):
            pts = [(t, mb) for t, mb in inc.rss if t - inc.started >= args.warmup]
            span = (pts[-1][0] - pts[0][0]) if len(pts) >= 3 else 0.0
            if span >= args.judge_min:
                x = np.array([t for t, _ in pts]) / 60
                y = np.array([mb for _, mb in pts])
                slope = float(np.polyfit(x, y, 1)[0])
                flat = slope <= args.max_slope
                judged.append(flat)
                slopes.append(
                    f"process {i + 1} ({pts[0][0] / 60:.1f}-{pts[-1][0] / 60:.1f} min): {slope:+.2f} MB/min, "
                    + ("flat" if flat else "GROWING")
                )
            else:
                life = ((inc.rss[-1][0] if inc.rss else inc.started) - inc.started) / 60
                slopes.append(f"process {i + 1} (lived {life:.1f} min): too short to judge")
            per_min = {}
            for t, mb in inc.rss:
                per_min.setdefault(int(t // 60), mb)
            timeline.append(" ".join(f"{m:>3}m:{mb:5.1f}" for m, mb in sorted(per_min.items())))
        flat_verdict = (
            "no process lived long enough to judge (run longer)"
            if not judged
            else f"{'flat' if all(judged) else 'GROWING'}: {sum(judged)} of {len(judged)} judged processes flat "
            f"(slope <= {args.max_slope:g} MB/min after a {args.warmup:g} s warm-up)"
        )
        all_rss = [mb for inc in incs for _, mb in inc.rss]
        fault_counts: dict[str, int] = {}
        for _, f in faults:
            fault_counts[f] = fault_counts.get(f, 0) + 1
        sources = ", ".join(f"{n:,} {s}" for s, n in sorted(cmp.by_source.items()))
        verdict = (
            f"{cmp.compared:,} complete candles compared ({sources}): "
            f"{len(cmp.mismatches)} differ; {len(cmp.missing)} closed buckets not stored complete, "
            f"{len(cmp.missing) - len(unexplained)} of them reported (repairs {repairs}), "
            f"{len(unexplained)} unexplained"
        )
        out: dict[str, Any] = {
            "command": command,
            "started_at": started_at,
            "params": {"minutes": args.minutes, "rate": args.rate, "pairs": 28, "speed": args.speed},
            "faults": faults,
            "faults_summary": ", ".join(f"{n} {f}" for f, n in sorted(fault_counts.items())) or "none",
            "ticks_generated": int(stats["ticks_generated"]),
            "ticks_received": int(received),
            "tick_rows": int(tick_rows),
            "ticks_per_s": received / wall,
            "candles_written": by_label(total, f"{P}_candles_written_total").replace("timeframe=", ""),
            "candle_rows": candle_rows,
            "reconnects": by_label(total, f"{P}_stream_reconnects_total") or "0",
            "sessions_created": int(stats["sessions_created"]),
            "rejects": by_label(total, f"{P}_ticks_rejected_total"),
            "ticks_dropped": int(total.get(f"{P}_ticks_dropped_total", 0)),
            "visible_p": " / ".join(quantile(visible, q) for q in (0.5, 0.95, 0.99)),
            "close_lag_p": " / ".join(quantile(close, q) for q in (0.5, 0.95, 0.99))
            + ("" if args.speed == 1 else f" (simulated; / {args.speed:g} for wall)"),
            "rss_summary": f"{all_rss[0]:.1f} / {max(all_rss):.1f} / {all_rss[-1]:.1f} MB" if all_rss else "n/a",
            "rss_max_mb": max(all_rss) if all_rss else None,
            "rss_slope": "; ".join(slopes) or "n/a",
            "rss_flat": flat_verdict,
            "rss_timeline": "\n|\n".join(timeline),
            "verdict": verdict,
            "audit": f"{audit.count(AuditClass.UNACCOUNTED)} unaccounted, {len(audit.differing)} of "
            f"{audit.checked_against_ticks} stream candles differ from their ticks; classes {audit.classes}",
            "mismatches": cmp.mismatches[:20],
            "unexplained": [list(k) for k in unexplained[:20]],
            "end_state": {"alive": alive, "stream_connected": connected, "exit_code": code},
            "covered_sim_ms": [covered_from, covered_to, faults_end_ms],
        }
        if args.probe:
            out["probe"] = probe_summary(args.probe, [inc.pid for inc in incs])
        print(json.dumps({k: v for k, v in out.items() if k not in ("faults", "rss_timeline")}, indent=2, default=str))
        print("RSS timeline (MB):\n" + out["rss_timeline"])
        if args.out:
            args.out.write_text(json.dumps(out, indent=2, default=str))
            print(f"wrote {args.out}")
        ok = (
            not cmp.mismatches
            and not unexplained
            and audit.ok
            and alive
            and connected == 1
            and code == 0
            and (max(all_rss) if all_rss else 0) < 150
            and bool(judged)
            and all(judged)
        )
        print("SOAK PASSED" if ok else "SOAK FAILED")
        return 0 if ok else 1
    finally:
        if c.alive():
            c.kill9()
        proxy.stop()
        sim.stop()
        devdb.drop_database(server, db_url)


if __name__ == "__main__":
    sys.exit(main())
