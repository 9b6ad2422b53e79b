"""Partial and missing buckets, and their replacement from REST (docs/design.md §6).

A bucket the stream covered only in part (an outage, a restart, a tick that came too late) is
flagged in `candle_repairs` (which survives kill -9). Once the bucket has closed, the repair
worker fetches exactly those buckets from REST, within the shared budget and IG's request rate,
and stores them with `source = 'rest'`; the stream's partial row is first marked incomplete so
that a REST candle may replace it. Buckets REST cannot supply are reported, never hidden.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

import numpy as np
import psycopg

from . import timeframes as tfs
from .aggregator import CandleClosed, CandleCorrected, Event
from .compose import compose
from .config import Settings
from .ig_rest import AllowanceExhausted, BudgetExceeded, RestClient, RestError
from .leadership import Fence, is_fenced
from .market_hours import market_buckets
from .metrics import Metrics
from .models import Candle, Flag
from .store import is_permanent
from .vocabulary import NOTIFY_CHANNEL, CandleKind, CandleSource, Resolution, dt_to_ms, encode_notice, ms_to_dt

if TYPE_CHECKING:
    from .pipeline import TickSink

log = logging.getLogger(__name__)

# How long after a bucket's close before asking IG for it, so its candle is final there too.
SETTLE_MS = 5_000
MAX_ATTEMPTS = 5


def flags_for_interval(
    pairs: Iterable[str], timeframes: Iterable[str], start_ms: int, end_ms: int, reason: str
) -> list[Flag]:
    """Every market-hours bucket of every pair and timeframe that overlaps [start_ms, end_ms]."""
    out = []
    for tf in timeframes:
        tf_ms = tfs.length_ms(tf)
        for b in market_buckets(start_ms, end_ms + 1, tf_ms):
            out.extend(Flag(p, tf, b, reason) for p in pairs)
    return out


def rest_candles_json(candles: Iterable[Candle]) -> str:
    return json.dumps(
        [
            {
                "pair": c.pair, "timeframe": c.timeframe, "bucket": ms_to_dt(c.bucket_ms).isoformat(),
                "bid_open": c.bid_open, "bid_high": c.bid_high, "bid_low": c.bid_low, "bid_close": c.bid_close,
                "ask_open": c.ask_open, "ask_high": c.ask_high, "ask_low": c.ask_low, "ask_close": c.ask_close,
                "ticks": c.ticks,
            }
            for c in candles
        ]
    )  # fmt: skip


_DEMOTE = (
    "UPDATE candles c SET complete = false FROM unnest(%s::text[], %s::text[], %s::timestamptz[]) AS k(p, tf, b) "
    "WHERE c.pair = k.p AND c.timeframe = k.tf AND c.bucket = k.b AND c.source = 'stream' AND c.complete"
)


def _keys(items: Iterable[Flag | Candle]) -> tuple[list[str], list[str], list[dt.datetime]]:
    items = list(items)
    return [i.pair for i in items], [i.timeframe for i in items], [ms_to_dt(i.bucket_ms) for i in items]


def store_rest(conn: psycopg.Connection, candles: list[Candle], replace_partial: bool) -> int:
    """Store REST candles; with `replace_partial`, the stream rows of these buckets are partial
    by our own knowledge and are demoted to incomplete first so REST may replace them.
    Returns rows written. Sends `candle_closed` for each, as the stream path does."""
    if not candles:
        return 0
    keys = _keys(candles)
    with conn.transaction():
        if replace_partial:
            conn.execute(_DEMOTE, keys)
        n = conn.execute("SELECT store_rest_candles(%s::jsonb)", (rest_candles_json(candles),)).fetchone()[0]
        # The writer may have inserted a bucket's stream row after the demotion above and
        # committed it while our insert waited for it (a flush retried after a database outage):
        # that row, complete and partial, blocked the REST candle. Demote and store once more;
        # any later stream write now finds the REST row and leaves it.
        if replace_partial and conn.execute(_DEMOTE, keys).rowcount:
            n = conn.execute("SELECT store_rest_candles(%s::jsonb)", (rest_candles_json(candles),)).fetchone()[0]
        for c in candles:
            conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, encode_notice(c.pair, c.timeframe, c.bucket_ms)))
    return int(n)


class FlagSink(Protocol):
    """Where flags become durable: the writer, in the transaction of the candles they concern."""

    def submit_flags(self, flags: Iterable[Flag]) -> None: ...


class RepairBook:
    """Which buckets this process knows to be owed a repair, so that a closing candle of one is
    written incomplete. Only an index: every flag is handed to the sink (the writer) at once,
    and `candle_repairs` is the record; at start and after a reconnect the index is reloaded."""

    def __init__(self, sink: FlagSink | None = None) -> None:
        self.sink = sink
        self._open: set[tuple[str, str, int]] = set()
        self._lock = threading.Lock()

    def flag(self, flags: Iterable[Flag]) -> int:
        flags = list(flags)
        if not flags:
            return 0
        with self._lock:
            self._open.update((f.pair, f.timeframe, f.bucket_ms) for f in flags)
        if self.sink is not None:
            self.sink.submit_flags(flags)
        return len(flags)

    def is_flagged(self, pair: str, timeframe: str, bucket_ms: int) -> bool:
        """Whether a closing stream candle is known to be partial (written incomplete)."""
        return (pair, timeframe, bucket_ms) in self._open

    def load_open(self, conn: psycopg.Connection) -> None:
        rows = conn.execute("SELECT pair, timeframe, bucket FROM candle_repairs WHERE resolved_at IS NULL").fetchall()
        with self._lock:
            self._open.update((p, tf, dt_to_ms(b)) for p, tf, b in rows)

    def resolved(self, pair: str, timeframe: str, bucket_ms: int) -> None:
        with self._lock:
            self._open.discard((pair, timeframe, bucket_ms))


class PartialAwareSink:
    """Between the pipeline and the writer, the repair book's rule for a closing candle: a
    bucket the stream saw only in part (flagged) is written incomplete and without NOTIFY, so
    no reader takes it for final; the repair's REST candle notifies later."""

    def __init__(self, writer: TickSink, book: RepairBook) -> None:
        self.writer, self.book = writer, book

    def submit_tick(self, code: int, time_ms: int, bid: float, ask: float, received_ms: int | None = None) -> None:
        self.writer.submit_tick(code, time_ms, bid, ask, received_ms)

    def submit_ticks(
        self,
        codes: np.ndarray,
        times: np.ndarray,
        bids: np.ndarray,
        asks: np.ndarray,
        received_ms: int | np.ndarray | None = None,
    ) -> None:
        self.writer.submit_ticks(codes, times, bids, asks, received_ms)

    def submit_candles(self, candles: Iterable[Candle], kind: str) -> None:
        self.writer.submit_candles(candles, kind)

    def submit_events(self, events: Iterable[Event]) -> None:
        keep: list[Event] = []
        partial: list[Candle] = []
        for e in events:
            if isinstance(e, CandleClosed | CandleCorrected):
                c = e.candle
                if self.book.is_flagged(c.pair, c.timeframe, c.bucket_ms):
                    partial.append(dataclasses.replace(c, complete=False))
                    continue
            keep.append(e)
        if keep:
            self.writer.submit_events(keep)
        if partial:
            self.writer.submit_candles(partial, CandleKind.FORMING)


class RequestPacer:
    """IG allows ~30 non-trading requests a minute per account: at most `per_minute` in any
    60 s, waiting (interruptibly, on `stop`) for the oldest to age out."""

    def __init__(self, per_minute: int, stop: threading.Event) -> None:
        self.per_minute, self._stop = per_minute, stop
        self._times: list[float] = []

    def wait_turn(self) -> None:
        now = time.monotonic()
        self._times = [t for t in self._times if now - t < 60]
        if len(self._times) >= self.per_minute:
            self._stop.wait(max(0.0, 60 - (now - self._times[0])))
        self._times.append(time.monotonic())


# --- candle_repairs: the record of what is owed and how each repair ended -----------------------


def open_repairs(conn: psycopg.Connection) -> list[tuple[str, str, int, int]]:
    """(pair, timeframe, bucket_ms, attempts) of every repair not resolved yet, in order."""
    rows = conn.execute(
        "SELECT pair, timeframe, bucket, attempts FROM candle_repairs WHERE resolved_at IS NULL "
        "ORDER BY pair, timeframe, bucket"
    ).fetchall()
    return [(p, tf, dt_to_ms(b), a) for p, tf, b, a in rows]


def _open_buckets(conn: psycopg.Connection, tf: str, pairs: list[str], lo: int, hi: int) -> list[tuple[str, int]]:
    rows = conn.execute(
        "SELECT pair, bucket FROM candle_repairs WHERE timeframe = %s AND pair = ANY(%s) "
        "AND resolved_at IS NULL AND bucket >= %s AND bucket < %s",
        (tf, pairs, ms_to_dt(lo), ms_to_dt(hi)),
    ).fetchall()
    return [(p, dt_to_ms(b)) for p, b in rows]


def _resolve(conn: psycopg.Connection, pair: str, tf: str, bucket_ms: int, resolution: Resolution) -> None:
    conn.execute(
        "UPDATE candle_repairs SET resolved_at = now(), resolution = %s, attempts = attempts + 1 "
        "WHERE pair = %s AND timeframe = %s AND bucket = %s",
        (resolution, pair, tf, ms_to_dt(bucket_ms)),
    )


def _resolve_unrecoverable(conn: psycopg.Connection, pair: str, tf: str, bucket_ms: int, error: str | None) -> None:
    """Keeps an earlier resolution time and error: a give-up is reported once, as it first was."""
    conn.execute(
        "UPDATE candle_repairs SET resolved_at = coalesce(resolved_at, now()), resolution = %s, "
        "last_error = coalesce(%s, last_error) WHERE pair = %s AND timeframe = %s AND bucket = %s",
        (Resolution.UNRECOVERABLE, error[:500] if error else None, pair, tf, ms_to_dt(bucket_ms)),
    )


def _count_failure(conn: psycopg.Connection, pair: str, tf: str, bucket_ms: int, error: str, *, final: bool) -> None:
    """One more failed attempt; the `final` one resolves the repair as unrecoverable."""
    conn.execute(
        "UPDATE candle_repairs SET attempts = attempts + 1, last_error = %s, "
        "resolved_at = CASE WHEN %s THEN now() END, resolution = CASE WHEN %s THEN %s END "
        "WHERE pair = %s AND timeframe = %s AND bucket = %s",
        (error[:500], final, final, Resolution.UNRECOVERABLE, pair, tf, ms_to_dt(bucket_ms)),
    )


def _complete_candles(conn: psycopg.Connection, tf: str, pairs: list[str], lo: int, hi: int) -> list[Candle]:
    """Stored complete candles of `tf` with bucket in [lo, hi): what a coarser one is composed of."""
    return [
        Candle(p, tf, dt_to_ms(b), *px, int(ticks), True, src)
        for p, b, *px, ticks, src in conn.execute(
            "SELECT pair, bucket, bid_open, bid_high, bid_low, bid_close, ask_open, ask_high, ask_low, "
            "ask_close, ticks, source FROM candles WHERE timeframe = %s AND pair = ANY(%s) AND complete "
            "AND bucket >= %s AND bucket < %s",
            (tf, pairs, ms_to_dt(lo), ms_to_dt(hi)),
        ).fetchall()
    ]


def _stream_ticks(conn: psycopg.Connection, pair: str, tf: str, bucket_ms: int) -> int | None:
    """The tick count of the stream's row of this bucket; None when the stream has none."""
    row = conn.execute(
        "SELECT ticks FROM candles WHERE pair = %s AND timeframe = %s AND bucket = %s AND source = %s",
        (pair, tf, ms_to_dt(bucket_ms), CandleSource.STREAM),
    ).fetchone()
    return None if row is None else row[0]


class RepairWorker:
    """Replaces flagged buckets from REST once they closed, within budget and rate limits."""

    def __init__(
        self,
        settings: Settings,
        db_url: str,
        book: RepairBook,
        metrics: Metrics,
        now_ms: Callable[[], int],
        rest_factory: Callable[[], RestClient],
        *,
        settle_ms: int = SETTLE_MS,
        fence: Fence | None = None,
        on_fenced: Callable[[BaseException], None] | None = None,
    ) -> None:
        """`settle_ms`: how long after a bucket's close (plus grace) before asking REST for it.
        The live daemon waits out the lateness window too: a late tick may still correct the
        bucket, and a REST candle stored earlier would hide that correction (the stream never
        overwrites a REST row).

        `fence`: the leader's token; each write transaction starts with it, so a collector that
        lost the lease stores nothing it bought (`on_fenced` is told, and the worker stops)."""
        self.fence, self.on_fenced = fence, on_fenced
        self.settings, self.db_url, self.book, self.metrics, self.now_ms = settings, db_url, book, metrics, now_ms
        self.outcomes = RepairOutcomes(book, metrics)
        self._rest_factory = rest_factory
        self.settle_ms = settle_ms
        self._rest: RestClient | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="repairs", daemon=True)
        self._pacer = RequestPacer(settings.rest_requests_per_minute, self._stop)
        self.blocked_until_ms = 0  # allowance exhausted: no REST until then

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        conn: psycopg.Connection | None = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.db_url, autocommit=True, application_name="ig-collector repairs")
                    self.book.load_open(conn)
                self.run_once(conn)
            except Exception as e:
                if is_fenced(e):
                    log.error("repair write refused: this collector no longer leads", extra={"error": str(e)})
                    if self.on_fenced is not None:
                        self.on_fenced(e)
                    break
                if isinstance(e, psycopg.Error):
                    log.warning("repair worker lost the database; retrying", extra={"error": str(e).strip()})
                    conn = None
                else:
                    log.exception("repair worker failed; retrying")
            self._wake.wait(2.0)
            self._wake.clear()
        if conn is not None:
            conn.close()

    @contextlib.contextmanager
    def _writing(self, conn: psycopg.Connection) -> Iterator[None]:
        """One fenced write transaction (a plain block when there is no election)."""
        if self.fence is None:
            yield
            return
        with conn.transaction():
            self.fence(conn)
            yield

    def pending(self, conn: psycopg.Connection) -> list[tuple[str, str, int, int]]:
        return open_repairs(conn)

    def run_once(self, conn: psycopg.Connection, on_progress: Callable[[int], None] | None = None) -> int:
        """One pass over the due repairs; returns the buckets resolved."""
        rows = self.pending(conn)
        self.metrics.repairs_pending.set(len(rows))
        if not rows or not self.settings.backfill_enabled:
            return 0
        now = self.now_ms()
        wait = self.settings.close_grace_ms + self.settle_ms
        due = [r for r in rows if r[2] + tfs.length_ms(r[1]) + wait <= now]
        served = self.settings.repair_timeframes
        resolved = self._give_up_unserved(conn, [r for r in due if r[1] not in served])
        if now < self.blocked_until_ms:
            return resolved
        # Finest timeframe first: a coarser bucket whose finer buckets are then all complete is
        # composed from them (a 15m candle is exactly its three 5m ones) instead of bought again.
        for tf in sorted({r[1] for r in due if r[1] in served}, key=tfs.minutes):
            rows_tf = [r for r in due if r[1] == tf]
            finer = _finer(tf, served)
            if finer is not None:
                composed, rows_tf = self._compose(conn, tf, finer, rows_tf)
                resolved += composed
            for pair, tf_, buckets in _contiguous(rows_tf):
                if self._stop.is_set():
                    break
                resolved += self._repair_group(conn, pair, tf_, buckets)
                if on_progress:
                    on_progress(len(buckets))
        if resolved:
            self.metrics.repairs_pending.set(len(self.pending(conn)))
        return resolved

    def _repair_group(self, conn: psycopg.Connection, pair: str, tf: str, buckets: list[tuple[int, int]]) -> int:
        try:
            return self._repair_range(conn, pair, tf, buckets)
        except psycopg.Error as e:
            if not is_permanent(e):
                raise  # the database is away: the loop reconnects and retries
            self._note_failure(conn, pair, tf, buckets, f"the database refused the REST candles: {e}".strip())
        except Exception as e:  # one group's surprise must not stop every other repair
            if is_fenced(e):
                raise  # not the leader: nothing more may be written
            log.exception("repair of one range failed", extra={"pair": pair, "timeframe": tf})
            self._note_failure(conn, pair, tf, buckets, f"{type(e).__name__}: {e}")
        return 0

    def _compose(
        self, conn: psycopg.Connection, tf: str, finer: str, rows: list[tuple[str, str, int, int]]
    ) -> tuple[int, list[tuple[str, str, int, int]]]:
        """Replace what can be built from stored complete `finer` candles; defer a bucket while a
        finer bucket inside it still waits for its own repair. Returns (composed, rows to buy)."""
        if not rows:
            return 0, rows
        n = tfs.length_ms(tf)
        pairs = sorted({r[0] for r in rows})
        lo, hi = min(r[2] for r in rows), max(r[2] for r in rows) + n
        stored = _complete_candles(conn, finer, pairs, lo, hi)
        waiting = {(p, tfs.bucket_start(b, n)) for p, b in _open_buckets(conn, finer, pairs, lo, hi)}
        built = {(c.pair, c.bucket_ms): c for c in compose(stored, tf)}
        to_buy, done = [], 0
        for row in rows:
            pair, _tf, b, _attempts = row
            c = built.get((pair, b))
            if c is None:
                if (pair, b) not in waiting:
                    to_buy.append(row)
                continue
            with self._writing(conn):
                store_rest(conn, [c], replace_partial=True)
                _resolve(conn, pair, tf, b, Resolution.COMPOSED)
            self.book.resolved(pair, tf, b)
            self.metrics.repairs.labels(Resolution.COMPOSED).inc()
            done += 1
        if done:
            log.info("composed from finer candles instead of bought", extra={"timeframe": tf, "from": finer,
                     "buckets": done, "points_saved": done})  # fmt: skip
        return done, to_buy

    def _give_up_unserved(self, conn: psycopg.Connection, rows: list[tuple[str, str, int, int]]) -> int:
        """Buckets of a timeframe with backfill off (COLLECTOR_BACKFILL_TIMEFRAMES): nothing will
        ever repair them, so they are reported as unrecoverable at once instead of waiting."""
        with self._writing(conn):
            for pair, tf, b, _attempts in rows:
                self.outcomes.unrecoverable(conn, pair, tf, b, "backfill is off for this timeframe")
        if rows:
            log.warning(
                "partial buckets of timeframes without backfill reported as unrecoverable",
                extra={"buckets": len(rows), "timeframes": ",".join(sorted({r[1] for r in rows}))},
            )
        return len(rows)

    def _repair_range(self, conn: psycopg.Connection, pair: str, tf: str, buckets: list[tuple[int, int]]) -> int:
        if self._rest is None:
            self._rest = self._rest_factory()
        start, end = buckets[0][0], buckets[-1][0]
        self._pacer.wait_turn()
        if self.fence is not None:
            self.fence.check()  # a collector that lost the lease buys nothing it could not store
        try:
            candles = self._rest.fetch_candles(pair, tf, start, end, purpose="repair")
        except AllowanceExhausted as e:
            self.blocked_until_ms = dt_to_ms(e.expires_at)
            self.metrics.rest_exhausted.set(1)
            log.error("REST allowance exhausted: repairs wait until the reset", extra={"until": str(e.expires_at)})
            return 0
        except BudgetExceeded as e:
            log.warning("repair postponed: %s", e)
            return 0
        except RestError as e:
            self.metrics.rest_errors.inc()
            self._note_failure(conn, pair, tf, buckets, str(e))
            return 0
        self.metrics.rest_exhausted.set(0)
        self.metrics.rest_points.labels("repair").inc(len(candles))
        st = self._rest.budget.state() if self._rest.budget else None
        if st:
            self.metrics.rest_remaining.set(st.remaining)
            self.metrics.rest_total.set(st.total)
        got = {c.bucket_ms for c in candles}
        invalid = dict(self._rest.invalid_buckets)
        with self._writing(conn):
            store_rest(conn, candles, replace_partial=True)
            with conn.transaction():
                for b, _ in buckets:
                    _resolve(conn, pair, tf, b, Resolution.REST if b in got else Resolution.EMPTY)
            for b, _ in buckets:
                self.book.resolved(pair, tf, b)
                if b in invalid:  # counted as unrecoverable there
                    self.outcomes.invalid(conn, pair, tf, b, invalid[b])
                    continue
                outcome = Resolution.REST if b in got else Resolution.EMPTY
                self.metrics.repairs.labels(outcome).inc()
                if outcome == Resolution.EMPTY:
                    self.outcomes.empty(conn, pair, tf, b)
        self.metrics.candles_written.labels(tf, CandleKind.REST).inc(len(candles))
        log.info(
            "repaired from REST",
            extra={"pair": pair, "timeframe": tf, "buckets": len(buckets), "candles": len(candles)},
        )
        return len(buckets)

    def _note_failure(self, conn: psycopg.Connection, pair: str, tf: str, buckets: list[tuple[int, int]],
                      error: str) -> None:  # fmt: skip
        with self._writing(conn):
            self.outcomes.failures(conn, pair, tf, buckets, error)


class RepairOutcomes:
    """How a repair that did not buy a usable candle ends: resolved as unrecoverable (its
    partial stream row demoted, never passed off as complete), or one more failed attempt."""

    def __init__(self, book: RepairBook, metrics: Metrics) -> None:
        self.book, self.metrics = book, metrics

    def unrecoverable(self, conn: psycopg.Connection, pair: str, tf: str, bucket_ms: int,
                               error: str | None) -> None:  # fmt: skip
        """Resolved as unrecoverable (reported, never retried); a partial stream row stays
        incomplete rather than being passed off as complete."""
        _resolve_unrecoverable(conn, pair, tf, bucket_ms, error)
        conn.execute(_DEMOTE, ([pair], [tf], [ms_to_dt(bucket_ms)]))
        self.book.resolved(pair, tf, bucket_ms)
        self.metrics.repairs.labels(Resolution.UNRECOVERABLE).inc()

    def empty(self, conn: psycopg.Connection, pair: str, tf: str, bucket_ms: int) -> None:
        """REST had no candle: fine if we have none either; a partial stream row stays
        incomplete and is reported as unrecoverable rather than passed off as complete."""
        ticks = _stream_ticks(conn, pair, tf, bucket_ms)
        if ticks is not None:
            self.unrecoverable(conn, pair, tf, bucket_ms, None)
            log.error(
                "partial candle has no REST replacement; left incomplete",
                extra={"pair": pair, "timeframe": tf, "bucket": ms_to_dt(bucket_ms).isoformat(), "ticks": ticks},
            )

    def invalid(self, conn: psycopg.Connection, pair: str, tf: str, bucket_ms: int, why: str) -> None:
        """IG answered (and charged) for this bucket but its candle is unusable (a null price):
        asking again would pay again for the same answer, so it is reported, not retried."""
        self.unrecoverable(conn, pair, tf, bucket_ms, why)
        log.error("REST candle unusable; bucket left incomplete", extra={"pair": pair, "timeframe": tf,
                  "bucket": ms_to_dt(bucket_ms).isoformat(), "error": why})  # fmt: skip

    def failures(self, conn: psycopg.Connection, pair: str, tf: str, buckets: list[tuple[int, int]],
                        error: str) -> None:  # fmt: skip
        for b, attempts in buckets:
            final = attempts + 1 >= MAX_ATTEMPTS
            _count_failure(conn, pair, tf, b, error, final=final)
            if final:
                conn.execute(_DEMOTE, ([pair], [tf], [ms_to_dt(b)]))  # never passed off as complete
                self.book.resolved(pair, tf, b)
                self.metrics.repairs.labels(Resolution.UNRECOVERABLE).inc()
                log.error(
                    "bucket could not be repaired from REST after %d attempts", MAX_ATTEMPTS,
                    extra={"pair": pair, "timeframe": tf, "bucket": ms_to_dt(b).isoformat(), "error": error},
                )  # fmt: skip
        log.warning("REST repair failed; will retry", extra={"pair": pair, "timeframe": tf, "error": error})


def _finer(tf: str, served: Iterable[str]) -> str | None:
    """The coarsest repaired timeframe that divides `tf` (15m from 5m), if any."""
    n = tfs.length_ms(tf)
    fits = [t for t in served if tfs.length_ms(t) < n and n % tfs.length_ms(t) == 0]
    return max(fits, key=tfs.minutes) if fits else None


def _contiguous(rows: list[tuple[str, str, int, int]]) -> Iterable[tuple[str, str, list[tuple[int, int]]]]:
    """Group (pair, tf, bucket, attempts) rows into runs of adjacent buckets: one request each."""
    rows = sorted(rows, key=lambda r: (r[0], r[1], r[2]))
    run: list[tuple[int, int]] = []
    key: tuple[str, str] | None = None
    for pair, tf, b, attempts in rows:
        tf_ms = tfs.length_ms(tf)
        # Only truly adjacent buckets share a request: IG charges a point per candle returned, and
        # the candles in between are good stream candles that must not be replaced.
        if key == (pair, tf) and run and b - run[-1][0] == tf_ms:
            run.append((b, attempts))
            continue
        if key and run:
            yield key[0], key[1], run
        key, run = (pair, tf), [(b, attempts)]
    if key and run:
        yield key[0], key[1], run
