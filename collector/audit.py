"""`ig-collector audit`: is every bucket accounted for?

The promise is that every complete candle equals the market, or was replaced from REST, or is
reported; never silently wrong or missing. The audit checks it on any database, from what the
collector records there:

- `candles` and `candle_repairs`: what is stored and what is owed;
- `stream_coverage`: the intervals of IG time the stream covered, so "the collector was down" is
  told apart from "the market had nothing" (no peer system records this);
- `ticks` and `tick_gaps`: stream candles recomputed from the stored ticks must equal the stored
  candles, except where tick rows are known to be missing (buffer bound, quarantine).

Every FX-market-hours bucket of every pair and timeframe in the range gets one class (see
`Class`); `unaccounted` is a bucket with no complete row and nothing owing it. Exit 0 when
nothing is unaccounted and no candle differs from its ticks, 1 otherwise, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import json
import logging
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import psycopg

from . import timeframes as tfs
from .config import ConfigError, Settings, load_settings
from .market_hours import market_buckets
from .metrics import Metrics
from .pairs import validate_pair
from .vocabulary import CandleSource, CoverageEnd, Resolution, dt_to_ms, ms_to_dt

HELP = "classify every market-hours bucket (stored, owed, reported, or unaccounted) and check candles against ticks"

log = logging.getLogger(__name__)
DAY_MS = 86_400_000
# A bucket is judged once it can no longer change on its own: closed, past the lateness window.
SETTLED_MS = 65_000


class Class(StrEnum):
    """What a bucket is, and so what (if anything) to do about it (docs/reliability.md)."""

    STREAM = "stream"  # complete from the stream
    REST = "rest"  # complete, replaced or filled from REST
    IMPORTED = "import"  # complete, imported history
    PENDING = "pending"  # incomplete or missing, a REST repair is owed (candle_repairs)
    UNRECOVERABLE = "unrecoverable"  # REST could not supply it: reported
    EMPTY = "empty"  # no row; REST confirmed IG has no candle either
    QUIET = "quiet"  # no row; the stream covered the bucket and no tick came
    NOT_COVERED = "not_covered"  # no complete row; the stream did not cover it, for a known reason
    UNACCOUNTED = "unaccounted"  # no complete row and nothing owing it: a broken promise


ACCOUNTED = frozenset(Class) - {Class.UNACCOUNTED}


@dataclass(frozen=True, slots=True)
class Interval:
    start_ms: int
    end_ms: int | None  # None: still open
    end_reason: str | None


@dataclass(frozen=True, slots=True)
class Row:
    complete: bool
    source: str


@dataclass(frozen=True, slots=True)
class Repair:
    resolved: bool
    resolution: str | None


@dataclass
class Coverage:
    """The stream's coverage intervals in order; answers which buckets it saw whole and why a
    bucket it did not see is not owed a repair."""

    intervals: list[Interval]
    now_ms: int
    backfill_max_age_ms: int
    _starts: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.intervals.sort(key=lambda i: i.start_ms)
        self._starts = [i.start_ms for i in self.intervals]

    def _end(self, i: Interval) -> int:
        return self.now_ms if i.end_ms is None else i.end_ms

    def covers(self, start_ms: int, end_ms: int) -> bool:
        """Whether one interval holds all of [start_ms, end_ms)."""
        k = bisect.bisect_right(self._starts, start_ms) - 1
        return k >= 0 and self._end(self.intervals[k]) >= end_ms

    def uncovered_reason(self, start_ms: int, end_ms: int) -> str | None:
        """Why a bucket the stream did not cover whole is owed nothing, or None when it is owed
        a repair: the collector flags every bucket between an interval's end and the next start
        (within the backfill age) when it resumes, and the buckets an interval starts in."""
        if not self.intervals or end_ms <= self.intervals[0].start_ms:
            return "before_first_start"
        last = self.intervals[-1]
        if last.end_ms is not None and end_ms > last.end_ms:
            return f"collector_{last.end_reason or CoverageEnd.STOPPED}"  # not resumed since: it will bracket this
        k = bisect.bisect_right(self._starts, start_ms)  # the first interval starting inside or after it
        if k < len(self.intervals) and start_ms < self.intervals[k].start_ms - self.backfill_max_age_ms:
            return "older_than_backfill_age"
        return None


@dataclass(frozen=True, slots=True)
class Verdict:
    classes: dict[str, dict[str, int]]  # timeframe -> class -> buckets
    reasons: dict[str, int]  # not_covered reasons -> buckets
    unaccounted: tuple[tuple[str, str, int], ...]
    differing: tuple[tuple[str, str, int, str], ...]  # pair, timeframe, bucket, what differs
    checked_against_ticks: int
    since_ms: int
    until_ms: int

    @property
    def ok(self) -> bool:
        return not self.unaccounted and not self.differing

    def count(self, cls: Class) -> int:
        return sum(c.get(cls.value, 0) for c in self.classes.values())

    def as_json(self) -> dict[str, object]:
        return {
            "since": ms_to_dt(self.since_ms).isoformat(),
            "until": ms_to_dt(self.until_ms).isoformat(),
            "ok": self.ok,
            "classes": self.classes,
            "not_covered_reasons": self.reasons,
            "unaccounted": [{"pair": p, "timeframe": tf, "bucket": ms_to_dt(b).isoformat()}
                            for p, tf, b in self.unaccounted],
            "differing": [{"pair": p, "timeframe": tf, "bucket": ms_to_dt(b).isoformat(), "what": w}
                          for p, tf, b, w in self.differing],
            "checked_against_ticks": self.checked_against_ticks,
        }  # fmt: skip


def classify(
    row: Row | None, repair: Repair | None, covered: bool, has_ticks: bool, uncovered_reason: str | None
) -> tuple[Class, str | None]:
    """One bucket's class (pure: every input is already read)."""
    if row is not None and row.complete:
        return {CandleSource.STREAM: Class.STREAM, CandleSource.REST: Class.REST}.get(row.source, Class.IMPORTED), None
    if repair is not None:
        if not repair.resolved:
            return Class.PENDING, None
        if repair.resolution == Resolution.UNRECOVERABLE:
            return Class.UNRECOVERABLE, None
        if repair.resolution == Resolution.EMPTY and row is None and not has_ticks:
            return Class.EMPTY, None
    if row is None and covered and not has_ticks:
        return Class.QUIET, None
    if not covered and uncovered_reason is not None:
        return Class.NOT_COVERED, uncovered_reason
    return Class.UNACCOUNTED, None


def _tick_candles(conn: psycopg.Connection, tf: str, pairs: Sequence[str], lo: dt.datetime, hi: dt.datetime):
    """Stream candles recomputed from `ticks`: (pair, bucket) -> (count, bid o/h/l/c, ask o/h/l/c)."""
    rows = conn.execute(
        "SELECT pair, time_bucket(%s::interval, time) AS b, count(*), "
        "first(bid, time), max(bid), min(bid), last(bid, time), first(ask, time), max(ask), min(ask), last(ask, time) "
        "FROM ticks WHERE pair = ANY(%s) AND time >= %s AND time < %s GROUP BY 1, 2",
        (f"{tfs.minutes(tf)} minutes", list(pairs), lo, hi),
    ).fetchall()
    return {(r[0], dt_to_ms(r[1])): r[2:] for r in rows}


def _ties_match(conn: psycopg.Connection, pair: str, b: dt.datetime, e: dt.datetime, stored: Sequence[float]) -> bool:
    """Open and close when several ticks share the first or last millisecond: the stored
    values must be one of those quotes (the ticks table does not keep arrival order)."""
    row = conn.execute(
        "WITH t AS (SELECT time, bid, ask FROM ticks WHERE pair = %s AND time >= %s AND time < %s) "
        "SELECT array_agg(ARRAY[bid, ask]) FILTER (WHERE time = (SELECT min(time) FROM t)), "
        "array_agg(ARRAY[bid, ask]) FILTER (WHERE time = (SELECT max(time) FROM t)) FROM t",
        (pair, b, e),
    ).fetchone()
    firsts, lasts = ({tuple(x) for x in (v or [])} for v in row)
    return (stored[0], stored[4]) in firsts and (stored[3], stored[7]) in lasts


def run_audit(
    conn: psycopg.Connection,
    settings: Settings,
    since_ms: int,
    until_ms: int,
    now_ms: int,
    *,
    pairs: Iterable[str] | None = None,
    timeframes: Iterable[str] | None = None,
    max_listed: int = 1000,
) -> Verdict:
    pairs = tuple(pairs or settings.pairs)
    timeframes = tuple(timeframes or settings.timeframes)
    until_ms = min(until_ms, now_ms - SETTLED_MS - settings.close_grace_ms)
    hi = ms_to_dt(max(until_ms, since_ms))
    widest = max(tfs.length_ms(tf) for tf in timeframes)
    lo = ms_to_dt(since_ms - since_ms % widest)  # every bucket of the range starts at or after it
    cov = Coverage(
        [
            Interval(dt_to_ms(s), None if e is None else dt_to_ms(e), r)
            for s, e, r in conn.execute("SELECT started_at, ended_at, end_reason FROM stream_coverage").fetchall()
        ],
        now_ms,
        int(settings.backfill_max_age_s * 1000),
    )
    gaps: dict[str, list[tuple[int, int]]] = {}
    for p, f, t in conn.execute(
        "SELECT pair, from_time, to_time FROM tick_gaps WHERE to_time >= %s AND from_time < %s", (lo, hi)
    ).fetchall():
        gaps.setdefault(p, []).append((dt_to_ms(f), dt_to_ms(t)))
    # Retention drops whole daily chunks: from the day of a pair's oldest tick on, the ticks
    # table holds every tick it was given.
    oldest_tick = {
        p: dt_to_ms(t) - dt_to_ms(t) % DAY_MS
        for p, t in conn.execute(
            "SELECT p, (SELECT min(time) FROM ticks WHERE pair = p) FROM unnest(%s::text[]) AS p", (list(pairs),)
        ).fetchall()
        if t is not None
    }
    classes: dict[str, dict[str, int]] = {}
    reasons: Counter[str] = Counter()
    unaccounted: list[tuple[str, str, int]] = []
    differing: list[tuple[str, str, int, str]] = []
    checked = 0
    for tf in timeframes:
        n = tfs.length_ms(tf)
        counts: Counter[str] = Counter()
        rows = {
            (r[0], dt_to_ms(r[1])): r[2:]
            for r in conn.execute(
                "SELECT pair, bucket, complete, source, ticks, bid_open, bid_high, bid_low, bid_close, "
                "ask_open, ask_high, ask_low, ask_close FROM candles "
                "WHERE timeframe = %s AND pair = ANY(%s) AND bucket >= %s AND bucket < %s",
                (tf, list(pairs), lo, hi),
            ).fetchall()
        }
        repairs = {
            (p, dt_to_ms(b)): Repair(resolved is not None, res)
            for p, b, resolved, res in conn.execute(
                "SELECT pair, bucket, resolved_at, resolution FROM candle_repairs "
                "WHERE timeframe = %s AND pair = ANY(%s) AND bucket >= %s AND bucket < %s",
                (tf, list(pairs), lo, hi),
            ).fetchall()
        }
        from_ticks = _tick_candles(conn, tf, pairs, lo, ms_to_dt(until_ms + n))
        for b in market_buckets(since_ms, until_ms - n + 1, n):
            covered = cov.covers(b, b + n)
            why = None if covered else cov.uncovered_reason(b, b + n)
            for pair in pairs:
                stored = rows.get((pair, b))
                ticks = from_ticks.get((pair, b))
                row = Row(bool(stored[0]), stored[1]) if stored else None
                cls, reason = classify(row, repairs.get((pair, b)), covered, ticks is not None, why)
                counts[cls.value] += 1
                if reason:
                    reasons[reason] += 1
                if cls is Class.UNACCOUNTED and len(unaccounted) < max_listed:
                    unaccounted.append((pair, tf, b))
                if cls is Class.STREAM and pair in oldest_tick and oldest_tick[pair] <= b:
                    if any(f <= b + n - 1 and t >= b for f, t in gaps.get(pair, ())):
                        continue  # tick rows known to be missing here: the ticks cannot judge it
                    checked += 1
                    what = _differs(stored[2:], ticks)
                    if what == "open/close" and _ties_match(conn, pair, ms_to_dt(b), ms_to_dt(b + n), stored[3:]):
                        what = None
                    if what:
                        differing.append((pair, tf, b, what))
        classes[tf] = dict(sorted(counts.items()))
    return Verdict(classes, dict(sorted(reasons.items())), tuple(unaccounted), tuple(differing), checked,
                   since_ms, until_ms)  # fmt: skip


def _differs(stored: Sequence[object], ticks: Sequence[object] | None) -> str | None:
    """stored: (ticks, bid o/h/l/c, ask o/h/l/c); ticks: (count, bid o/h/l/c, ask o/h/l/c)."""
    if ticks is None:
        return "no ticks stored"
    if stored[0] != ticks[0]:
        return f"tick count {stored[0]} vs {ticks[0]} in ticks"
    s, t = stored[1:], ticks[1:]
    if (s[1], s[2], s[5], s[6]) != (t[1], t[2], t[5], t[6]):
        return "high/low"
    if (s[0], s[3], s[4], s[7]) != (t[0], t[3], t[4], t[7]):
        return "open/close"
    return None


class AuditLoop:
    """The running collector audits the last 24 hours at start and every
    COLLECTOR_AUDIT_INTERVAL_S, on its own thread and connection, and exports the verdict."""

    def __init__(self, settings: Settings, url: str, metrics: Metrics, now_ms: Callable[[], int]) -> None:
        self.settings, self.url, self.metrics, self.now_ms = settings, url, metrics, now_ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit", daemon=True)
        self.last: Verdict | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def run_once(self) -> Verdict:
        now = self.now_ms()
        with psycopg.connect(self.url, autocommit=True, application_name="ig-collector audit") as conn:
            v = run_audit(conn, self.settings, now - DAY_MS, now, now)
        m = self.metrics
        m.unaccounted_buckets.set(v.count(Class.UNACCOUNTED))
        m.candles_differing.set(len(v.differing))
        for cls in Class:
            m.audit_buckets.labels(cls.value).set(v.count(cls))
        m.audit_last_run.set(time.time())
        self.last = v
        if not v.ok:
            log.error(
                "audit: buckets unaccounted for or candles differing from their ticks; run `ig-collector audit`",
                extra={"unaccounted": v.count(Class.UNACCOUNTED), "differing": len(v.differing),
                       "first": [f"{p} {tf} {ms_to_dt(b).isoformat()}" for p, tf, b in v.unaccounted[:5]]},
            )  # fmt: skip
        return v

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as e:  # the audit observes; it must never take the collector down
                log.warning("audit skipped", extra={"error": f"{type(e).__name__}: {e}".strip()})
            self._stop.wait(self.settings.audit_interval_s)


# --- command line -----------------------------------------------------------------------------
def _time(value: str, now: dt.datetime, flag: str) -> dt.datetime:
    m = re.fullmatch(r"(\d+)([mhd])", value.strip())
    if m:
        k = int(m.group(1))
        return now - dt.timedelta(**{{"m": "minutes", "h": "hours", "d": "days"}[m.group(2)]: k})
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{flag} {value!r}: use an ISO time (2026-11-18T10:00Z) or an age like 12h, 2d") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", default="24h", help="start: ISO time or an age like 12h, 2d (default 24h)")
    p.add_argument("--until", help="end: ISO time or an age (default now)")
    p.add_argument("--pair", action="append", help="pair to audit (repeatable; default all configured)")
    p.add_argument("--timeframe", action="append", help="timeframe to audit (repeatable; default configured)")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    p.add_argument("--database-url", help="overrides DATABASE_URL")


def main(args: argparse.Namespace) -> int:
    settings = load_settings(getattr(args, "config", None))
    url = settings.url_or(args.database_url)
    from .clock import make_clock

    now_ms = make_clock(settings.clock, settings.ig_api_url).now_ms()
    now = ms_to_dt(now_ms)
    since, until = _time(args.since, now, "--since"), _time(args.until, now, "--until") if args.until else now
    if since >= until:
        raise ConfigError(f"--since ({since:%Y-%m-%d %H:%M}) must be before --until ({until:%Y-%m-%d %H:%M})")
    pairs = [validate_pair(p) for p in args.pair] if args.pair else None
    for tf in args.timeframe or ():
        if tf not in settings.timeframes:
            raise ConfigError(f"--timeframe {tf}: the collector builds {', '.join(settings.timeframes)}")
    with psycopg.connect(url, autocommit=True, application_name="ig-collector audit") as conn:
        v = run_audit(conn, settings, dt_to_ms(since), dt_to_ms(until), now_ms, pairs=pairs,
                      timeframes=args.timeframe)  # fmt: skip
    if args.json:
        json.dump(v.as_json(), sys.stdout, indent=2)
        print()
    else:
        _print(v)
    return 0 if v.ok else 1


def _print(v: Verdict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"Buckets in FX market hours, {ms_to_dt(v.since_ms):%Y-%m-%d %H:%M} to "
                        f"{ms_to_dt(v.until_ms):%Y-%m-%d %H:%M} UTC")  # fmt: skip
    table.add_column("class")
    for tf in v.classes:
        table.add_column(tf, justify="right")
    for cls in Class:
        if any(c.get(cls.value) for c in v.classes.values()):
            table.add_row(cls.value, *(str(c.get(cls.value, 0)) for c in v.classes.values()))
    console.print(table)
    for reason, n in v.reasons.items():
        console.print(f"  not covered, {reason}: {n}")
    for p, tf, b in v.unaccounted[:20]:
        console.print(f"  [red]unaccounted[/] {p} {tf} {ms_to_dt(b):%Y-%m-%d %H:%M}")
    for p, tf, b, what in v.differing[:20]:
        console.print(f"  [red]differs from its ticks[/] {p} {tf} {ms_to_dt(b):%Y-%m-%d %H:%M}: {what}")
    verdict = "OK" if v.ok else "FAILED"
    console.print(
        f"audit {verdict}: {v.count(Class.UNACCOUNTED)} unaccounted, {len(v.differing)} of {v.checked_against_ticks} "
        "stream candles differ from their ticks"
    )
