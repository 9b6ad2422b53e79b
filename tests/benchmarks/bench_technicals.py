"""Benchmark: technicals() for all 28 pairs x 5m and 15m (300 bars each) vs pandas + TA-Lib.

    .venv/bin/python -m tests.benchmarks.bench_technicals [--runs 15] [--history-days 30]

It creates its own fresh database (collector.devdb), migrates it, loads 28 pairs x {5m, 15m}
of market-hours candles ending now (bench_indicators' loader), and times:

  sql, one query     technicals() for the 56 series in one statement (LATERAL), rows fetched
  sql, server only   the same statement as count(*): the database's share, without the transfer
  sql, bot API       MarketData.technicals() per series from a pool: 56 queries -> 56 DataFrames
  TA-Lib baseline    the user's alternative: fetch the same candles (300 + 250 warm-up per series,
                     bid/ask) in one query, then mid prices and every column with pandas + TA-Lib

and prints median and best of each and the ratio against the baseline, and whether issue 16's
goal (all 56 series under 250 ms in one query) is met. Both sides are checked equal to 1e-9,
NULLs included, first, so the figures compare the same work. The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time

import numpy as np
import pandas as pd
import psycopg

from collector import devdb
from collector.config import load_settings
from collector.migrate import migrate
from collector.pairs import PAIRS
from tests.benchmarks.bench_indicators import TIMEFRAMES, drop, load, quiet_jobs, timed
from tests.bot.botkit import PRICE_COLUMNS
from tests.bot.techkit import TECHNICAL_COLUMNS, WARMUP, reference_technicals
from trading_bot.market_data import TECHNICAL_COLUMNS as BOT_COLUMNS
from trading_bot.market_data import MarketData, open_pool

BARS = 300
GOAL_MS = 250.0
ONE_QUERY = "sql, one query (56 series)"
BOT_API = "sql, bot API (56 DataFrames)"
SERVER_ONLY = "sql, one query, server only (count)"
BASELINE = "TA-Lib baseline (fetch + compute)"


def sql_one_query(conn: psycopg.Connection) -> list[tuple]:
    with conn.cursor(binary=True) as cur:
        return cur.execute(
            "SELECT p, tf, t.* FROM unnest(%s::text[]) AS p CROSS JOIN unnest(%s::text[]) AS tf "
            "CROSS JOIN LATERAL technicals(p, tf, %s) AS t",
            (list(PAIRS), list(TIMEFRAMES), BARS),
        ).fetchall()


def sql_server_only(conn: psycopg.Connection) -> int:
    """The same statement counted on the server: what the database spends, without the transfer."""
    return conn.execute(
        "SELECT count(*) FROM unnest(%s::text[]) AS p CROSS JOIN unnest(%s::text[]) AS tf "
        "CROSS JOIN LATERAL technicals(p, tf, %s) AS t",
        (list(PAIRS), list(TIMEFRAMES), BARS),
    ).fetchone()[0]


def sql_bot_api(market: MarketData) -> dict[tuple[str, str], pd.DataFrame]:
    return {(p, tf): market.technicals(p, tf, BARS) for p in PAIRS for tf in TIMEFRAMES}


def talib_baseline(conn: psycopg.Connection) -> dict[tuple[str, str], pd.DataFrame]:
    """The same candles fetched raw (bid/ask, complete only, newest 550 per series), then TA-Lib."""
    with conn.cursor(binary=True) as cur:
        rows = cur.execute(
            f"SELECT p, tf, c.bucket, {', '.join('c.' + c for c in PRICE_COLUMNS)}, c.ticks "
            "FROM unnest(%s::text[]) AS p CROSS JOIN unnest(%s::text[]) AS tf "
            "CROSS JOIN LATERAL (SELECT * FROM candles WHERE pair = p AND timeframe = tf AND complete "
            "                    ORDER BY bucket DESC LIMIT %s) AS c",
            (list(PAIRS), list(TIMEFRAMES), BARS + WARMUP),
        ).fetchall()
    raw = pd.DataFrame(rows, columns=["pair", "timeframe", "bucket", *PRICE_COLUMNS, "ticks"])
    out = {}
    for (pair, tf), g in raw.groupby(["pair", "timeframe"], sort=False):
        g = g.sort_values("bucket")
        bars = pd.DataFrame(index=pd.DatetimeIndex(g["bucket"], name="bucket"))
        for f in ("open", "high", "low", "close"):
            bars[f] = (g[f"bid_{f}"].to_numpy() + g[f"ask_{f}"].to_numpy()) / 2
        bars["ticks"] = g["ticks"].to_numpy(dtype=float)
        out[(pair, tf)] = reference_technicals(bars, BARS)
    return out


def check_equal(
    sql_frames: dict[tuple[str, str], pd.DataFrame], ref_frames: dict[tuple[str, str], pd.DataFrame]
) -> None:
    for key, ref in ref_frames.items():
        got = sql_frames[key]
        assert list(got.index) == list(ref.index), key
        for col in TECHNICAL_COLUMNS:
            np.testing.assert_allclose(got[col].to_numpy(), ref[col].to_numpy(), rtol=0, atol=1e-9, err_msg=col)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--history-days", type=int, default=30, help="calendar days of candles per series (default 30)")
    args = ap.parse_args(argv)
    assert tuple(BOT_COLUMNS) == TECHNICAL_COLUMNS

    server = devdb.server_url()
    url = devdb.fresh_database(server, "bench")
    try:
        report = migrate(url, load_settings())
        with psycopg.connect(url, autocommit=True) as conn:
            quiet_jobs(conn)
            t0 = time.perf_counter()
            rows = load(conn, args.history_days)
            print(f"{report.info.describe()}")
            took = time.perf_counter() - t0
            print(f"loaded {rows:,} candles (28 pairs x 5m/15m, {args.history_days} days) in {took:.1f}s")
            conn.execute("SET TIME ZONE 'UTC'")
            pool = open_pool(url, max_size=2, application_name="bench")
            try:
                market = MarketData(pool)
                check_equal(sql_bot_api(market), talib_baseline(conn))
                assert len(sql_one_query(conn)) == len(PAIRS) * len(TIMEFRAMES) * BARS
                print(f"checked: SQL and TA-Lib agree to 1e-9, NULLs included, on 56 series x {BARS} bars")
                results = {
                    ONE_QUERY: timed(lambda: sql_one_query(conn), args.runs),
                    SERVER_ONLY: timed(lambda: sql_server_only(conn), args.runs),
                    BOT_API: timed(lambda: sql_bot_api(market), args.runs),
                    BASELINE: timed(lambda: talib_baseline(conn), args.runs),
                }
            finally:
                pool.close()
    finally:
        drop(server, url)

    base = statistics.median(results[BASELINE])
    print(f"\n{'28 pairs x 5m/15m, 300 bars each':<36} {'median ms':>10} {'best ms':>9} {'vs TA-Lib':>10}")
    for name, ms in results.items():
        med = statistics.median(ms)
        print(f"{name:<36} {med:>10.1f} {min(ms):>9.1f} {base / med:>9.2f}x")
    one = statistics.median(results[ONE_QUERY])
    verdict = "met" if one < GOAL_MS else "NOT met"
    print(f"\ngoal: all 56 series under {GOAL_MS:.0f} ms in one query: {verdict} ({one:.1f} ms median)")
    print(f"run at {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}, {args.runs} runs each after one warm-up")
    return 0 if one < GOAL_MS else 1


if __name__ == "__main__":
    sys.exit(main())
