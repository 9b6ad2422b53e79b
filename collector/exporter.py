"""Export candles for research or a backtest, in our own format (CSV or Parquet).

Columns: pair, timeframe, bucket, bid_open .. ask_close, ticks, complete, source (see
`collector/history/ours.py`). It is a faithful copy: `ig-collector import` of the file into an
empty database gives the same rows, source and complete included. Reads with one server-side
cursor, so a long history does not sit in memory twice.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import psycopg
from rich.console import Console

from . import timeframes as tfs
from .config import ConfigError, load_settings
from .history import model as m
from .history import ours
from .models import Candle
from .store import dt_to_ms

HELP = "export candles of one pair and timeframe to CSV or Parquet (our import format)"


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pair", required=True)
    p.add_argument("--timeframe", required=True, help="a stored timeframe, e.g. 5m or 15m")
    p.add_argument("--since", help="first bucket, ISO 8601 (UTC unless it carries an offset)")
    p.add_argument("--until", help="buckets before this, ISO 8601 (UTC unless it carries an offset)")
    p.add_argument("--format", choices=("csv", "parquet"), required=True)
    p.add_argument("out", metavar="OUT", type=Path)
    p.add_argument("--database-url", help="overrides DATABASE_URL")


def parse_time(text: str, what: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{what}: {text!r} is not an ISO 8601 time such as 2025-01-15 or 2025-01-15T09:00") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def candles(
    conn: psycopg.Connection, pair: str, timeframe: str, since: dt.datetime | None, until: dt.datetime | None
) -> Iterator[Candle]:
    """Stored rows of one series, oldest first, in [since, until)."""
    with conn.cursor(name="export") as cur:
        cur.itersize = 10_000
        cur.execute(
            f"SELECT pair, timeframe, bucket, {', '.join(ours.PRICE_COLUMNS)}, ticks, complete, source "
            "FROM candles WHERE pair = %s AND timeframe = %s AND bucket >= %s AND bucket < %s ORDER BY bucket",
            (pair, timeframe, since or dt.datetime.min.replace(tzinfo=dt.UTC),
             until or dt.datetime.max.replace(tzinfo=dt.UTC)),
        )  # fmt: skip
        for r in cur:
            yield Candle(r[0], r[1], dt_to_ms(r[2]), *r[3:11], r[11], r[12], r[13])


def export(url: str, pair: str, timeframe: str, out: Path, fmt: str,
           since: dt.datetime | None = None, until: dt.datetime | None = None) -> int:  # fmt: skip
    """Write the series to `out`; returns the rows written."""
    writer = ours.write_parquet if fmt == "parquet" else ours.write_csv
    with psycopg.connect(url, application_name="ig-collector export") as conn, conn.transaction():
        return writer(out, candles(conn, pair, timeframe, since, until))


def main(args: argparse.Namespace) -> int:
    settings = load_settings(getattr(args, "config", None))
    url = args.database_url or settings.database_url
    if not url:
        raise ConfigError("DATABASE_URL is not set (or give --database-url)")
    pair = m.normalize_pair(args.pair)
    if pair is None:
        raise ConfigError(f"--pair: unknown pair {args.pair!r}")
    try:
        tfs.minutes(args.timeframe)
    except ValueError as e:
        raise ConfigError(f"--timeframe: {e}") from None
    since = parse_time(args.since, "--since") if args.since else None
    until = parse_time(args.until, "--until") if args.until else None
    n = export(url, pair, args.timeframe, args.out, args.format, since, until)
    Console(stderr=True).print(f"exported {n} {pair} {args.timeframe} candles to {args.out} ({args.format})")
    return 0
