"""Every SQL query of the Grafana dashboards runs, as Grafana's read-only role, against real data.

Grafana's macros ($__timeFilter, $__timeFrom(), ...) and the template variables ($pair,
$timeframe) are expanded for a concrete time range, exactly once per timeframe choice, and the
query is run after `SET ROLE grafana_reader`, the role the provisioned data source logs in as.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from collections.abc import Iterator

import psycopg
import pytest
from deployfiles import Query, dashboards, expand_grafana_sql, sql_queries, unexpanded

TIMEFRAMES = ("5m", "15m", "1h", "4h", "1d")
PAIR = "EURUSD"
NOW = dt.datetime.now(dt.UTC)
RANGE = (NOW - dt.timedelta(days=6), NOW)
BARS_15M = 6 * 96  # six days of 15m candles: MA-200 and the cloud exist for the newest bars
BARS_5M = 600

QUERIES = [q for name, board in dashboards().items() for q in sql_queries(name, board)]
CANDLE_QUERY = next(q for q in QUERIES if q.panel_type == "candlestick")
TICKS_QUERY = next(q for q in QUERIES if q.where.startswith("fx-candles: Ticks per bar"))
NEWEST_QUERY = next(q for q in QUERIES if "Newest candle per pair" in q.where)
TECHNICAL_QUERIES = [q for q in QUERIES if "FROM technicals(" in q.text]
PROFILE_QUERY = next(q for q in QUERIES if "volume_profile(" in q.text)

# Objects other migrations add; a query that needs one that is not migrated yet is skipped, not failed.
HAS_INDICATORS = "SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'indicators')"
OPTIONAL_OBJECTS = {
    r"\bindicators\s*\(": (HAS_INDICATORS, "indicators()"),
    r"\bFROM\s+signals\b": ("SELECT to_regclass('public.signals') IS NOT NULL", "the signals table"),
    r"\btechnicals\s*\(": ("SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'technicals')", "technicals()"),
    r"\bvolume_profile\s*\(": (
        "SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'volume_profile')",
        "volume_profile()",
    ),
}


def _candle_rows(timeframe: str, n: int, seed: int) -> Iterator[tuple]:
    step = dt.timedelta(minutes=int(timeframe.removesuffix("m")))
    newest = dt.datetime.fromtimestamp(NOW.timestamp() // step.total_seconds() * step.total_seconds(), dt.UTC)
    rng = random.Random(seed)
    price = 1.08
    for i in range(n):
        bucket = newest - step * (n - 1 - i)
        o = price
        hi, lo = o + rng.random() * 0.001, o - rng.random() * 0.001
        price = rng.uniform(lo, hi)
        spread = 0.00008
        forming = i == n - 1
        source = "rest" if i % 97 == 5 else "stream"
        bid = (o, hi, lo, price)
        ask = tuple(v + spread for v in bid)
        yield (PAIR, timeframe, bucket, *bid, *ask, rng.randint(20, 400), not forming, source)


@pytest.fixture
def market_data(db: psycopg.Connection) -> psycopg.Connection:
    """A few days of 5m and 15m candles for one pair (so rollups have rows), repairs, REST spend."""
    cols = (
        "pair, timeframe, bucket, bid_open, bid_high, bid_low, bid_close, ask_open, ask_high, ask_low,"
        " ask_close, ticks, complete, source"
    )
    with db.cursor() as cur, cur.copy(f"COPY candles ({cols}) FROM STDIN") as copy:
        for row in [*_candle_rows("15m", BARS_15M, 1), *_candle_rows("5m", BARS_5M, 2)]:
            copy.write_row(row)
    db.execute(
        """INSERT INTO candle_repairs (pair, timeframe, bucket, reason, attempts, resolved_at, resolution)
           VALUES (%(p)s, '15m', %(t)s - interval '1 day', 'outage', 1, NULL, NULL),
                  (%(p)s, '5m', %(t)s - interval '2 days', 'restart', 3, %(t)s, 'unrecoverable')""",
        {"p": PAIR, "t": NOW},
    )
    db.execute(
        """INSERT INTO rest_allowance (remaining, total, expires_at, updated_by)
           VALUES (8200, 10000, %s, 'collector')""",
        (NOW + dt.timedelta(days=3),),
    )
    db.execute(
        """INSERT INTO rest_spend (time, spender, pair, resolution, points, purpose)
           VALUES (%s, 'collector', %s, 'MINUTE_15', 12, 'repair')""",
        (NOW - dt.timedelta(hours=5), PAIR),
    )
    return db


def run_as_grafana(db_url: str, query: Query, timeframe: str) -> list[tuple]:
    sql = expand_grafana_sql(query.text, *RANGE, {"pair": PAIR, "timeframe": timeframe})
    assert unexpanded(sql) == [], f"{query.where}: Grafana would leave {unexpanded(sql)} in the SQL"
    with psycopg.connect(db_url, autocommit=True) as conn:
        for pattern, (probe, what) in OPTIONAL_OBJECTS.items():
            if re.search(pattern, sql, re.I) and not conn.execute(probe).fetchone()[0]:
                pytest.skip(f"{query.where} needs {what}, which no migration in sql/ creates yet")
        conn.execute("SET ROLE grafana_reader")
        conn.execute("SET statement_timeout = '10s'")
        return conn.execute(sql).fetchall()


def test_dashboards_hold_the_sql_panels_this_suite_checks() -> None:
    assert len(QUERIES) >= 8
    assert "indicators(" in CANDLE_QUERY.text


@pytest.mark.parametrize("query", QUERIES, ids=[q.where for q in QUERIES])
def test_query_runs_as_grafana_reader_for_every_timeframe(market_data, db_url: str, query: Query) -> None:
    for timeframe in TIMEFRAMES if "$timeframe" in query.text else TIMEFRAMES[:1]:
        run_as_grafana(db_url, query, timeframe)


@pytest.mark.parametrize("timeframe", TIMEFRAMES)
def test_candle_panel_returns_bars_with_ohlc(market_data, db_url: str, timeframe: str) -> None:
    rows = run_as_grafana(db_url, CANDLE_QUERY, timeframe)
    assert rows, f"no candles for {timeframe}"
    assert all(low <= min(o, c) <= max(o, c) <= high for _, o, high, low, c, *_ in rows)


def test_candle_panel_draws_ma200_and_the_cloud_once_history_suffices(market_data, db_url: str) -> None:
    rows = run_as_grafana(db_url, CANDLE_QUERY, "15m")
    newest = rows[-1]
    ma_200, senkou_a, senkou_b = newest[5], newest[8], newest[9]
    assert None not in (ma_200, senkou_a, senkou_b)


def test_candle_panel_includes_the_forming_bar(market_data, db_url: str) -> None:
    rows = run_as_grafana(db_url, CANDLE_QUERY, "5m")
    assert rows[-1][0] > NOW - dt.timedelta(minutes=5)


def test_candle_panel_shows_only_the_selected_time_range(market_data, db_url: str) -> None:
    rows = run_as_grafana(db_url, CANDLE_QUERY, "15m")
    assert RANGE[0] <= rows[0][0] and rows[-1][0] <= RANGE[1]


@pytest.mark.parametrize("timeframe", TIMEFRAMES)
def test_tick_count_panel_returns_bars(market_data, db_url: str, timeframe: str) -> None:
    rows = run_as_grafana(db_url, TICKS_QUERY, timeframe)
    assert rows and all(ticks > 0 for _, ticks in rows)


def test_rolled_up_tick_counts_add_up_the_15m_bars(market_data, db_url: str) -> None:
    total_15m = sum(t for _, t in run_as_grafana(db_url, TICKS_QUERY, "15m"))
    total_1h = sum(t for _, t in run_as_grafana(db_url, TICKS_QUERY, "1h"))
    assert 0 <= total_15m - total_1h <= 3 * 400  # equal but for the partial hour at the range's start


def test_newest_candle_table_lists_every_enabled_pair_and_timeframe(market_data, db_url: str) -> None:
    rows = run_as_grafana(db_url, NEWEST_QUERY, "15m")
    assert len(rows) == 28 * 2
    assert {(r[0], r[1]) for r in rows if r[2] is not None} == {(PAIR, "5m"), (PAIR, "15m")}


def test_indicator_panels_cover_the_bots_whole_indicator_set() -> None:
    columns = " ".join(q.text for q in TECHNICAL_QUERIES)
    for col in ("adx_14", "plus_di_14", "minus_di_14", "aroon_up_25", "aroon_down_25", "ultosc", "obv_z_50", "ma_21"):
        assert col in columns, f"no panel charts {col}"


@pytest.mark.parametrize("query", TECHNICAL_QUERIES, ids=[q.where for q in TECHNICAL_QUERIES])
def test_indicator_panel_draws_every_series_on_the_newest_15m_bar(market_data, db_url: str, query: Query) -> None:
    rows = run_as_grafana(db_url, query, "15m")
    assert RANGE[0] <= rows[0][0] and rows[-1][0] > NOW - dt.timedelta(minutes=15), "the range, forming bar included"
    assert None not in rows[-1], f"{query.where}: a series is missing on the newest bar"


def test_volume_profile_panel_has_24_bins_highest_first_one_poc_and_every_tick(
    market_data, db_url: str, db: psycopg.Connection
) -> None:
    rows = run_as_grafana(db_url, PROFILE_QUERY, "15m")
    (ticks,) = db.execute(
        "SELECT sum(ticks) FROM (SELECT ticks FROM candles WHERE pair = %s AND timeframe = '15m' AND complete"
        " ORDER BY bucket DESC LIMIT 90) c",
        (PAIR,),
    ).fetchone()

    assert len(rows) == 24
    prices = [float(label.removesuffix(" POC")) for label, _, _ in rows]
    assert prices == sorted(prices, reverse=True)
    assert sum(label.endswith(" POC") for label, _, _ in rows) == 1
    assert sum(a + b for _, a, b in rows) == pytest.approx(ticks)
