"""Warm-up planner: bars stored, points to buy the rest, what the budget funds now (15m first),
when the stream alone gets there; applying it buys within the budget and next to stored bars."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from collector.ig_rest import RestBudget, RestClient
from collector.simulator.server import Simulator
from trading_bot import market_hours as mh
from trading_bot.config import load_bot_settings
from trading_bot.freshness import store_candles
from trading_bot.market_data import MarketData
from trading_bot.warmup import apply_plan, make_plan

from .botkit import insert_candles, market_series, ms

WEDNESDAY_NOON = dt.datetime(2025, 1, 15, 12, 0, tzinfo=dt.UTC)
FIFTEEN_MIN = 900_000


@pytest.fixture
def stored(db: psycopg.Connection) -> None:
    insert_candles(db, "EURUSD", "15m", market_series(15, 150, start=dt.datetime(2025, 1, 13, tzinfo=dt.UTC)))
    insert_candles(db, "EURUSD", "5m", market_series(5, 20, start=dt.datetime(2025, 1, 15, 9, tzinfo=dt.UTC)))


def test_the_plan_counts_bars_and_points_and_spends_15m_first(stored: None, market: MarketData) -> None:
    plan = make_plan(market, ["EURUSD", "GBPUSD"], ["5m", "15m"], target=200, available_points=180, now=WEDNESDAY_NOON)

    rows = [(it.pair, it.timeframe, it.bars, it.missing, it.cost_points) for it in plan.items]
    assert rows == [
        ("EURUSD", "15m", 150, 50, 50),
        ("GBPUSD", "15m", 0, 200, 200),
        ("EURUSD", "5m", 20, 180, 180),
        ("GBPUSD", "5m", 0, 200, 200),
    ]
    assert plan.total_cost == 630
    assert plan.fundable() == {("EURUSD", "15m"): 50, ("GBPUSD", "15m"): 130, ("EURUSD", "5m"): 0, ("GBPUSD", "5m"): 0}


def test_the_rest_range_ends_just_before_the_oldest_stored_bar(stored: None, market: MarketData) -> None:
    plan = make_plan(market, ["EURUSD"], ["15m"], target=200, available_points=0, now=WEDNESDAY_NOON)

    (item,) = plan.items
    assert item.oldest is not None and item.rest_end_ms == ms(item.oldest) - FIFTEEN_MIN
    assert item.rest_start_ms == mh.bars_back_start(item.rest_end_ms, 50, FIFTEEN_MIN)
    # Before Monday 00:00: Sunday 22:00-23:45 (8 bars), then Friday 11:30-21:45 (42 bars).
    assert mh.from_ms(item.rest_start_ms) == dt.datetime(2025, 1, 10, 11, 30, tzinfo=dt.UTC)


def test_the_stream_alone_gets_there_after_the_missing_bars_of_market_time(stored: None, market: MarketData) -> None:
    plan = make_plan(market, ["EURUSD"], ["15m"], target=200, available_points=0, now=WEDNESDAY_NOON)
    assert plan.items[0].stream_eta == WEDNESDAY_NOON + dt.timedelta(hours=12.5)  # 50 bars mid-week

    friday_noon = dt.datetime(2025, 1, 17, 12, 0, tzinfo=dt.UTC)
    plan = make_plan(market, ["GBPUSD"], ["15m"], target=200, available_points=0, now=friday_noon)
    # 40 bars until Friday 22:00, the other 160 from Sunday 22:00: Tuesday 14:00.
    assert plan.items[0].stream_eta == dt.datetime(2025, 1, 21, 14, 0, tzinfo=dt.UTC)


def test_apply_buys_15m_first_then_as_much_5m_as_the_budget_allows(
    db: psycopg.Connection, db_url: str, pool: ConnectionPool
) -> None:
    sim_now = dt.datetime(2025, 1, 8, 12, 0, tzinfo=dt.UTC)
    with Simulator(
        pairs=("EURUSD",), start_ms=ms(sim_now), ticks_per_second=5.0, seed=9,
        history_ms=14 * 3_600_000, history_ticks=30_000,
    ) as sim:  # fmt: skip
        # 10 bars of each stored, ending 11:45 / 11:55; the target is 40: 30 + 30 missing, 45 points to spend.
        insert_candles(db, "EURUSD", "15m", market_series(15, 10, start=sim_now - dt.timedelta(minutes=150), quiet=0))
        insert_candles(db, "EURUSD", "5m", market_series(5, 10, start=sim_now - dt.timedelta(minutes=50), quiet=0))
        sim.set_allowance(545)
        expiry = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
        db.execute(
            "INSERT INTO rest_allowance (remaining, total, expires_at, updated_by) VALUES (545, 10000, %s, 'test')",
            (expiry,),
        )
        settings = load_bot_settings(
            database_url=db_url, ig_username=sim.username, ig_password=sim.password, ig_api_key=sim.api_key,
            ig_api_url=sim.url,
        )  # fmt: skip
        budget = RestBudget(db_url, "trading_bot", reserve_points=500)
        plan = make_plan(MarketData(pool), ["EURUSD"], ["5m", "15m"], 40, budget.available(), sim_now)
        client = RestClient(settings, spender="trading_bot", reserve_points=500, now_ms=sim.now_ms)

        results = apply_plan(plan, client, lambda c: store_candles(pool, c), budget.available)
        client.logout()

    assert [(r.timeframe, r.asked, r.stored, r.note) for r in results] == [
        ("15m", 30, 30, ""),
        ("5m", 15, 15, "partial"),
    ]
    counts = dict(db.execute("SELECT timeframe, count(*) FROM candles GROUP BY timeframe").fetchall())
    assert counts == {"15m": 40, "5m": 25}
    newest_rest_5m, oldest_stream_5m = db.execute(
        "SELECT max(bucket) FILTER (WHERE source = 'rest'), min(bucket) FILTER (WHERE source = 'stream') "
        "FROM candles WHERE timeframe = '5m'"
    ).fetchone()
    assert oldest_stream_5m - newest_rest_5m == dt.timedelta(minutes=5), "the partial buy is next to the stored bars"
    assert db.execute("SELECT sum(points) FROM rest_spend WHERE purpose = 'warmup'").fetchone()[0] == 45
