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

import statistics
import sys

import numpy as np
import pandas as pd
import psycopg

from collector.pairs import PAIRS
from tests.benchmarks.bench_indicators import (
    TIMEFRAMES,
    bench_database,
    fetch_mid_bars,
    parse_args,
    print_figures,
    print_verdict,
    timed,
)
from tests.bot.techkit import TECHNICAL_COLUMNS, WARMUP, reference_technicals
from trading_bot.market_data import TECHNICAL_COLUMNS as BOT_COLUMNS
from trading_bot.market_data import MarketData

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
    """The same candles fetched raw (newest 550 per series), then every column with TA-Lib."""
    return {key: reference_technicals(bars, BARS) for key, bars in fetch_mid_bars(conn, BARS + WARMUP)}


def check_equal(
    sql_frames: dict[tuple[str, str], pd.DataFrame], ref_frames: dict[tuple[str, str], pd.DataFrame]
) -> None:
    for key, ref in ref_frames.items():
        got = sql_frames[key]
        assert list(got.index) == list(ref.index), key
        for col in TECHNICAL_COLUMNS:
            np.testing.assert_allclose(got[col].to_numpy(), ref[col].to_numpy(), rtol=0, atol=1e-9, err_msg=col)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__)
    assert tuple(BOT_COLUMNS) == TECHNICAL_COLUMNS
    with bench_database(args.history_days) as (conn, market):
        check_equal(sql_bot_api(market), talib_baseline(conn))
        assert len(sql_one_query(conn)) == len(PAIRS) * len(TIMEFRAMES) * BARS
        print(f"checked: SQL and TA-Lib agree to 1e-9, NULLs included, on 56 series x {BARS} bars")
        results = {
            ONE_QUERY: timed(lambda: sql_one_query(conn), args.runs),
            SERVER_ONLY: timed(lambda: sql_server_only(conn), args.runs),
            BOT_API: timed(lambda: sql_bot_api(market), args.runs),
            BASELINE: timed(lambda: talib_baseline(conn), args.runs),
        }

    print_figures(results, BASELINE, "TA-Lib")
    server = statistics.median(results[SERVER_ONLY])
    print(f"\nthe database's share: {server:.1f} ms median; the rest is the transfer of 16,800 rows")
    return print_verdict("all 56 series in one query", statistics.median(results[ONE_QUERY]), GOAL_MS, args.runs)


if __name__ == "__main__":
    sys.exit(main())
