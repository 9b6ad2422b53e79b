"""How is the collector doing? Stream state from its metrics endpoint; tick age per pair, newest
candles, pending repairs and the REST allowance from the database. Works with either one
missing and says which."""

from __future__ import annotations

import argparse
import datetime as dt
import urllib.request

import psycopg
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from .config import load_settings
from .metrics import PREFIX

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
    except OSError as e:
        ok = False
        console.print(f"[red]collector metrics unreachable at {murl}: {e}[/] - is `ig-collector run` running?")
    url = args.database_url or settings.database_url
    if not url:
        console.print("[yellow]DATABASE_URL not set: no database view[/]")
        return 0 if ok else 1
    now = dt.datetime.now(dt.UTC)
    with psycopg.connect(url, autocommit=True, application_name="ig-collector status") as conn:
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
        a = conn.execute("SELECT remaining, total, expires_at, exhausted FROM rest_allowance").fetchone()
        if a:
            flag = " [red]EXHAUSTED[/]" if a[3] else ""
            console.print(f"REST allowance: {a[0]}/{a[1]}, resets {a[2]:%Y-%m-%d %H:%M} UTC{flag}")
        else:
            console.print("REST allowance: not yet known (no REST call made)")
    return 0 if ok else 1
