"""Warm-up planner: bars stored, 15m bars composed for free from 5m, points to buy the rest, what
the budget funds now (5m first), when the stream alone gets there; applying it buys within the
budget and next to known bars, and from nothing spends exactly 28 x (200 + 134) points."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from collector.ig_rest import RestBudget, RestClient
from collector.pairs import PAIRS
from collector.simulator.server import Simulator
from trading_bot import market_hours as mh
from trading_bot.config import load_bot_settings
from trading_bot.freshness import store_candles
from trading_bot.market_data import MarketData
from trading_bot.warmup import WarmupPlan, WarmupResult, apply_plan, make_plan, stored_candles

from .botkit import insert_candles, market_series, ms, utc

WEDNESDAY_NOON = dt.datetime(2025, 1, 15, 12, 0, tzinfo=dt.UTC)
FIFTEEN_MIN = 900_000


@pytest.fixture
def stored(db: psycopg.Connection) -> None:
    insert_candles(db, "EURUSD", "15m", market_series(15, 150, start=dt.datetime(2025, 1, 13, tzinfo=dt.UTC)))
    insert_candles(db, "EURUSD", "5m", market_series(5, 20, start=dt.datetime(2025, 1, 15, 9, tzinfo=dt.UTC)))


def test_the_plan_counts_bars_composes_15m_from_5m_and_spends_5m_first(stored: None, market: MarketData) -> None:
    plan = make_plan(market, ["EURUSD", "GBPUSD"], ["5m", "15m"], target=200, available_points=180, now=WEDNESDAY_NOON)

    rows = [(it.pair, it.timeframe, it.bars, it.composed, it.missing, it.cost_points) for it in plan.items]
    assert rows == [
        ("EURUSD", "5m", 20, 0, 180, 180),
        ("GBPUSD", "5m", 0, 0, 200, 200),
        # 5m from Tuesday 18:00 to Wednesday 10:35 cover 15m buckets the 150 stored ones lack: 50 needed.
        ("EURUSD", "15m", 150, 50, 0, 0),
        # 200 5m bars (Tuesday 19:20 - Wednesday 11:55) hold 66 whole 15m buckets: buy the older 134.
        ("GBPUSD", "15m", 0, 66, 134, 134),
    ]
    assert plan.total_cost == 514
    assert plan.fundable() == {("EURUSD", "5m"): 180, ("GBPUSD", "5m"): 0, ("EURUSD", "15m"): 0, ("GBPUSD", "15m"): 0}
    gbp = plan.items[3]
    assert (utc(gbp.compose_from_ms), utc(gbp.compose_to_ms), utc(gbp.rest_end_ms)) == (
        dt.datetime(2025, 1, 14, 19, 30, tzinfo=dt.UTC), dt.datetime(2025, 1, 15, 11, 45, tzinfo=dt.UTC),
        dt.datetime(2025, 1, 14, 19, 15, tzinfo=dt.UTC),
    )  # fmt: skip


def test_without_5m_the_plan_buys_all_its_15m(stored: None, market: MarketData) -> None:
    plan = make_plan(market, ["GBPUSD"], ["15m"], target=200, available_points=0, now=WEDNESDAY_NOON)
    assert [(it.composed, it.missing) for it in plan.items] == [(0, 200)]


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


def apply_with_simulator(
    sim: Simulator, db_url: str, pool: ConnectionPool, plan: WarmupPlan, budget: RestBudget
) -> list[WarmupResult]:
    """`trading-bot warmup --apply` against the simulator: the bot's REST client and stores."""
    settings = load_bot_settings(
        database_url=db_url, ig_username=sim.username, ig_password=sim.password, ig_api_key=sim.api_key,
        ig_api_url=sim.url,
    )  # fmt: skip
    client = RestClient(settings, spender="trading_bot", reserve_points=budget.reserve_points, now_ms=sim.now_ms)
    market = MarketData(pool)
    try:
        return apply_plan(
            plan, client, lambda c: store_candles(pool, c), budget.available,
            lambda p, tf, lo, hi: stored_candles(market, p, tf, lo, hi),
        )  # fmt: skip
    finally:
        client.logout()


def test_apply_buys_5m_composes_15m_then_buys_as_much_older_15m_as_the_budget_allows(
    db: psycopg.Connection, db_url: str, pool: ConnectionPool
) -> None:
    sim_now = dt.datetime(2025, 1, 8, 12, 0, tzinfo=dt.UTC)
    with Simulator(
        pairs=("EURUSD",), start_ms=ms(sim_now), ticks_per_second=5.0, seed=9,
        history_ms=14 * 3_600_000, history_ticks=30_000,
    ) as sim:  # fmt: skip
        # 10 bars of each stored, ending 11:45 / 11:55; the target is 40, 45 points to spend.
        insert_candles(db, "EURUSD", "15m", market_series(15, 10, start=sim_now - dt.timedelta(minutes=150), quiet=0))
        insert_candles(db, "EURUSD", "5m", market_series(5, 10, start=sim_now - dt.timedelta(minutes=50), quiet=0))
        sim.set_allowance(545)
        expiry = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
        db.execute(
            "INSERT INTO rest_allowance (remaining, total, expires_at, updated_by) VALUES (545, 10000, %s, 'test')",
            (expiry,),
        )
        budget = RestBudget(db_url, "trading_bot", reserve_points=500)
        market = MarketData(pool)
        plan = make_plan(market, ["EURUSD"], ["5m", "15m"], 40, budget.available(), sim_now)
        results = apply_with_simulator(sim, db_url, pool, plan, budget)

    # 30 5m (08:40-11:05) make 08:45-11:45 whole: 3 new 15m composed; 27 older 15m missing, 15 affordable.
    assert [(r.timeframe, r.asked, r.stored, r.note) for r in results] == [
        ("5m", 30, 30, ""),
        ("15m", 0, 3, "composed from 5m (3 planned), 0 points"),
        ("15m", 15, 15, "partial"),
    ]
    counts = dict(db.execute("SELECT timeframe, count(*) FROM candles GROUP BY timeframe").fetchall())
    assert counts == {"15m": 28, "5m": 40}
    newest_rest_5m, oldest_stream_5m = db.execute(
        "SELECT max(bucket) FILTER (WHERE source = 'rest'), min(bucket) FILTER (WHERE source = 'stream') "
        "FROM candles WHERE timeframe = '5m'"
    ).fetchone()
    assert oldest_stream_5m - newest_rest_5m == dt.timedelta(minutes=5), "the 5m buy is next to the stored bars"
    assert db.execute("SELECT sum(points) FROM rest_spend WHERE purpose = 'warmup'").fetchone()[0] == 45


def test_a_warmup_of_28_pairs_from_nothing_spends_exactly_9352_points(
    db: psycopg.Connection, db_url: str, pool: ConnectionPool
) -> None:
    sim_now = dt.datetime(2025, 1, 16, 12, 0, 30, tzinfo=dt.UTC)  # a Thursday: the history is all weekdays
    with Simulator(
        pairs=PAIRS, start_ms=ms(sim_now), ticks_per_second=0.0, seed=17,
        history_ms=60 * 3_600_000, history_ticks=420_000,
    ) as sim:  # fmt: skip
        budget = RestBudget(db_url, "trading_bot", reserve_points=500)
        market = MarketData(pool)
        plan = make_plan(market, PAIRS, ["5m", "15m"], 200, budget.available(), sim_now)
        assert plan.total_cost == 28 * (200 + 134) == 9352
        assert plan.available_points == 9500 and sum(plan.fundable().values()) == 9352
        results = apply_with_simulator(sim, db_url, pool, plan, budget)
        stats = sim.stats()

    assert stats["rest_candles_served"] == 9352
    assert stats["allowance"]["remainingAllowance"] == 10_000 - 9352
    assert db.execute("SELECT sum(points), count(*) FROM rest_spend WHERE purpose = 'warmup'").fetchone() == (9352, 56)
    assert sum(r.stored for r in results if r.note.startswith("composed")) == 28 * 66
    state = {(s.pair, s.timeframe): s.bars for s in market.series_state(PAIRS, ["5m", "15m"], 1000)}
    assert set(state.values()) == {200}, "every pair and timeframe has exactly its 200 bars"
