"""Replay a tick file (`time,pair,bid,ask`, docs/design.md §8) into the database.

Rows go, in file order, through the same validation, aggregator and writer as the live
stream; the clock is the ticks' own time (the newest valid IG time so far), so a tick that
is late in the file is late here too, and buckets close when the file's clock passes their
end + grace. Buckets the file never finishes stay `complete = false` unless `--close-at-end`.
The database is migrated first, so an empty one works, and the open buckets and newest ticks
already stored are resumed, so replaying a file in pieces (or after a crash) gives the same
candles as replaying it whole. While the database is unreachable the replay waits and retries
(nothing is dropped). Exit status: 0 done, 1 database or I/O failure, 2 bad usage or header.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .config import Settings, load_settings
from .tickfile import HEADER, TickFileError

HELP = "feed a tick file through validation, aggregator and writer into the database"

CHUNK_ROWS = 50_000


@dataclass(frozen=True)
class ReplaySummary:
    rows: int
    accepted: int
    rejected: dict[str, int]
    late_corrected: dict[str, int]
    late_dropped: dict[str, int]
    ticks_written: int  # new tick rows (rows already stored are not counted)
    candles_written: dict[str, int]  # by timeframe: rows upserted (forming, closed, corrections)
    candles_closed: dict[str, int]  # by timeframe: final rows written (complete = true)
    resumed_candles: int
    write_retries: int  # failed flushes retried (database unreachable meanwhile)
    seconds: float


class _CountingReader(io.RawIOBase):
    """Counts bytes consumed so the progress bar can follow a file of any size."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = self._raw.readinto(b) or 0
        self.count += n
        return n


def check_header(path: Path) -> None:
    """Fail fast, before any database work, on a file that is not a tick file."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        try:
            header = next(csv.reader(f), None)
        except csv.Error:
            header = None
    if header is None or tuple(h.strip().lower() for h in header) != HEADER:
        raise TickFileError(f"{path}: tick file header must be {','.join(HEADER)!r}, got {header!r}")


def _rows(text: io.TextIOBase) -> Iterator[list[str] | None]:
    """Raw fields per data row (header skipped); None for a line CSV itself cannot read."""
    reader = csv.reader(text)
    next(reader, None)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error:
            yield None
            continue
        if row:
            yield row


def _columns(rows: list[list[str] | None]) -> tuple[list, list, list, list]:
    """Split rows into pair, bid, ask, time columns; a short row has missing fields and a long or
    unreadable one an unusable time, so validation gives them the usual reasons."""
    times, pairs, bids, asks = [], [], [], []
    for row in rows:
        if row is not None and len(row) == 4:
            t, p, b, a = row
        elif row is None or len(row) > 4:
            t, p, b, a = "not-a-time", "?", "?", "?"
        else:
            t, p, b, a = (*row, None, None, None, None)[:4]
        times.append(t)
        pairs.append(p)
        bids.append(b)
        asks.append(a)
    return pairs, bids, asks, times


def _first_clock(rows: list[list[str] | None], settings: Settings) -> int | None:
    """The file's clock at its first valid tick: where the stored open buckets are resumed."""
    from .validation import Parsed, check_values, parse_raw

    for row in rows:
        if row is None or len(row) != 4:
            continue
        p = parse_raw(row[1], row[2], row[3], row[0])
        if isinstance(p, Parsed) and check_values(p.pair in settings.pairs, p.time_ms, p.bid, p.ask) is None:
            return p.time_ms
    return None


def replay_file(
    path: str | Path,
    url: str,
    settings: Settings,
    *,
    close_at_end: bool = False,
    chunk_rows: int = CHUNK_ROWS,
    progress: bool = True,
) -> ReplaySummary:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from .pipeline import Pipeline
    from .store import Writer, WriterError, WriterThread

    path = Path(path)
    started = time.monotonic()
    writer = Writer.from_settings(settings, url=url, application_name="ig-collector replay")
    pipeline = Pipeline(settings, writer)
    ag = pipeline.aggregator
    retry_max = settings.db_retry_max_s
    size = path.stat().st_size
    rows_done = 0
    resumed = 0

    # The writer's own thread commits while the next chunk is parsed (two cores, two jobs);
    # replay waits whenever more than two chunks are queued, so an outage pauses the file
    # instead of filling the buffer and dropping rows.
    flusher = WriterThread.from_settings(writer, settings)
    backlog = 2 * chunk_rows

    def resume(chunk: list[list[str] | None]) -> int:
        now0 = _first_clock(chunk, settings)
        if now0 is None:
            return 0
        backoff = 0.1
        while True:
            try:
                state = writer.load_state(
                    now0,
                    settings.timeframes,
                    close_grace_ms=ag.close_grace_ms,
                    lateness_ms=ag.lateness_ms,
                    dedupe_window_ms=ag.dedupe_window_ms,
                    future_tolerance_ms=ag.future_tolerance_ms,
                )
                return pipeline.resume(state)
            except WriterError:
                time.sleep(backoff)
                backoff = min(backoff * 2, retry_max)

    with (
        open(path, "rb") as raw,
        Progress(
            TextColumn("[bold]replay[/] {task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rows]:>12,} rows  {task.fields[rate]:>10,.0f} rows/s"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=not progress,
        ) as bar,
    ):
        counting = _CountingReader(raw)
        text = io.TextIOWrapper(io.BufferedReader(counting, 1 << 20), encoding="utf-8", errors="replace", newline="")
        task = bar.add_task(path.name, total=size or 1, rows=0, rate=0.0)
        rows = _rows(text)
        try:
            while chunk := list(itertools.islice(rows, chunk_rows)):
                if not flusher.alive:
                    resumed = resume(chunk)
                    flusher.start()
                pipeline.feed_batch(*_columns(chunk))
                pipeline.tick()
                writer.wait_below(backlog)
                rows_done += len(chunk)
                elapsed = max(time.monotonic() - started, 1e-9)
                bar.update(task, completed=counting.count, rows=rows_done, rate=rows_done / elapsed)
            pipeline.finish(close_all=close_at_end)
            if not flusher.alive:
                flusher.start()
            writer.wait_idle()
        finally:
            flusher.stop()
            writer.close()
        bar.update(task, completed=size or 1)

    stats = ag.stats()
    written: dict[str, int] = {}
    closed: dict[str, int] = {}
    for (tf, kind), n in writer.candles_written.items():
        written[tf] = written.get(tf, 0) + n
        if kind == "closed":
            closed[tf] = closed.get(tf, 0) + n
    return ReplaySummary(
        rows=rows_done,
        accepted=stats.accepted,
        rejected=stats.rejected,
        late_corrected=stats.late_corrected,
        late_dropped=stats.late_dropped,
        ticks_written=writer.ticks_written,
        candles_written={tf: written.get(tf, 0) for tf in settings.timeframes},
        candles_closed={tf: closed.get(tf, 0) for tf in settings.timeframes},
        resumed_candles=resumed,
        write_retries=writer.flush_errors,
        seconds=time.monotonic() - started,
    )


def print_summary(summary: ReplaySummary, out: object = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out or sys.stdout, width=100)
    rate = summary.rows / summary.seconds if summary.seconds > 0 else 0.0
    console.print(
        f"replayed {summary.rows:,} rows in {summary.seconds:.2f} s ({rate:,.0f} rows/s): "
        f"{summary.accepted:,} ticks accepted, {sum(summary.rejected.values()):,} rejected, "
        f"{summary.ticks_written:,} new tick rows"
        + (f", resumed {summary.resumed_candles} stored candles" if summary.resumed_candles else "")
        + (f", {summary.write_retries} failed writes retried" if summary.write_retries else "")
    )
    rej = Table(title="rejected ticks", show_header=True)
    rej.add_column("reason")
    rej.add_column("ticks", justify="right")
    for reason, n in summary.rejected.items():
        rej.add_row(reason, f"{n:,}")
    console.print(rej)
    tfs = Table(title="candles", show_header=True)
    for col in ("timeframe", "rows written", "closed", "late corrected", "late dropped"):
        tfs.add_column(col, justify="right" if col != "timeframe" else "left")
    for tf in summary.candles_written:
        tfs.add_row(
            tf,
            f"{summary.candles_written[tf]:,}",
            f"{summary.candles_closed.get(tf, 0):,}",
            f"{summary.late_corrected.get(tf, 0):,}",
            f"{summary.late_dropped.get(tf, 0):,}",
        )
    console.print(tfs)


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="tick file: CSV with header time,pair,bid,ask")
    p.add_argument("--database-url", help="overrides DATABASE_URL")
    p.add_argument(
        "--close-at-end",
        action="store_true",
        help="close (complete = true) the buckets the file's clock has not finished",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    import psycopg

    from .migrate import migrate

    settings = load_settings(getattr(args, "config", None))
    url = settings.url_or(args.database_url)
    path = Path(args.file)
    if not path.is_file():
        print(f"ig-collector replay: {path}: no such file", file=sys.stderr)
        return 2
    try:
        check_header(path)
    except TickFileError as e:
        print(f"ig-collector replay: {e}", file=sys.stderr)
        return 2
    try:
        migrate(url, settings)
    except psycopg.Error as e:
        print(f"ig-collector replay: cannot prepare the database: {e}".strip(), file=sys.stderr)
        return 1
    try:
        summary = replay_file(
            path,
            url,
            settings,
            close_at_end=args.close_at_end,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
    except OSError as e:
        print(f"ig-collector replay: {e}", file=sys.stderr)
        return 1
    print_summary(summary)
    return 0
