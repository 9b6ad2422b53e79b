"""Benchmarks for the aggregator and the writer (docs/design.md §9), each against its baseline
measured in the same run on the same ticks.

    .venv/bin/python -m tests.benchmarks.run            # everything (about two minutes)
    .venv/bin/python -m tests.benchmarks.run --quick    # smaller sizes, shorter latency runs
    .venv/bin/python -m tests.benchmarks.run --only aggregator|writer|latency

1. aggregator ticks/s, per-tick path and numpy batch path, against pandas
   `groupby(pair).resample(tf).ohlc()` of bid and ask for 28 pairs and 5m + 15m;
2. writer ticks/s from the collector's queue (raw Lightstreamer-like strings) to committed tick
   and candle rows, against the seed documents' pattern: one INSERT ... ON CONFLICT upsert and
   one COMMIT per update;
3. forming candles at 2,000 ticks/s, the default pacing beside the old one (a 1 s timer) in the
   same run: from a tick entering the queue to a reader on another connection (another process,
   so it does not share our GIL) seeing its candle count include it, and from a candle's due
   close (bucket end + grace) to its NOTIFY arriving at a listener; p50/p99 of each;
4. the database load at IG's real rates (30 ticks/s over 28 pairs): flushes/s, both pacings.

The database is a fresh one on the dev server (collector.devdb) unless --database-url is given;
it is dropped afterwards. Figures only: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from collector import devdb
from collector import timeframes as tfs
from collector.aggregator import Aggregator
from collector.config import load_settings
from collector.migrate import migrate
from collector.pairs import PAIRS
from collector.pipeline import Pipeline
from collector.store import Writer, WriterThread, ms_to_dt
from collector.vocabulary import NOTIFY_CHANNEL, decode_notice

T0 = 1_710_410_400_000  # 2024-03-14 10:00 UTC
TFS = ("5m", "15m")


@dataclass(frozen=True)
class Ticks:
    codes: np.ndarray
    times: np.ndarray
    bids: np.ndarray
    asks: np.ndarray


def make_ticks(n: int, rate_per_s: float, seed: int = 1) -> Ticks:
    """n ticks over the 28 pairs at an average rate, random-walk prices, each pair's ticks in
    time order and in distinct milliseconds (so none is a duplicate and pandas, which keeps
    duplicates, aggregates the same ticks)."""
    rng = np.random.default_rng(seed)
    times = T0 + np.cumsum(rng.exponential(1000.0 / rate_per_s, n)).astype(np.int64)
    codes = rng.integers(0, len(PAIRS), n).astype(np.int16)
    for c in range(len(PAIRS)):  # a pair never has two ticks in one millisecond
        m = np.flatnonzero(codes == c)
        k = np.arange(len(m))
        times[m] = np.maximum.accumulate(times[m] - k) + k
    base = np.where(np.char.endswith(np.array(PAIRS), "JPY"), 150.0, 1.1)[codes]
    pip = np.where(base > 10, 0.01, 0.0001)
    walk = np.zeros(n)
    for c in range(len(PAIRS)):  # per-pair random walk
        m = codes == c
        walk[m] = np.cumsum(rng.integers(-1, 2, int(m.sum())))
    bids = np.round(base + walk * pip, 5)
    asks = np.round(bids + pip * rng.integers(1, 4, n) / 2, 5)
    return Ticks(codes, times, bids, asks)


def best_of(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def line(name: str, value: str, note: str = "") -> None:
    print(f"  {name:<52} {value:>16}  {note}")


# ---------------------------------------------------------------------------------- aggregator
def bench_aggregator(quick: bool) -> None:
    import pandas as pd

    n = 500_000 if quick else 2_000_000
    tk = make_ticks(n, rate_per_s=500.0)
    hours = (tk.times[-1] - tk.times[0]) / 3_600_000
    print(f"\naggregator: {n:,} ticks, 28 pairs, {hours:.1f} h of market time, timeframes 5m + 15m, bid + ask")

    def batch(chunk: int) -> Aggregator:
        ag = Aggregator(PAIRS, TFS)
        for i in range(0, n, chunk):
            s = slice(i, i + chunk)
            ag.add_batch(tk.codes[s], tk.times[s], tk.bids[s], tk.asks[s], None)
            ag.take_dirty()
            ag.drain_events()
        return ag

    rates = {}
    for chunk in (10_000, 100_000):
        secs = best_of(lambda chunk=chunk: batch(chunk), 3)
        rates[chunk] = n / secs
        line(f"batch path, {chunk:,}-tick batches", f"{rates[chunk]:,.0f} ticks/s", "goal >= 1,000,000")

    m = min(n, 300_000)
    pairs, times = [PAIRS[c] for c in tk.codes[:m].tolist()], tk.times[:m].tolist()
    bids, asks = tk.bids[:m].tolist(), tk.asks[:m].tolist()

    def single() -> None:
        ag = Aggregator(PAIRS, TFS)
        add = ag.add
        for p, t, b, a in zip(pairs, times, bids, asks, strict=True):
            add(p, t, b, a, None)

    per_tick = m / best_of(single, 2)
    line("per-tick path (one add() call per tick)", f"{per_tick:,.0f} ticks/s")

    df = pd.DataFrame(
        {"pair": np.array(PAIRS)[tk.codes], "bid": tk.bids, "ask": tk.asks},
        index=pd.to_datetime(tk.times, unit="ms", utc=True),
    )

    def pandas_ohlc() -> list:
        return [df.groupby("pair")[["bid", "ask"]].resample(f).ohlc() for f in ("5min", "15min")]

    pd_rate = n / best_of(pandas_ohlc, 2)
    line("pandas groupby(pair).resample(tf).ohlc(), bid + ask", f"{pd_rate:,.0f} ticks/s")
    best = max(rates.values())
    line("ratio batch / pandas", f"{best / pd_rate:,.1f}x", "goal > 1x")
    line("ratio per-tick / pandas", f"{per_tick / pd_rate:,.2f}x")

    # The same numbers, not just the same speed: 5m bid OHLC equal to pandas for every bucket.
    ag = Aggregator(PAIRS, TFS)
    ag.add_batch(tk.codes, tk.times, tk.bids, tk.asks, None)
    ag.advance(int(tk.times[-1]) + 10**9)
    ours = {
        (e.candle.pair, e.candle.bucket_ms): (
            e.candle.bid_open,
            e.candle.bid_high,
            e.candle.bid_low,
            e.candle.bid_close,
        )
        for e in ag.drain_events()
        if e.candle.timeframe == "5m"
    }
    ref = pandas_ohlc()[0]["bid"].dropna()
    theirs = {(p, round(ts.timestamp() * 1000)): (r.open, r.high, r.low, r.close) for (p, ts), r in ref.iterrows()}
    same = "yes" if ours == theirs else "NO"
    line("5m bid OHLC identical to pandas", same, f"({len(ours):,} candles)")


# ---------------------------------------------------------------------------------- writer
def _truncate(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE ticks, candles, candle_repairs")


def bench_writer(url: str, quick: bool) -> None:
    import psycopg

    n = 200_000 if quick else 600_000
    settings = load_settings(database_url=url)
    tk = make_ticks(n, rate_per_s=2000.0, seed=2)
    raw = list(
        zip(
            np.array(PAIRS)[tk.codes].tolist(),
            [repr(x) for x in tk.bids.tolist()],
            [repr(x) for x in tk.asks.tolist()],
            [str(x) for x in tk.times.tolist()],
            tk.times.tolist(),  # received = IG time: the clock moves with the ticks
            strict=True,
        )
    )
    print(f"\nwriter: {n:,} raw updates queued (28 pairs), to committed tick rows and 5m/15m candle rows")
    _truncate(url)
    q: queue.SimpleQueue = queue.SimpleQueue()
    for item in raw:
        q.put(item)

    writer = Writer.from_settings(settings, url=url)
    flusher = WriterThread(writer).start()
    pipeline = Pipeline(settings, writer)
    start = time.perf_counter()
    done = 0
    while done < n:
        batch = [q.get()]
        while len(batch) < 20_000:
            try:
                batch.append(q.get_nowait())
            except queue.Empty:
                break
        cols = list(zip(*batch, strict=True))
        pipeline.feed_batch(cols[0], cols[1], cols[2], cols[3], np.array(cols[4], dtype=np.int64))
        pipeline.tick()
        writer.wait_below(100_000)  # the consumer would otherwise outrun the writer into the buffer
        done += len(batch)
    pipeline.finish()
    writer.wait_idle()
    secs = time.perf_counter() - start
    flusher.stop()
    writer.close()
    with psycopg.connect(url) as conn:
        stored = conn.execute("SELECT count(*) FROM ticks").fetchone()[0]
        candles = conn.execute("SELECT count(*) FROM candles").fetchone()[0]
    ours = n / secs
    line("pipeline + writer (COPY, batched upserts)", f"{ours:,.0f} ticks/s", "goal >= 50,000")
    line("  rows committed", f"{stored:,} ticks", f"{candles:,} candles, {writer.flushes} transactions")

    # Baseline: the seed documents' row-per-update pattern, on the same tables.
    m = 3_000 if quick else 5_000
    _truncate(url)
    state: dict[tuple[str, str, int], list] = {}
    upsert = """INSERT INTO candles (pair, timeframe, bucket, bid_open, bid_high, bid_low, bid_close,
                    ask_open, ask_high, ask_low, ask_close, ticks, complete)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, false)
                ON CONFLICT (pair, timeframe, bucket) DO UPDATE SET bid_high = EXCLUDED.bid_high,
                    bid_low = EXCLUDED.bid_low, bid_close = EXCLUDED.bid_close, ask_high = EXCLUDED.ask_high,
                    ask_low = EXCLUDED.ask_low, ask_close = EXCLUDED.ask_close, ticks = EXCLUDED.ticks"""
    with psycopg.connect(url) as conn:
        start = time.perf_counter()
        for pair, b, a, t, _ in raw[:m]:
            bid, ask, tms = float(b), float(a), int(t)
            conn.execute(
                "INSERT INTO ticks (time, pair, bid, ask) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (ms_to_dt(tms), pair, bid, ask),
            )
            for tf, length in (("5m", 300_000), ("15m", 900_000)):
                bucket = tms - tms % length
                s = state.get((pair, tf, bucket))
                if s is None:
                    s = state[(pair, tf, bucket)] = [bid, bid, bid, bid, ask, ask, ask, ask, 0]
                s[1], s[2], s[3] = max(s[1], bid), min(s[2], bid), bid
                s[5], s[6], s[7] = max(s[5], ask), min(s[6], ask), ask
                s[8] += 1
                conn.execute(upsert, (pair, tf, ms_to_dt(bucket), *s))
            conn.commit()
        naive = m / (time.perf_counter() - start)
    line("seed pattern: upsert + COMMIT per update", f"{naive:,.0f} ticks/s", f"({m:,} updates)")
    line("ratio writer / seed pattern", f"{ours / naive:,.0f}x", "goal >= 50x")
    with psycopg.connect(url) as conn:
        fsync = conn.execute("SHOW fsync").fetchone()[0]
        sync = conn.execute("SHOW synchronous_commit").fetchone()[0]
    if fsync == "off" or sync == "off":
        line("  note: this server runs fsync/synchronous_commit", f"{fsync}/{sync}",
             "which flatters the commit-per-update baseline")  # fmt: skip


# ---------------------------------------------------------------------------------- latency
@dataclass(frozen=True)
class Behaviour:
    """A way of pacing forming candles, measured side by side in one run."""

    label: str
    forming_interval_s: float


WARM_UP_S = 1.0  # ticks entering before this (the writer's first connection) are not counted
OLD = Behaviour("old: forming_interval_s = 1 (the 1 s timer)", 1.0)


@dataclass(frozen=True)
class LatencyResult:
    visible_p50_ms: float
    visible_p99_ms: float
    visible_n: int
    notify_p50_ms: float
    notify_p99_ms: float
    notify_n: int
    flushes_per_s: float
    flush_p50_ms: float  # one flush, first statement to commit
    flush_p99_ms: float


def _reader(url: str, done: Any, out: mp.Queue) -> None:
    """Another process, another connection: poll the forming 5m candles (the table holds this
    run's only) and record when each (pair, bucket) tick count was first seen."""
    import psycopg

    seen: dict[tuple[str, int], int] = {}
    obs: list[tuple[str, int, int, float]] = []
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.cursor()
        while not done.is_set():
            cur.execute(
                "SELECT pair, (extract(epoch FROM bucket) * 1000)::int8, ticks FROM candles WHERE timeframe = '5m'"
            )
            now = time.time()
            for pair, bucket, n in cur.fetchall():
                if n > seen.get((pair, bucket), 0):
                    seen[(pair, bucket)] = n
                    obs.append((pair, bucket, n, now))
            time.sleep(0.002)
    out.put(obs)


def _listener(url: str, done: Any, out: mp.Queue) -> None:
    """Another process: LISTEN for closed candles and record when each notice arrived."""
    import psycopg

    got: list[tuple[str, str, int, float]] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        out.put("listening")
        while not done.is_set():
            for n in conn.notifies(timeout=0.2):
                notice = decode_notice(n.payload)
                got.append((notice.pair, notice.timeframe, notice.bucket_ms, time.time()))
    out.put(got)


def _latency_run(url: str, interval_s: float, seconds: float, rate: float) -> LatencyResult:
    """Ticks stamped with the wall clock shifted so that a 15m boundary (and so a 5m one) falls
    in the middle of the run: every pair's 5m and 15m candles close while it is measured."""
    settings = load_settings(database_url=url, forming_interval_s=interval_s)
    _truncate(url)
    flush_s: list[float] = []
    writer = Writer.from_settings(settings, url=url, on_flush=lambda st: flush_s.append(st.seconds))
    flusher = WriterThread(writer).start()
    pipeline = Pipeline(settings, writer)
    q: queue.SimpleQueue = queue.SimpleQueue()
    entered: dict[tuple[str, int, int], float] = {}  # (pair, 5m bucket, nth tick) -> time it entered
    stop = threading.Event()
    grace_ms = settings.close_grace_ms

    ctx = mp.get_context("spawn")
    results: mp.Queue = ctx.Queue()
    notices: mp.Queue = ctx.Queue()
    done = ctx.Event()
    reader = ctx.Process(target=_reader, args=(url, done, results))
    listener = ctx.Process(target=_listener, args=(url, done, notices))
    reader.start()
    listener.start()
    assert notices.get(timeout=30) == "listening"
    time.sleep(1.0)  # let the reader connect
    boundary_wall_ms = int((time.time() + seconds / 2) * 1000) - grace_ms  # closes mid-run
    shift_ms = (900_000 - boundary_wall_ms % 900_000) % 900_000  # market time = wall + shift
    warm_until = time.time() + WARM_UP_S

    def produce() -> None:
        rng = np.random.default_rng(3)
        counts: dict[tuple[str, int], int] = {}
        last_t = dict.fromkeys(PAIRS, 0)
        price = dict.fromkeys(PAIRS, 1.1)
        t_start = time.time()
        i = 0
        while not stop.is_set():
            due = t_start + i / rate
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            pair = PAIRS[int(rng.integers(0, len(PAIRS)))]
            now = time.time()
            t = max(int(now * 1000) + shift_ms, last_t[pair] + 1)  # strictly increasing per pair
            last_t[pair] = t
            price[pair] = round(price[pair] + float(rng.integers(-1, 2)) * 0.0001, 5)
            key = (pair, t - t % 300_000)
            counts[key] = counts.get(key, 0) + 1
            entered[(*key, counts[key])] = now
            q.put((pair, repr(price[pair]), repr(round(price[pair] + 0.0002, 5)), str(t), t))
            i += 1

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    flushes0, t0 = writer.flushes, time.monotonic()
    end = time.time() + seconds
    while time.time() < end:
        batch = []
        try:
            batch.append(q.get(timeout=0.005))
            while len(batch) < 5000:
                batch.append(q.get_nowait())
        except queue.Empty:
            pass
        if batch:
            cols = list(zip(*batch, strict=True))
            pipeline.feed_batch(cols[0], cols[1], cols[2], cols[3], np.array(cols[4], dtype=np.int64))
        pipeline.tick(int(time.time() * 1000) + shift_ms)
    flushes_per_s = (writer.flushes - flushes0) / (time.monotonic() - t0)
    stop.set()
    producer.join()
    pipeline.finish()
    writer.wait_idle(10)
    time.sleep(0.5)  # the reader's last poll, the listener's last notices
    done.set()
    obs = results.get(timeout=60)
    got = notices.get(timeout=60)
    reader.join(10)
    listener.join(10)
    flusher.stop()
    writer.close()

    # A tick is visible at the first observation whose count includes it.
    lat = []
    obs.sort(key=lambda o: o[3])
    first_seen: dict[tuple[str, int, int], float] = {}
    prev: dict[tuple[str, int], int] = {}
    for pair, bucket, n, when in obs:
        for k in range(prev.get((pair, bucket), 0) + 1, n + 1):
            first_seen[(pair, bucket, k)] = when
        prev[(pair, bucket)] = max(prev.get((pair, bucket), 0), n)
    for key, t_in in entered.items():
        if key in first_seen and t_in >= warm_until:
            lat.append(first_seen[key] - t_in)
    vis = np.array(lat) * 1000 if lat else np.array([np.nan])
    # A close is due at bucket end + grace (market time); how long after that the notice came.
    due = [((b + tfs.length_ms(tf) + grace_ms - shift_ms) / 1000, when) for _, tf, b, when in got]
    note = np.array([(when - d) * 1000 for d, when in due]) if due else np.array([np.nan])
    return LatencyResult(
        float(np.percentile(vis, 50)), float(np.percentile(vis, 99)), len(lat),
        float(np.percentile(note, 50)), float(np.percentile(note, 99)), len(due), flushes_per_s,
        float(np.percentile(flush_s, 50)) * 1000, float(np.percentile(flush_s, 99)) * 1000,
    )  # fmt: skip


def bench_latency(url: str, quick: bool) -> None:
    seconds = 8.0 if quick else 20.0
    rate, quiet = 2000.0, 30.0
    new = Behaviour(f"new: forming_interval_s = {load_settings().forming_interval_s:g} (default)",
                    load_settings().forming_interval_s)  # fmt: skip
    print(f"\nforming candles at {rate:,.0f} ticks/s, {seconds:.0f} s per behaviour, the new default beside the old:")
    print("  tick -> a reader's SELECT sees it in the forming 5m candle (goal p99 < 150 ms);")
    print("  close -> NOTIFY received, after bucket end + grace (goal p99 < 500 ms)")
    for b in (new, OLD):
        r = _latency_run(url, b.forming_interval_s, seconds, rate)
        print(f"  {b.label}")
        line("    tick -> visible p50 / p99", f"{r.visible_p50_ms:,.0f} / {r.visible_p99_ms:,.0f} ms",
             f"{r.visible_n:,} ticks")  # fmt: skip
        line("    close -> NOTIFY p50 / p99", f"{r.notify_p50_ms:,.0f} / {r.notify_p99_ms:,.0f} ms",
             f"{r.notify_n:,} closes")  # fmt: skip
        line(f"    flushes/s at {rate:,.0f} ticks/s", f"{r.flushes_per_s:,.1f}",
             f"one flush p50 / p99 {r.flush_p50_ms:,.0f} / {r.flush_p99_ms:,.0f} ms")  # fmt: skip
    quiet_s = 5.0 if quick else 10.0
    print(f"\ndatabase load at IG's real rates: {quiet:,.0f} ticks/s over 28 pairs, {quiet_s:.0f} s per behaviour")
    for b in (new, OLD):
        r = _latency_run(url, b.forming_interval_s, quiet_s, quiet)
        line(f"  {b.label}: flushes/s", f"{r.flushes_per_s:,.1f}",
             f"tick -> visible p99 {r.visible_p99_ms:,.0f} ms")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.benchmarks.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, shorter runs")
    ap.add_argument("--only", choices=("aggregator", "writer", "latency"))
    ap.add_argument("--database-url", help="an existing TimescaleDB (default: a fresh database on the dev server)")
    args = ap.parse_args(argv)
    print(f"benchmarks ({'quick' if args.quick else 'full'}); python {sys.version.split()[0]}, numpy {np.__version__}")
    if args.only in (None, "aggregator"):
        bench_aggregator(args.quick)
    if args.only == "aggregator":
        return 0
    server = None
    url = args.database_url
    if url is None:
        server = devdb.server_url()
        url = devdb.fresh_database(server, "bench")
    try:
        migrate(url, load_settings())
        if args.only in (None, "writer"):
            bench_writer(url, args.quick)
        if args.only in (None, "latency"):
            bench_latency(url, args.quick)
    finally:
        if server is not None:
            devdb.drop_database(server, url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
