"""Import candle history the trader already has, so none of it is bought again from IG REST.

Reads our own export (CSV or Parquet, a faithful copy: source and complete kept), MetaTrader
4/5 bar exports, HistData ASCII 1-minute bars and a SQLite candle cache (see
`collector/history/`). Everything else is stored with `source = 'import'`, `complete = true`;
mid-only data as bid = ask = mid (the spread of such rows is unknown).

Rules. All files are read and checked first; any rejected row (named by file, line and reason,
counted by reason) means nothing is written. Then one transaction stores the rows: an existing
stream or REST candle is never overwritten (a later stream or REST candle replaces an imported
one). 1m or 5m input also fills the coarser configured timeframes (COLLECTOR_TIMEFRAMES) whose
buckets it covers completely: a 15m bucket only from all three of its 5m candles. `--dry-run`
does the same inside a transaction it rolls back, so it reports exactly what would be stored.
"""

from __future__ import annotations

import argparse
import csv
import io
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import timeframes as tfs
from .compose import compose
from .config import ConfigError, load_settings
from .history import histdata, metatrader, ours, sqlite_cache
from .history import model as m
from .models import Candle
from .store import ms_to_dt

HELP = "import candle history (our CSV/Parquet export, MT4/MT5, HistData, a SQLite cache) without REST points"

FORMATS = ("auto", "csv", "parquet", "sqlite")
PROGRESS_MIN_BYTES = 4 << 20  # a bar for files that take more than a moment
SHOW_REJECTIONS = 20

_STAGE = f"""CREATE TEMP TABLE IF NOT EXISTS _stage_import (
    pair text, timeframe text, bucket timestamptz,
    {", ".join(f"{c} float8" for c in ours.PRICE_COLUMNS)},
    ticks integer, complete boolean, source text
) ON COMMIT DELETE ROWS"""
_COLS = "pair, timeframe, bucket, " + ", ".join(ours.PRICE_COLUMNS) + ", ticks, complete, source"
# Only an imported row is ever replaced: stream and REST candles win over imported history.
_UPSERT = f"""INSERT INTO candles AS c ({_COLS}, updated_at)
SELECT {_COLS}, now() FROM _stage_import
ON CONFLICT (pair, timeframe, bucket) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in ours.PRICE_COLUMNS)},
    ticks = EXCLUDED.ticks, complete = EXCLUDED.complete, source = EXCLUDED.source,
    open_time = NULL, close_time = NULL, updated_at = now()
WHERE c.source = 'import'
RETURNING timeframe, (xmax = 0)"""


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", type=Path)
    p.add_argument("--pair", help="the pair, for files that do not name it (MT4/MT5, HistData)")
    p.add_argument("--timeframe", help="the bars' timeframe, for files that do not name it (e.g. 5m)")
    p.add_argument("--format", choices=FORMATS, default="auto", help="default: recognised from the content")
    p.add_argument("--time-zone", metavar="ZONE", help="zone of times that carry none: IANA name or +02:00")
    p.add_argument("--dry-run", action="store_true", help="check and report what would be stored; store nothing")
    p.add_argument("--database-url", help="overrides DATABASE_URL")


# --- reading -------------------------------------------------------------------------------------
def _lines(path: Path, progress: Progress | None) -> Iterator[str]:
    task = progress.add_task(path.name, total=path.stat().st_size) if progress else None
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        for n, line in enumerate(f):
            if progress is not None and task is not None and n % 8192 == 0:
                progress.update(task, completed=f.buffer.tell())
            yield line
    if progress is not None and task is not None:
        progress.update(task, completed=path.stat().st_size)


def _delimiter(first: str) -> str:
    return max(("\t", ";", ","), key=first.count)


def read_file(path: Path, opts: m.Options, fmt: str = "auto", progress: Progress | None = None) -> m.Parsed:
    """One file into candles and rejections; the format is recognised from the content."""
    name = str(path)
    try:
        with path.open("rb") as f:
            head = f.read(64)
    except OSError as e:
        p = m.Parsed(name, "?")
        p.reject(0, m.BAD_FILE, e.strerror or str(e))
        return p
    if fmt == "parquet" or (fmt == "auto" and head.startswith(ours.PARQUET_MAGIC)):
        p = m.Parsed(name, "parquet (ours)", faithful=True)
        try:
            ours.read_parquet(path, p)
        except Exception as e:  # pyarrow raises several types for a corrupt file
            p.reject(0, m.BAD_FILE, f"not readable as parquet: {e}")
        return p
    if fmt == "sqlite" or (fmt == "auto" and head.startswith(sqlite_cache.SQLITE_MAGIC)):
        p = m.Parsed(name, "sqlite")
        sqlite_cache.read(path, opts, p)
        return p
    lines = _lines(path, progress)
    first = next(lines, "")
    rest = _chain(first, lines)
    if histdata.LINE.match(first):
        p = m.Parsed(name, "histdata")
        histdata.read(path, enumerate(csv.reader(rest, delimiter=";"), start=1), opts, p)
        return p
    header = next(csv.reader(io.StringIO(first)), [])
    if ours.looks_like(header):
        p = m.Parsed(name, "csv (ours)", faithful=True)
        rows = csv.reader(rest)
        next(rows, None)
        ours.read_csv(path, rows, p)
        return p
    p = m.Parsed(name, "metatrader")
    metatrader.read(path, enumerate(csv.reader(rest, delimiter=_delimiter(first)), start=1), opts, p)
    return p


def _chain(first: str, lines: Iterator[str]) -> Iterator[str]:
    if first:
        yield first
    yield from lines


# --- preparing -----------------------------------------------------------------------------------
@dataclass
class Prepared:
    """What the checked input turns into: rows to store per timeframe, and how they came about."""

    candles: list[Candle] = field(default_factory=list)
    read: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    composed: Counter[str] = field(default_factory=Counter)  # timeframe -> buckets composed
    not_composed: Counter[str] = field(default_factory=Counter)  # timeframe -> buckets with a finer bar missing
    input_only: Counter[str] = field(default_factory=Counter)  # finer timeframes used only to compose


def _importable(tf: str, configured: Sequence[str]) -> bool:
    n = tfs.minutes(tf)
    return tf in configured or any(tfs.minutes(t) % n == 0 and tfs.minutes(t) > n for t in configured)


def prepare(parsed: list[m.Parsed], configured: Sequence[str]) -> Prepared:
    """Checks every row (across files), then composes coarser configured timeframes."""
    for p in parsed:
        kept = []
        for line, c in p.rows:
            if _importable(c.timeframe, configured):
                kept.append((line, c))
            else:
                p.reject(line, m.BAD_TIMEFRAME, f"{c.timeframe}: store {', '.join(configured)} or a finer divisor")
        p.rows = kept
    m.check_all(parsed)
    out = Prepared()
    for p in parsed:
        out.read += len(p.rows) + len(p.rejections)
        out.rejected.update(r.reason for r in p.rejections)
    given = {(c.pair, c.timeframe, c.bucket_ms) for p in parsed for _, c in p.rows}
    by_series: dict[tuple[str, str], list[Candle]] = {}
    for p in parsed:
        for _, c in p.rows:
            if c.timeframe in configured:
                out.candles.append(c)
            else:
                out.input_only[c.timeframe] += 1
            if not p.faithful:
                by_series.setdefault((c.pair, c.timeframe), []).append(c)
    for (_pair, tf), rows in sorted(by_series.items()):
        for target in configured:
            tn, n = tfs.minutes(target), tfs.minutes(tf)
            if tn <= n or tn % n:
                continue
            built = [c for c in compose(rows, target) if (c.pair, c.timeframe, c.bucket_ms) not in given]
            buckets = {tfs.bucket_start(c.bucket_ms, tn * 60_000) for c in rows}
            out.composed[target] += len(built)
            out.not_composed[target] += (
                len(buckets) - len(built) - sum(1 for b in buckets if (_pair, target, b) in given)
            )
            out.candles.extend(built)
            given.update((c.pair, c.timeframe, c.bucket_ms) for c in built)
    return out


# --- writing -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stored:
    inserted: Counter[str]  # timeframe -> new rows
    replaced: Counter[str]  # timeframe -> imported rows replaced
    kept: int  # rows not written because a stream or REST candle is there


def store(conn: psycopg.Connection, candles: Sequence[Candle], *, dry_run: bool = False) -> Stored:
    """All rows in one transaction (rolled back for a dry run): all or nothing."""
    inserted: Counter[str] = Counter()
    replaced: Counter[str] = Counter()
    with conn.transaction(force_rollback=dry_run), conn.cursor() as cur:
        cur.execute(_STAGE)
        with cur.copy(f"COPY _stage_import ({_COLS}) FROM STDIN") as cp:
            for c in candles:
                cp.write_row(
                    (c.pair, c.timeframe, ms_to_dt(c.bucket_ms), *(getattr(c, k) for k in ours.PRICE_COLUMNS),
                     c.ticks, c.complete, c.source)
                )  # fmt: skip
        cur.execute(_UPSERT)
        for tf, new in cur.fetchall():
            (inserted if new else replaced)[tf] += 1
    return Stored(inserted, replaced, len(candles) - sum(inserted.values()) - sum(replaced.values()))


# --- command -------------------------------------------------------------------------------------
def _options(args: argparse.Namespace) -> m.Options:
    pair = tf = zone = None
    if args.pair:
        pair = m.normalize_pair(args.pair)
        if pair is None:
            raise ConfigError(f"--pair: unknown pair {args.pair!r}")
    if args.timeframe:
        tf = m.normalize_timeframe(args.timeframe)
        if tf is None:
            raise ConfigError(f"--timeframe: {args.timeframe!r} is not a timeframe such as 5m or 15m")
    if args.time_zone:
        try:
            zone = m.parse_zone(args.time_zone)
        except ValueError as e:
            raise ConfigError(f"--time-zone: {e}") from None
    return m.Options(pair, tf, zone)


def run(
    files: Sequence[Path], opts: m.Options, url: str, configured: Sequence[str], *,
    fmt: str = "auto", dry_run: bool = False, console: Console | None = None,
) -> int:  # fmt: skip
    """Read, check, report, then store unless anything was rejected. Exit code: 0 or 1."""
    console = console or Console(stderr=True, soft_wrap=True, highlight=False)
    big = any(f.exists() and f.stat().st_size >= PROGRESS_MIN_BYTES for f in files)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=not big) as progress:
        parsed = [read_file(f, opts, fmt, progress if big else None) for f in files]
    prepared = prepare(parsed, configured)
    for p in parsed:
        console.print(f"{p.file}: {p.fmt}, {len(p.rows) + len(p.rejections)} rows", markup=False)
        for note in p.notes:
            console.print(f"  {note}", markup=False)
    rejections = [r for p in parsed for r in p.rejections]
    if rejections:
        console.print(f"[red]refused: {len(rejections)} rows rejected, nothing stored[/]")
        for r in rejections[:SHOW_REJECTIONS]:
            console.print(f"  {r}", markup=False)
        if len(rejections) > SHOW_REJECTIONS:
            console.print(f"  ... and {len(rejections) - SHOW_REJECTIONS} more")
        table = Table(title="rejected by reason", title_justify="left")
        table.add_column("reason")
        table.add_column("rows", justify="right")
        for reason, n in prepared.rejected.most_common():
            table.add_row(reason, str(n))
        console.print(table)
        return 1
    with psycopg.connect(url, application_name="ig-collector import") as conn:
        stored = store(conn, prepared.candles, dry_run=dry_run)
    _summary(console, prepared, stored, dry_run)
    return 0


def _summary(console: Console, prep: Prepared, st: Stored, dry_run: bool) -> None:
    verb = "would store" if dry_run else "stored"
    table = Table(title=f"import: {verb}" + (" (dry run, nothing written)" if dry_run else ""), title_justify="left")
    for col in ("timeframe", "new", "imported rows replaced", "composed from finer bars", "not composed (bar missing)"):
        table.add_column(col, justify="left" if col == "timeframe" else "right")
    tfs_seen = sorted({c.timeframe for c in prep.candles} | set(prep.composed), key=tfs.minutes)
    for tf in tfs_seen:
        table.add_row(
            tf, str(st.inserted[tf]), str(st.replaced[tf]), str(prep.composed[tf]), str(prep.not_composed[tf])
        )
    console.print(table)
    for tf, n in sorted(prep.input_only.items()):
        console.print(f"{n} {tf} bars used only to compose (not a configured timeframe)")
    console.print(f"{prep.read} rows read; {st.kept} left alone because a stream or REST candle is already there")


def main(args: argparse.Namespace) -> int:
    settings = load_settings(getattr(args, "config", None))
    url = args.database_url or settings.database_url
    if not url:
        raise ConfigError("DATABASE_URL is not set (or give --database-url)")
    opts = _options(args)
    return run(args.files, opts, url, settings.timeframes, fmt=args.format, dry_run=args.dry_run)
