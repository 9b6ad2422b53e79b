"""Fill gaps from IG REST on demand: a plan first (points it will spend, allowance left), then
the fetch, within the shared budget, with a progress bar.

Missing means: a bucket in FX trading hours, already closed, with no complete candle; plus
every bucket already flagged for repair. The fetch itself is the collector's repair path, so
on-demand and automatic backfill store identical rows (`source = 'rest'`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re

import psycopg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import timeframes as tfs
from .config import ConfigError, Settings, load_settings
from .ig_rest import RestBudget, RestClient
from .market_hours import market_buckets
from .metrics import Metrics
from .migrate import migrate
from .models import Flag
from .pairs import validate_pair
from .repairs import SETTLE_MS, RepairBook, RepairWorker
from .store import write_flags
from .vocabulary import FlagReason, dt_to_ms, ms_to_dt

HELP = "plan, then fill missing candles from IG REST within the points budget"


def _since(value: str, now: dt.datetime) -> dt.datetime:
    m = re.fullmatch(r"(\d+)([hd])", value.strip())
    if m:
        n = int(m.group(1))
        return now - (dt.timedelta(hours=n) if m.group(2) == "h" else dt.timedelta(days=n))
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--since {value!r}: use an ISO time (2026-11-18T10:00Z) or an age like 12h, 2d") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def missing_buckets(conn: psycopg.Connection, pair: str, tf: str, start_ms: int, end_ms: int) -> list[int]:
    """Closed market-hours buckets in [start_ms, end_ms) without a complete candle."""
    tf_ms = tfs.length_ms(tf)
    have = {
        dt_to_ms(r[0])
        for r in conn.execute(
            "SELECT bucket FROM candles WHERE pair = %s AND timeframe = %s AND bucket >= %s AND complete",
            (pair, tf, ms_to_dt(start_ms)),
        )
    }
    return [b for b in market_buckets(start_ms, end_ms - tf_ms + 1, tf_ms) if b not in have]


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pair", action="append", help="pair to fill (repeatable; default: all configured)")
    p.add_argument("--timeframe", action="append", help="timeframe to fill (repeatable; default: configured)")
    p.add_argument("--since", default="1d", help="start: ISO time or an age like 12h, 2d (default 1d)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and spend nothing")
    p.add_argument("--database-url", help="overrides DATABASE_URL")


def plan(settings: Settings, conn: psycopg.Connection, pairs: list[str], timeframes: list[str],
         start_ms: int, now_ms: int) -> list[Flag]:  # fmt: skip
    flags = []
    for tf in timeframes:
        for pair in pairs:
            flags += [Flag(pair, tf, b, FlagReason.BACKFILL) for b in missing_buckets(conn, pair, tf, start_ms, now_ms)]
    return flags


def main(args: argparse.Namespace) -> int:
    settings = load_settings(getattr(args, "config", None))
    url = settings.url_or(args.database_url)
    settings.require("ig_username", "ig_password", "ig_api_key")
    console = Console()
    pairs = [validate_pair(p) for p in args.pair] if args.pair else list(settings.pairs)
    timeframes = args.timeframe or list(settings.timeframes)
    for tf in timeframes:
        if tf not in tfs.IG_RESOLUTIONS:
            raise ConfigError(f"--timeframe {tf}: IG REST serves {', '.join(tfs.IG_RESOLUTIONS)}")
    from .clock import make_clock

    clock = make_clock(settings.clock, settings.ig_api_url)
    now = clock.now_ms()
    start = dt_to_ms(_since(args.since, ms_to_dt(now)))
    migrate(url, settings)
    with psycopg.connect(url, autocommit=True, application_name="ig-collector backfill") as conn:
        flags = plan(settings, conn, pairs, timeframes, start, now - settings.close_grace_ms - SETTLE_MS)
        budget = RestBudget(url, "backfill", reserve_points=settings.rest_reserve_points)
        table = Table(title="Backfill plan")
        for col in ("timeframe", "pairs with gaps", "missing buckets", "points (at most)"):
            table.add_column(col)
        for tf in timeframes:
            sel = [f for f in flags if f.timeframe == tf]
            table.add_row(tf, str(len({f.pair for f in sel})), str(len(sel)), str(len(sel)))
        console.print(table)
        available = budget.available()
        st = budget.state()
        known = f"{st.remaining}/{st.total}, resets {st.expires_at:%Y-%m-%d %H:%M} UTC" if st else "not yet known"
        console.print(f"REST allowance: {known}; budget for backfill now: {available} points "
                      f"(reserve {settings.rest_reserve_points})")  # fmt: skip
        if not flags:
            console.print("Nothing to fill.")
            return 0
        if args.dry_run:
            return 0
        if len(flags) > available:
            console.print(f"[yellow]Only {available} of {len(flags)} points fit the budget; 15m goes first.[/]")
        write_flags(conn, flags)
        book = RepairBook()
        worker = RepairWorker(
            settings, url, book, Metrics(), clock.now_ms, lambda: RestClient(settings, "backfill", db_url=url)
        )
        with Progress(TextColumn("backfill"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as bar:  # fmt: skip
            task = bar.add_task("backfill", total=len(worker.pending(conn)))
            worker.run_once(conn, on_progress=lambda n: bar.advance(task, n))
        left = worker.pending(conn)
        rows = conn.execute(
            "SELECT resolution, count(*) FROM candle_repairs WHERE reason = 'backfill' AND resolved_at IS NOT NULL "
            "GROUP BY 1 ORDER BY 1"
        ).fetchall()
        console.print("Done: " + ", ".join(f"{n} {r}" for r, n in rows) + f"; {len(left)} still pending")
        return 0 if not left else 1
