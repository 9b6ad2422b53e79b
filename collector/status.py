"""How is the collector doing? Stream state from its metrics endpoint; tick age per pair, newest
candles, pending repairs and the REST allowance from the database. Works with either one
missing and says which."""

from __future__ import annotations

import argparse
import datetime as dt
import urllib.request
from dataclasses import dataclass

import psycopg
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from .config import load_settings
from .metrics import PREFIX, SPEND_PURPOSES
from .step_down import leader_line

WEEK = dt.timedelta(days=7)
# rest_spend.purpose as each spender writes it -> the purpose shown and exported.
PURPOSE_OF = {
    "repair": "repair",
    "gap": "backfill",
    "backfill": "backfill",
    "warmup": "warmup",
    "freshness": "bot_fallback",
}
PURPOSE_NAMES = {"repair": "repair", "backfill": "backfill", "warmup": "warm-up", "bot_fallback": "bot fallback",
                 "other": "other"}  # fmt: skip


@dataclass(frozen=True)
class PeriodSpend:
    """Points spent since IG's allowance period began, by every spender, by purpose."""

    since: dt.datetime
    resets: dt.datetime | None
    by_purpose: dict[str, int]  # every SPEND_PURPOSES key, zero when nothing was spent
    remaining: int | None
    total: int | None


def period_spend(conn: psycopg.Connection, now: dt.datetime) -> PeriodSpend:
    """The period is the week before IG's expiry (the allowance resets then); once that has
    passed, everything since the reset; with no allowance known yet, the last 7 days."""
    a = conn.execute("SELECT remaining, total, expires_at FROM rest_allowance").fetchone()
    if a is None:
        since, resets, remaining, total = now - WEEK, None, None, None
    else:
        remaining, total, resets = a
        since = resets - WEEK if resets > now else resets
        if resets <= now:
            remaining, resets = total, None  # IG has reset the allowance; nothing known spent since
    by = dict.fromkeys(SPEND_PURPOSES, 0)
    for purpose, points in conn.execute(
        "SELECT purpose, sum(points) FROM rest_spend WHERE time >= %s GROUP BY purpose", (since,)
    ).fetchall():
        by[PURPOSE_OF.get(purpose, "other")] += int(points)
    return PeriodSpend(since, resets, by, remaining, total)


def read_period_spend(url: str) -> dict[str, int] | None:
    """For the metric at scrape time: None when the database does not answer."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=3, application_name="ig-collector metrics") as c:
            return period_spend(c, dt.datetime.now(dt.UTC)).by_purpose
    except psycopg.Error:
        return None


HELP = "print stream state, tick age per pair, newest candles and the REST allowance"


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--database-url", help="overrides DATABASE_URL")
    p.add_argument("--metrics-url", help="default: http://COLLECTOR_METRICS_HOST:COLLECTOR_METRICS_PORT/metrics")


def read_metrics(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def _age(t: dt.datetime | None, now: dt.datetime) -> str:
    if t is None:
        return "-"
    s = (now - t).total_seconds()
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.1f}h"


def main(args: argparse.Namespace) -> int:
    settings = load_settings(getattr(args, "config", None))
    console = Console()
    host = "127.0.0.1" if settings.metrics_host in ("0.0.0.0", "") else settings.metrics_host
    murl = args.metrics_url or f"http://{host}:{settings.metrics_port}/metrics"
    ok = True
    try:
        m = read_metrics(murl)
        state = next((dict(k)["state"] for k, v in m.get(f"{PREFIX}_stream_state", {}).items() if v == 1), "?")
        received = sum(m.get(f"{PREFIX}_ticks_received_total", {}).values())
        reconnects = sum(m.get(f"{PREFIX}_stream_reconnects_total", {}).values())
        console.print(f"stream: [bold]{state}[/]  ticks received {received:.0f}  reconnects {reconnects:.0f}  ({murl})")
        audited = sum(m.get(f"{PREFIX}_audit_last_run_timestamp_seconds", {}).values())
        if audited:
            una = sum(m.get(f"{PREFIX}_unaccounted_buckets", {}).values())
            dif = sum(m.get(f"{PREFIX}_candles_differing_from_ticks", {}).values())
            colour = "green" if una == 0 and dif == 0 else "red"
            when = dt.datetime.fromtimestamp(audited, dt.UTC)
            console.print(f"audit of the last 24 h at {when:%H:%M} UTC: [{colour}]{una:.0f} buckets unaccounted, "
                          f"{dif:.0f} candles differing from their ticks[/]")  # fmt: skip
    except OSError as e:
        ok = False
        console.print(f"[red]collector metrics unreachable at {murl}: {e}[/] - is `ig-collector run` running?")
    url = args.database_url or settings.database_url
    if not url:
        console.print("[yellow]DATABASE_URL not set: no database view[/]")
        return 0 if ok else 1
    now = dt.datetime.now(dt.UTC)
    with psycopg.connect(url, autocommit=True, application_name="ig-collector status") as conn:
        console.print(leader_line(conn, now))
        table = Table(title="Pairs")
        for col in ("pair", "last tick", "tick age", *(f"last {tf}" for tf in settings.timeframes)):
            table.add_column(col)
        for pair in settings.pairs:
            last = conn.execute(
                "SELECT max(time) FROM ticks WHERE pair = %s AND time > now() - interval '7 days'", (pair,)
            ).fetchone()[0]
            cells = []
            for tf in settings.timeframes:
                row = conn.execute(
                    "SELECT bucket, complete, source FROM candles WHERE pair = %s AND timeframe = %s "
                    "ORDER BY bucket DESC LIMIT 1",
                    (pair, tf),
                ).fetchone()
                cells.append(f"{row[0]:%m-%d %H:%M} {'done' if row[1] else 'forming'} {row[2]}" if row else "-")
            table.add_row(pair, f"{last:%Y-%m-%d %H:%M:%S}" if last else "-", _age(last, now), *cells)
        console.print(table)
        pending = conn.execute("SELECT count(*) FROM candle_repairs WHERE resolved_at IS NULL").fetchone()[0]
        unrec = conn.execute("SELECT count(*) FROM candle_repairs WHERE resolution = 'unrecoverable'").fetchone()[0]
        console.print(f"repairs pending: {pending}; unrecoverable: {unrec}")
        quarantined = conn.execute("SELECT count(*), max(at) FROM quarantine").fetchone()
        if quarantined[0]:
            console.print(f"[red]rows refused by the database and quarantined: {quarantined[0]} (last at "
                          f"{quarantined[1]:%Y-%m-%d %H:%M} UTC)[/]: see the quarantine table")  # fmt: skip
        cov = conn.execute(
            "SELECT started_at, ended_at, end_reason FROM stream_coverage ORDER BY started_at DESC LIMIT 1"
        ).fetchone()
        if cov:
            since = f"streaming since {cov[0]:%Y-%m-%d %H:%M:%S} UTC" if cov[1] is None else (
                f"last covered {cov[0]:%Y-%m-%d %H:%M} to {cov[1]:%Y-%m-%d %H:%M} UTC ({cov[2]})")  # fmt: skip
            console.print(f"stream coverage: {since}")
        a = conn.execute("SELECT remaining, total, expires_at, exhausted FROM rest_allowance").fetchone()
        if a:
            flag = " [red]EXHAUSTED[/]" if a[3] else ""
            console.print(f"REST allowance: {a[0]}/{a[1]}, resets {a[2]:%Y-%m-%d %H:%M} UTC{flag}")
        else:
            console.print("REST allowance: not yet known (no REST call made)")
        spend = period_spend(conn, now)
        parts = ", ".join(f"{PURPOSE_NAMES[k]} {v}" for k, v in spend.by_purpose.items())
        left = "unknown" if spend.remaining is None else str(spend.remaining)
        console.print(
            f"REST points this period (since {spend.since:%Y-%m-%d %H:%M} UTC): {sum(spend.by_purpose.values())} "
            f"spent ({parts}); {left} remain"
        )
    return 0 if ok else 1
