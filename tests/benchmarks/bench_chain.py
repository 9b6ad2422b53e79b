"""The whole chain: IG simulator -> real Lightstreamer client -> consumer (validation, aggregator)
-> writer -> TimescaleDB, in one process, at rising tick rates. Reports delivered ticks/s, how
far the chain keeps up with the offered rate, the collector's resident memory, and where the CPU
time goes, per thread (the simulator's own thread is reported separately: it is not ours).
By default each rate runs twice, first with lightstreamer-client-lib as shipped (in a process of
its own: the patches are process-wide), then with collector/ls_speedups.py, and the two compare.

    .venv/bin/python -m tests.benchmarks.bench_chain [--rates 2000,5000,10000] [--seconds 15]
                                                     [--library both|as-shipped|patched]

Figures only; nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict

from collector import devdb, ls_speedups
from collector.config import load_settings
from collector.daemon import Daemon
from collector.migrate import migrate
from collector.simulator.server import Simulator
from tests.e2e.harness import WEDNESDAY_10_UTC, rss_mb

CLK_TCK = os.sysconf("SC_CLK_TCK")
LIBRARY = "Lightstreamer client + other library threads"


def _thread_cpu() -> dict[str, float]:
    """CPU seconds per Python thread name, read from /proc (threads that ended are gone)."""
    out: dict[str, float] = defaultdict(float)
    for t in threading.enumerate():
        try:
            with open(f"/proc/self/task/{t.native_id}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[_group(t.name)] += (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (OSError, IndexError, TypeError):
            continue
    return out


def _group(name: str) -> str:
    if name == "MainThread":
        return "supervisor (main)"
    if name.startswith(("consumer", "ig-writer", "repairs")):
        return {"consumer": "consumer: validation + aggregator", "ig-writer": "writer: COPY + upserts"}.get(
            name.split()[0], name
        )
    if "simulator" in name.lower() or name.startswith("sim"):
        return "simulator (not ours)"
    return LIBRARY


def run_rate(server: str, rate: float, seconds: float) -> dict[str, float]:
    url = devdb.fresh_database(server, "bench_chain")
    sim = Simulator(seed=3, ticks_per_second=rate, speed=1.0, start_ms=WEDNESDAY_10_UTC, keepalive_ms=1000)
    sim.start()
    try:
        settings = load_settings().model_copy(
            update={
                "database_url": url, "ig_username": sim.username, "ig_password": _secret(sim.password),
                "ig_api_key": _secret(sim.api_key), "ig_account_id": sim.account_id, "ig_api_url": sim.url,
                "clock": sim.market_clock().spec(), "metrics_port": 0, "backfill_enabled": False,
            }
        )  # fmt: skip
        migrate(url, settings)
        d = Daemon(settings, clock=sim.market_clock())
        runner = threading.Thread(target=d.run, name="supervisor-run", daemon=True)
        runner.start()
        deadline = time.monotonic() + 60
        while d.writer.ticks_written == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        cpu0, w0, g0, t0 = (
            _thread_cpu(),
            d.writer.ticks_written,
            sim.stats().get("ticks_generated", 0),
            time.monotonic(),
        )
        time.sleep(seconds)
        cpu1, w1, g1, t1 = (
            _thread_cpu(),
            d.writer.ticks_written,
            sim.stats().get("ticks_generated", 0),
            time.monotonic(),
        )
        rss = rss_mb() or 0.0
        d.stop()
        runner.join(30)
    finally:
        sim.stop()
        devdb.drop_database(server, url)
    elapsed = t1 - t0
    delivered = (w1 - w0) / elapsed
    offered = (g1 - g0) / elapsed if g1 else rate
    print(f"\noffered {rate:>8,.0f} ticks/s: delivered {delivered:>9,.0f} ticks/s to committed rows "
          f"({delivered / offered:.0%} of what the simulator generated), process RSS {rss:.0f} MB")  # fmt: skip
    spent = {k: cpu1.get(k, 0.0) - cpu0.get(k, 0.0) for k in cpu1}
    total = sum(spent.values()) or 1.0
    for k, v in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"    {k:<48} {v / elapsed:6.2f} cores  {v / total:5.0%}  {v / max(w1 - w0, 1) * 1e6:7.1f} us/tick")
    library = spent.get(LIBRARY, 0.0)
    return {"rate": rate, "delivered": delivered, "share": delivered / offered, "rss": rss,
            "library_us": library / max(w1 - w0, 1) * 1e6}  # fmt: skip


def _secret(v: str):
    from pydantic import SecretStr

    return SecretStr(v)


def _as_shipped(rates: str, seconds: float) -> list[dict[str, float]]:
    """The same rates with the library unpatched, in a child process (patches are process-wide)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, "-m", "tests.benchmarks.bench_chain", "--rates", rates, "--seconds", str(seconds),
               "--library", "as-shipped", "--json", out.name]  # fmt: skip
        subprocess.run(cmd, check=True)
        with open(out.name) as f:
            return json.load(f)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", default="2000,5000,10000")
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument(
        "--library",
        choices=("both", "as-shipped", "patched"),
        default="both",
        help="lightstreamer-client-lib as shipped, with collector/ls_speedups.py, or both compared",
    )
    p.add_argument("--json", help="also write the figures here")
    a = p.parse_args()
    baseline = _as_shipped(a.rates, a.seconds) if a.library == "both" else None
    if a.library == "as-shipped":
        ls_speedups.apply = lambda: False  # the daemon's stream client then runs the library unchanged
    server = devdb.server_url()
    label = "library as shipped" if a.library == "as-shipped" else "library with collector/ls_speedups.py"
    print(f"whole chain, 28 pairs, 5m + 15m, {a.seconds:g} s per rate, one process, {os.cpu_count()} cores; {label}")
    figures = [run_rate(server, r, a.seconds) for r in (float(x) for x in a.rates.split(","))]
    if a.json:
        with open(a.json, "w") as f:
            json.dump(figures, f)
    for before, after in zip(baseline, figures, strict=True) if baseline is not None else ():
        print(f"\n{after['rate']:,.0f} ticks/s offered, as shipped -> patched: Lightstreamer client "
              f"{before['library_us']:.0f} -> {after['library_us']:.0f} us/tick "
              f"({before['library_us'] / max(after['library_us'], 1e-9):.2f}x less CPU per tick), delivered "
              f"{before['delivered']:,.0f} -> {after['delivered']:,.0f} ticks/s "
              f"({before['share']:.0%} -> {after['share']:.0%}), "
              f"RSS {before['rss']:.0f} -> {after['rss']:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
