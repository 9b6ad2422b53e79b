"""`ig-collector demo`: the whole system on one machine in a minute, no IG account needed.

Starts the built-in IG simulator (REST + Lightstreamer on loopback, on a fast clock so candles
close every few seconds), creates a fresh `igfx_demo` database, runs the real collector against
both (the same code as `ig-collector run`), and ends with a summary: ticks, candles per
timeframe, the newest candles, and a check of every complete candle against the simulator's
ground truth.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import threading
import time

import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table

from . import devdb, logs
from .config import load_settings
from .market_hours import is_open, week_close_before

HELP = "run the collector on the built-in IG simulator and show what it stored"
DEMO_DB = "igfx_demo"


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=60.0, help="how long to collect (wall seconds, default 60)")
    p.add_argument("--speed", type=float, default=60.0, help="simulated seconds per wall second (default 60)")
    p.add_argument("--ticks-per-second", type=float, default=200.0, help="simulated market rate, all pairs")
    p.add_argument(
        "--database-url", help="server to create the demo database on (default: DATABASE_URL or a local one)"
    )


def _demo_database(server: str) -> str:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DEMO_DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DEMO_DB)))
    return devdb.with_dbname(server, DEMO_DB)


def _start_ms(now_ms: int) -> int:
    """The market must be open on the simulated clock: now, or last Friday midday."""
    return now_ms if is_open(now_ms) else week_close_before(now_ms) - 8 * 3_600_000


def main(args: argparse.Namespace) -> int:
    from .daemon import Daemon
    from .simulator.server import Simulator

    console = Console()
    logs.setup("ERROR", "console")  # the summary says what matters; errors still show
    console.print("[bold]1/4[/] database ...", end=" ")
    server = args.database_url or devdb.server_url()
    url = _demo_database(server)
    console.print(f"fresh database [cyan]{DEMO_DB}[/]")
    start = _start_ms(int(time.time() * 1000))
    sim = Simulator(seed=42, ticks_per_second=args.ticks_per_second, speed=args.speed, start_ms=start,
                    keepalive_ms=1000)  # fmt: skip
    sim.start()
    clock = sim.market_clock()  # the collector closes candles on the simulated market's clock
    console.print(
        f"[bold]2/4[/] IG simulator at {sim.url}, clock from "
        f"{dt.datetime.fromtimestamp(start / 1000, dt.UTC):%a %Y-%m-%d %H:%M} UTC at {args.speed:g}x"
    )
    settings = load_settings().model_copy(
        update={
            "database_url": url, "ig_username": sim.username, "ig_password": _secret(sim.password),
            "ig_api_key": _secret(sim.api_key), "ig_account_id": sim.account_id, "ig_api_url": sim.url,
            "clock": clock.spec(), "rest_requests_per_minute": 6000, "metrics_port": 0,
        }
    )  # fmt: skip
    daemon = Daemon(settings, clock=clock)
    runner = threading.Thread(target=daemon.run, name="collector", daemon=True)
    console.print(f"[bold]3/4[/] collector running for {args.seconds:g}s (Ctrl-C stops early) ...")
    runner.start()
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < args.seconds and runner.is_alive():
            time.sleep(1)
            n = int(time.monotonic() - t0)
            if n % 10 == 0:
                w = daemon.writer
                closed = sum(v for (tf, kind), v in w.candles_written.items() if kind == "closed")
                console.print(
                    f"  {n:>3}s  stream {daemon.status:<12} ticks {w.ticks_written:>8}  candles closed {closed}"
                )
    except KeyboardInterrupt:
        console.print("  stopping early")
    daemon.stop()
    runner.join(30)
    truth = sim.ticks()
    sim.stop()
    console.print("[bold]4/4[/] summary")
    _summary(console, url, truth, settings.timeframes)
    console.print(
        f"\nThe data stays in [cyan]{url}[/]: try\n"
        f"  DATABASE_URL={url} .venv/bin/ig-collector status\n"
        f"  DATABASE_URL={url} .venv/bin/trading-bot signals --pair EURUSD --timeframe 5m"
    )
    return 0


def _secret(value: str):
    from pydantic import SecretStr

    return SecretStr(value)


def _summary(console: Console, url: str, truth: list, timeframes: tuple[str, ...]) -> None:
    from .simulator.truth import reference_candles

    with psycopg.connect(url) as conn:
        n_ticks = conn.execute("SELECT count(*) FROM ticks").fetchone()[0]
        console.print(
            f"ticks stored: {n_ticks:,} (the simulator's market made {len(truth):,}, "
            "some before the collector connected or after it stopped)"
        )
        t = Table(title="candles")
        for col in ("timeframe", "complete (stream)", "complete (REST repair)", "forming/partial"):
            t.add_column(col, justify="right")
        for tf in timeframes:
            r = conn.execute(
                "SELECT count(*) FILTER (WHERE complete AND source = 'stream'), "
                "count(*) FILTER (WHERE complete AND source = 'rest'), count(*) FILTER (WHERE NOT complete) "
                "FROM candles WHERE timeframe = %s",
                (tf,),
            ).fetchone()
            t.add_row(tf, *(str(x) for x in r))
        console.print(t)
        rows = conn.execute(
            "SELECT bucket, open, high, low, close, ticks, complete, source FROM candles_mid "
            "WHERE pair = 'EURUSD' AND timeframe = %s ORDER BY bucket DESC LIMIT 5",
            (timeframes[0],),
        ).fetchall()
        t = Table(title=f"EURUSD {timeframes[0]}, newest first (mid prices)")
        for col in ("bucket (UTC)", "open", "high", "low", "close", "ticks", "state"):
            t.add_column(col, justify="right")
        for r in rows:
            state = f"complete, {r[7]}" if r[6] else "forming"
            t.add_row(f"{r[0]:%Y-%m-%d %H:%M}", *(f"{x:.5f}" for x in r[1:5]), str(r[5]), state)
        console.print(t)
        stored = conn.execute(
            "SELECT pair, timeframe, bucket, bid_open, bid_high, bid_low, bid_close, "
            "ask_open, ask_high, ask_low, ask_close, ticks FROM candles WHERE complete"
        ).fetchall()
    ref = reference_candles(truth, timeframes)
    equal = sum(1 for r in stored if ref.get((r[0], r[1], int(r[2].timestamp() * 1000))) == tuple(r[3:]))
    colour = "green" if equal == len(stored) else "red"
    console.print(f"[{colour}]complete candles equal to the simulator's ground truth: {equal}/{len(stored)}[/]")
    logging.getLogger(__name__).debug("summary done")
