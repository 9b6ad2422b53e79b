"""Freshness fallback: with the collector down the bot buys only the missing candles, once.

The REST side is the IG simulator (collector/simulator) spoken to by the real trading-ig
through `collector.ig_rest.RestClient`, with the shared budget in the session database.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pandas as pd
import psycopg
import pytest
from psycopg_pool import ConnectionPool

from collector.ig_rest import RestClient
from collector.simulator.server import Simulator
from trading_bot import market_hours as mh
from trading_bot.config import load_bot_settings
from trading_bot.freshness import FreshnessGuard, find_gap

from .botkit import insert_candles, market_series, ms, utc

FIVE_MIN = 300_000
WEDNESDAY_NOON = dt.datetime(2025, 1, 8, 12, 0, tzinfo=dt.UTC)


def test_a_series_whose_newest_bar_just_closed_is_fresh() -> None:
    now = ms(WEDNESDAY_NOON) + 90_000  # 12:01:30; the 11:55 bar closed 90 s ago

    assert find_gap("EURUSD", "5m", ms(WEDNESDAY_NOON) - FIVE_MIN, now, margin_ms=60_000, max_bars=300) is None


def test_at_the_weekend_friday_evening_s_last_bar_is_fresh() -> None:
    saturday = ms(dt.datetime(2025, 1, 11, 15, 0, tzinfo=dt.UTC))
    last_before_close = ms(dt.datetime(2025, 1, 10, 21, 55, tzinfo=dt.UTC))

    assert find_gap("EURUSD", "5m", last_before_close, saturday, margin_ms=120_000, max_bars=300) is None


def test_a_stale_series_misses_exactly_the_market_buckets_after_its_newest_bar() -> None:
    monday = ms(dt.datetime(2025, 1, 13, 0, 2, tzinfo=dt.UTC))
    friday_1900 = ms(dt.datetime(2025, 1, 10, 19, 0, tzinfo=dt.UTC))

    gap = find_gap("EURUSD", "5m", friday_1900, monday, margin_ms=60_000, max_bars=300)

    assert gap is not None
    assert (utc(gap.start_ms), utc(gap.end_ms)) == (
        dt.datetime(2025, 1, 10, 19, 5, tzinfo=dt.UTC),
        dt.datetime(2025, 1, 12, 23, 55, tzinfo=dt.UTC),
    )
    assert gap.bars() == 35 + 24  # Friday 19:05-21:55 and Sunday 22:00-23:55


def test_a_long_outage_is_filled_only_for_the_newest_bars_the_bot_needs() -> None:
    now = ms(WEDNESDAY_NOON) + 90_000

    gap = find_gap("EURUSD", "5m", ms(WEDNESDAY_NOON) - 30 * 86_400_000, now, margin_ms=60_000, max_bars=100)

    assert gap is not None and gap.bars() == 100 and utc(gap.end_ms) == WEDNESDAY_NOON - dt.timedelta(minutes=5)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    # A Wednesday, so every bucket of the last hours is a market bucket whatever day tests run.
    with Simulator(
        pairs=("EURUSD",), start_ms=ms(WEDNESDAY_NOON), ticks_per_second=20.0, seed=5,
        history_ms=3 * 3_600_000, history_ticks=40_000,
    ) as s:  # fmt: skip
        yield s


def spent(db: psycopg.Connection) -> int:
    return db.execute("SELECT coalesce(sum(points), 0) FROM rest_spend WHERE spender = 'trading_bot'").fetchone()[0]


def test_the_bot_buys_only_the_missing_candles_and_never_twice(
    db: psycopg.Connection, db_url: str, pool: ConnectionPool, sim: Simulator
) -> None:
    # The collector stored 5m candles from 09:00 to 10:55, then went down; it is now 12:00 and a bit.
    stored = market_series(5, 24, start=WEDNESDAY_NOON - dt.timedelta(hours=3), quiet=0.0)
    insert_candles(db, "EURUSD", "5m", stored)
    newest = stored["bucket"].iloc[-1].to_pydatetime()
    assert newest == WEDNESDAY_NOON - dt.timedelta(hours=1, minutes=5)  # 10:55
    settings = load_bot_settings(
        database_url=db_url, ig_username=sim.username, ig_password=sim.password, ig_api_key=sim.api_key,
        ig_api_url=sim.url, bot_rest_reserve_points=500,
    )  # fmt: skip
    client = RestClient(settings, spender="trading_bot", reserve_points=500, now_ms=sim.now_ms)
    guard = FreshnessGuard(pool, lambda: client, margin_s=30, max_bars=300)
    served_before = sim.stats()["rest_candles_served"]

    now_ms = sim.now_ms()
    n = guard.ensure("EURUSD", "5m", ms(newest), now_ms)

    last_due = utc(mh.last_closed_bucket(now_ms, FIVE_MIN, 30_000))
    expected = list(pd.date_range(newest + dt.timedelta(minutes=5), last_due, freq="5min"))
    rows = db.execute(
        "SELECT bucket FROM candles WHERE pair = 'EURUSD' AND source = 'rest' AND complete ORDER BY bucket"
    ).fetchall()
    rest = [r[0] for r in rows]
    assert n == len(expected) >= 11  # 11:00 to 11:50 at least
    assert rest == [t.to_pydatetime() for t in expected]
    assert spent(db) == n
    assert sim.stats()["rest_candles_served"] - served_before == n

    # The next check, and a restarted bot's first check, find the series fresh: nothing is bought again.
    head = ms(rest[-1])
    assert guard.ensure("EURUSD", "5m", head, sim.now_ms()) == 0
    fresh_guard = FreshnessGuard(pool, lambda: client, margin_s=30, max_bars=300)
    assert fresh_guard.ensure("EURUSD", "5m", head, sim.now_ms()) == 0
    assert spent(db) == n
    assert sim.stats()["rest_candles_served"] - served_before == n
    client.logout()


def test_a_refused_budget_spends_nothing_and_stores_nothing(
    db: psycopg.Connection, db_url: str, pool: ConnectionPool, sim: Simulator
) -> None:
    settings = load_bot_settings(
        database_url=db_url, ig_username=sim.username, ig_password=sim.password, ig_api_key=sim.api_key,
        ig_api_url=sim.url,
    )  # fmt: skip
    db.execute(
        "INSERT INTO rest_allowance (remaining, total, expires_at, updated_by) VALUES (400, 10000, %s, 'test')",
        (dt.datetime.now(dt.UTC) + dt.timedelta(days=3),),
    )
    client = RestClient(settings, spender="trading_bot", reserve_points=500, now_ms=sim.now_ms)
    guard = FreshnessGuard(pool, lambda: client, margin_s=30, max_bars=300)
    served_before = sim.stats()["rest_candles_served"]

    assert guard.ensure("EURUSD", "5m", ms(WEDNESDAY_NOON) - 3_600_000, sim.now_ms()) == 0

    assert spent(db) == 0
    assert db.execute("SELECT count(*) FROM candles").fetchone()[0] == 0
    assert sim.stats()["rest_candles_served"] == served_before


def test_a_series_without_any_candle_is_left_to_the_warm_up(pool: ConnectionPool) -> None:
    def no_rest() -> RestClient:
        raise AssertionError("no REST client may be built for a series without history")

    guard = FreshnessGuard(pool, no_rest, margin_s=30, max_bars=300)

    assert guard.ensure("EURUSD", "5m", None, ms(WEDNESDAY_NOON)) == 0
