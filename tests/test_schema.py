"""The schema contract (docs/design.md §3 and §8) against a real TimescaleDB of either edition."""

from __future__ import annotations

import datetime as dt
import random
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors

from collector import devdb
from collector.config import load_settings
from collector.migrate import discover, migrate
from collector.pairs import PAIRS

UTC = dt.UTC
CANDLE_COLS = (
    "pair, timeframe, bucket, bid_open, bid_high, bid_low, bid_close, "
    "ask_open, ask_high, ask_low, ask_close, ticks, complete, source"
)


def _schema_fingerprint(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        """SELECT c.relname, c.relkind, a.attname, format_type(a.atttypid, a.atttypmod)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           WHERE n.nspname = 'public' ORDER BY 1, 3"""
    ).fetchall()


def _insert_15m(conn: psycopg.Connection, pair: str, start: dt.datetime, n: int, seed: int) -> None:
    rng = random.Random(seed)
    price = 1.1
    rows = []
    for i in range(n):
        b = start + dt.timedelta(minutes=15 * i)
        if b.weekday() == 5:  # leave Saturdays empty: gaps must not bend the rollups
            continue
        o = price
        hi, lo = o + rng.random() * 0.002, o - rng.random() * 0.002
        c = rng.uniform(lo, hi)
        price = c
        spread = 0.0001
        ask = (o + spread, hi + spread, lo + spread, c + spread)
        rows.append((pair, "15m", b, o, hi, lo, c, *ask, rng.randint(1, 90), True, "stream"))
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO candles ({CANDLE_COLS}) VALUES ({', '.join(['%s'] * 14)})", rows)


def _rollup_reference(conn: psycopg.Connection, bucket_expr: str) -> list[tuple]:
    return conn.execute(
        f"""SELECT pair, {bucket_expr} AS b,
                   (array_agg(bid_open ORDER BY bucket))[1], max(bid_high), min(bid_low),
                   (array_agg(bid_close ORDER BY bucket DESC))[1],
                   (array_agg(ask_open ORDER BY bucket))[1], max(ask_high), min(ask_low),
                   (array_agg(ask_close ORDER BY bucket DESC))[1], sum(ticks)
            FROM candles WHERE timeframe = '15m' GROUP BY 1, 2 ORDER BY 1, 2"""
    ).fetchall()


ROLLUPS = {
    "candles_1h": "time_bucket('1 hour', bucket)",
    "candles_4h": "time_bucket('4 hours', bucket)",
    # Independent of time_bucket: the FX day starts at 17:00 New York wall time, DST or not.
    "candles_1d": "(date_trunc('day', (bucket AT TIME ZONE 'America/New_York') + interval '7 hours') "
    "- interval '7 hours') AT TIME ZONE 'America/New_York'",
}


def _rollup_rows(conn: psycopg.Connection, view: str) -> list[tuple]:
    return conn.execute(
        f"""SELECT pair, bucket, bid_open, bid_high, bid_low, bid_close,
                   ask_open, ask_high, ask_low, ask_close, ticks FROM {view} ORDER BY 1, 2"""
    ).fetchall()


def test_migrations_apply_twice_without_change(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        before = _schema_fingerprint(conn)
        versions = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]
    report = migrate(db_url, load_settings())
    with psycopg.connect(db_url) as conn:
        assert _schema_fingerprint(conn) == before
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == versions
    assert report.applied == []
    assert len(report.already) == versions


def test_every_migration_version_is_recorded_once(db_url: str, tsdb) -> None:
    with psycopg.connect(db_url) as conn:
        recorded = [r[0] for r in conn.execute("SELECT file FROM schema_migrations ORDER BY version")]
    assert recorded == [m.path.name for m in discover(tsdb.edition)]


def test_ticks_and_candles_are_hypertables(db) -> None:
    names = {r[0] for r in db.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")}
    assert {"ticks", "candles"} <= names


def test_instruments_hold_the_28_pairs_with_pip_sizes(db) -> None:
    rows = dict(db.execute("SELECT pair, pip_size FROM instruments").fetchall())
    assert sorted(rows) == sorted(PAIRS)
    assert rows["USDJPY"] == 0.01
    assert rows["EURUSD"] == 0.0001


def test_candles_mid_is_the_field_by_field_average_of_bid_and_ask(db) -> None:
    b = dt.datetime(2026, 11, 18, 10, 0, tzinfo=UTC)
    db.execute(
        f"INSERT INTO candles ({CANDLE_COLS}) VALUES "
        "('EURUSD','5m',%s,1.1,1.3,1.0,1.2,1.1002,1.3002,1.0002,1.2002,7,true,'stream')",
        (b,),
    )
    row = db.execute("SELECT open, high, low, close, ticks, complete, source FROM candles_mid").fetchone()
    assert row == pytest.approx((1.1001, 1.3001, 1.0001, 1.2001, 7, True, "stream"))


def test_duplicate_tick_rows_are_refused_by_the_unique_key(db) -> None:
    t = dt.datetime(2026, 11, 18, 10, 0, tzinfo=UTC)
    db.execute("INSERT INTO ticks (time, pair, bid, ask) VALUES (%s, 'EURUSD', 1.1, 1.1001)", (t,))
    n = db.execute(
        "INSERT INTO ticks (time, pair, bid, ask) VALUES (%s, 'EURUSD', 1.1, 1.1001) ON CONFLICT DO NOTHING",
        (t,),
    ).rowcount
    db.execute("INSERT INTO ticks (time, pair, bid, ask) VALUES (%s, 'EURUSD', 1.1, 1.1002)", (t,))
    assert n == 0
    assert db.execute("SELECT count(*) FROM ticks").fetchone()[0] == 2


@pytest.mark.parametrize("view", sorted(ROLLUPS))
def test_rollup_equals_group_by_over_15m_candles(db, view: str) -> None:
    # Two weeks across a weekend and a DST-free stretch, two pairs.
    start = dt.datetime(2026, 11, 5, 0, 0, tzinfo=UTC)
    _insert_15m(db, "EURUSD", start, 14 * 96, seed=1)
    _insert_15m(db, "GBPJPY", start + dt.timedelta(hours=3, minutes=45), 9 * 96, seed=2)
    # A 5m candle must not leak into rollups built from 15m.
    db.execute(
        f"INSERT INTO candles ({CANDLE_COLS}) VALUES ('EURUSD','5m',%s,9,9,9,9,9,9,9,9,1,true,'stream')",
        (start,),
    )
    expected = _rollup_reference(db, ROLLUPS[view])
    assert _rollup_rows(db, view) == expected
    assert len(expected) > 10


def test_daily_bars_start_at_17_00_new_york(db) -> None:
    # 2026-11-18 is a Wednesday; New York is on EST (UTC-5), so the trading day starts 22:00 UTC.
    db.execute(
        f"INSERT INTO candles ({CANDLE_COLS}) VALUES "
        "('EURUSD','15m','2026-11-18 21:45Z',1,1,1,1,1,1,1,1,1,true,'stream'),"
        "('EURUSD','15m','2026-11-18 22:00Z',2,2,2,2,2,2,2,2,1,true,'stream')"
    )
    buckets = [r[0] for r in db.execute("SELECT bucket FROM candles_1d ORDER BY bucket")]
    assert buckets == [
        dt.datetime(2026, 11, 17, 22, 0, tzinfo=UTC),
        dt.datetime(2026, 11, 18, 22, 0, tzinfo=UTC),
    ]


@pytest.mark.parametrize(
    ("candle", "day_start"),
    [
        ("2026-03-08 20:45Z", "2026-03-07 22:00Z"),  # Sunday DST starts: 16:45 EDT is still the old day
        ("2026-03-08 21:00Z", "2026-03-08 21:00Z"),  # 17:00 EDT opens the new day
        ("2026-11-01 21:30Z", "2026-10-31 21:00Z"),  # Sunday DST ends: 16:30 EST is still the old day
        ("2026-11-01 22:00Z", "2026-11-01 22:00Z"),  # 17:00 EST
    ],
)
def test_daily_bars_follow_new_york_across_dst_changes(db, candle: str, day_start: str) -> None:
    db.execute(
        f"INSERT INTO candles ({CANDLE_COLS}) VALUES ('EURUSD','15m',%s,1,1,1,1,1,1,1,1,1,true,'stream')",
        (candle,),
    )
    assert db.execute("SELECT bucket FROM candles_1d").fetchone()[0] == dt.datetime.fromisoformat(day_start)


def test_rollups_are_real_time_continuous_aggregates_with_policies(db, full_edition) -> None:
    caggs = dict(
        db.execute("SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates").fetchall()
    )
    assert caggs == {"candles_1h": False, "candles_4h": False, "candles_1d": False}
    # The jobs view names a continuous aggregate's policy by the aggregate's own name.
    jobs = {
        r[0]
        for r in db.execute(
            "SELECT hypertable_name FROM timescaledb_information.jobs "
            "WHERE proc_name = 'policy_refresh_continuous_aggregate'"
        )
    }
    assert jobs == {"candles_1h", "candles_4h", "candles_1d"}


@pytest.fixture
def isolated_db(pg_server_url: str) -> Iterator[psycopg.Connection]:
    """A database of its own: refreshing rollups moves their watermark, which TRUNCATE does
    not undo, so a test that materializes must not share the session database."""
    url = devdb.fresh_database(pg_server_url, "refresh")
    migrate(url, load_settings())
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            yield conn
    finally:
        devdb.drop_database(pg_server_url, url)


def test_rollup_after_refresh_still_equals_group_by(isolated_db, full_edition) -> None:
    db = isolated_db
    start = dt.datetime(2026, 11, 5, 0, 0, tzinfo=UTC)
    _insert_15m(db, "EURUSD", start, 10 * 96, seed=3)
    for view in ROLLUPS:
        db.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, '2026-11-20')")
    # A late correction to an already materialized bucket is visible after the next refresh.
    db.execute("UPDATE candles SET bid_high = bid_high + 1 WHERE bucket = '2026-11-06 10:15Z'")
    for view in ROLLUPS:
        db.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, '2026-11-20')")
    for view, expr in ROLLUPS.items():
        assert _rollup_rows(db, view) == _rollup_reference(db, expr), view


def test_ticks_have_compression_and_retention_policies(db, full_edition) -> None:
    procs = {
        r[0] for r in db.execute("SELECT proc_name FROM timescaledb_information.jobs WHERE hypertable_name = 'ticks'")
    }
    assert procs == {"policy_compression", "policy_retention"}


def test_rollups_are_plain_views_on_the_apache_edition(db, tsdb) -> None:
    if tsdb.edition != "apache":
        pytest.skip("the Apache-edition fallback is tested where the Apache edition runs")
    kinds = dict(
        db.execute(
            "SELECT relname, relkind FROM pg_class WHERE relname IN ('candles_1h','candles_4h','candles_1d')"
        ).fetchall()
    )
    assert kinds == {"candles_1h": "v", "candles_4h": "v", "candles_1d": "v"}


# --- roles ----------------------------------------------------------------------------------


def _as_role(db_url: str, role: str) -> psycopg.Connection:
    conn = psycopg.connect(db_url, autocommit=True)
    conn.execute(f"SET ROLE {role}")
    return conn


WRITES = {
    "candles": f"INSERT INTO candles ({CANDLE_COLS}) VALUES "
    "('EURUSD','5m','2026-11-18 10:00Z',1,1,1,1,1,1,1,1,1,true,'stream')",
    "ticks": "INSERT INTO ticks (time, pair, bid, ask) VALUES ('2026-11-18 10:00Z','EURUSD',1,1)",
    "instruments": "UPDATE instruments SET enabled = false",
    "rest_allowance": "INSERT INTO rest_allowance (remaining, total, expires_at, updated_by) VALUES (1, 1, now(), 'x')",
    "rest_spend": "INSERT INTO rest_spend (spender, points, purpose) VALUES ('x', 1, 'test')",
    "candle_repairs": "INSERT INTO candle_repairs (pair, timeframe, bucket, reason) "
    "VALUES ('EURUSD', '5m', now(), 'x')",
}


@pytest.mark.parametrize("table", sorted(WRITES))
def test_grafana_role_cannot_write(db, db_url: str, table: str) -> None:
    with _as_role(db_url, "grafana_reader") as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(WRITES[table])


@pytest.mark.parametrize("view", ["candles", "candles_mid", "candles_1h", "candles_4h", "candles_1d", "ticks"])
def test_grafana_role_can_read_market_data(db, db_url: str, view: str) -> None:
    with _as_role(db_url, "grafana_reader") as conn:
        conn.execute(f"SELECT * FROM {view} LIMIT 1").fetchall()


@pytest.mark.parametrize("table", ["candles", "ticks", "candle_repairs"])
def test_bot_role_cannot_write_market_data(db, db_url: str, table: str) -> None:
    with _as_role(db_url, "trading_bot") as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(WRITES[table])


def test_collector_role_writes_ticks_and_candles(db, db_url: str) -> None:
    with _as_role(db_url, "collector") as conn:
        conn.execute(WRITES["ticks"])
        conn.execute(WRITES["candles"])
    assert db.execute("SELECT count(*) FROM candles").fetchone()[0] == 1


def test_bot_stores_rest_candles_only_through_the_function(db, db_url: str) -> None:
    rows = (
        '[{"pair":"EURUSD","timeframe":"15m","bucket":"2026-11-18T10:00:00Z","bid_open":1.1,"bid_high":1.2,'
        '"bid_low":1.0,"bid_close":1.15,"ask_open":1.1001,"ask_high":1.2001,"ask_low":1.0001,'
        '"ask_close":1.1501,"ticks":42}]'
    )
    with _as_role(db_url, "trading_bot") as conn:
        assert conn.execute("SELECT store_rest_candles(%s::jsonb)", (rows,)).fetchone()[0] == 1
    assert db.execute("SELECT source, complete, ticks FROM candles").fetchone() == ("rest", True, 42)


def test_rest_candles_never_overwrite_a_complete_stream_candle(db) -> None:
    db.execute(
        f"INSERT INTO candles ({CANDLE_COLS}) VALUES "
        "('EURUSD','15m','2026-11-18 10:00Z',1.1,1.2,1.0,1.15,1.1,1.2,1.0,1.15,99,true,'stream')"
    )
    rows = (
        '[{"pair":"EURUSD","timeframe":"15m","bucket":"2026-11-18T10:00:00Z","bid_open":2,"bid_high":2,'
        '"bid_low":2,"bid_close":2,"ask_open":2,"ask_high":2,"ask_low":2,"ask_close":2,"ticks":1}]'
    )
    assert db.execute("SELECT store_rest_candles(%s::jsonb)", (rows,)).fetchone()[0] == 0
    assert db.execute("SELECT source, ticks FROM candles").fetchone() == ("stream", 99)


def test_rest_candles_replace_an_incomplete_stream_candle(db) -> None:
    db.execute(
        f"INSERT INTO candles ({CANDLE_COLS}) VALUES "
        "('EURUSD','15m','2026-11-18 10:00Z',1.1,1.2,1.0,1.15,1.1,1.2,1.0,1.15,5,false,'stream')"
    )
    rows = (
        '[{"pair":"EURUSD","timeframe":"15m","bucket":"2026-11-18T10:00:00Z","bid_open":2,"bid_high":2,'
        '"bid_low":2,"bid_close":2,"ask_open":2,"ask_high":2,"ask_low":2,"ask_close":2,"ticks":80}]'
    )
    assert db.execute("SELECT store_rest_candles(%s::jsonb)", (rows,)).fetchone()[0] == 1
    assert db.execute("SELECT source, complete, ticks FROM candles").fetchone() == ("rest", True, 80)


def test_migrate_command_reports_edition_and_what_it_created(pg_server_url: str) -> None:
    url = devdb.fresh_database(pg_server_url, "clitest")
    try:
        out = subprocess.run(
            [sys.executable, "-m", "collector.cli", "migrate", "--database-url", url],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert out.startswith("TimescaleDB ")
        assert "applied  003_market_data.sql" in out
        assert "candles_1h, candles_4h, candles_1d as" in out
        again = subprocess.run(
            [sys.executable, "-m", "collector.cli", "migrate", "--database-url", url],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "schema up to date" in again
    finally:
        devdb.drop_database(pg_server_url, url)
