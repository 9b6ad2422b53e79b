"""The runner reacts to candle_closed within a second, polls as a safety net, survives a lost
LISTEN connection, and evaluates rollup bars when their last 15m candle closes."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pandas as pd
import psycopg
import pytest
from psycopg_pool import ConnectionPool

from trading_bot.config import load_bot_settings
from trading_bot.market_data import MarketData
from trading_bot.orders import OrderExecutor, RiskLimits
from trading_bot.runner import Runner, parse_bucket, rollups_closed_by
from trading_bot.signals import SignalStore
from trading_bot.strategy import Signal

from .botkit import insert_candles, market_series

LIMITS = RiskLimits(1.0, 1.0, 1, 30, None, 1)


@dataclass
class RecordingStrategy:
    """Signals on every bar it is shown and notes when it was asked, per (timeframe, bar)."""

    name: str = "recording"
    bars_needed: int = 1
    seen: dict[tuple[str, dt.datetime], float] = field(default_factory=dict)

    def evaluate(self, frame: pd.DataFrame) -> Signal | None:
        bucket = frame.index[-1].to_pydatetime()
        self.seen[(frame.attrs["timeframe"], bucket)] = time.monotonic()
        return Signal(
            frame.attrs["pair"], frame.attrs["timeframe"], bucket, self.name, "buy", float(frame.close.iloc[-1])
        )


@dataclass
class Running:
    runner: Runner
    strategy: RecordingStrategy
    stop: threading.Event
    thread: threading.Thread


def start_runner(db_url: str, pool: ConnectionPool, timeframes: tuple[str, ...], poll_s: float) -> Running:
    settings = load_bot_settings(
        database_url=db_url, bot_pairs=("EURUSD",), bot_timeframes=timeframes, poll_interval_s=poll_s,
        rest_fallback=False,
    )  # fmt: skip
    strategy = RecordingStrategy()
    runner = Runner(settings, MarketData(pool), SignalStore(pool), strategy, OrderExecutor(LIMITS, dry_run=True))
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True, name="runner")
    thread.start()
    assert runner.listening.wait(10), "the runner is listening"
    return Running(runner, strategy, stop, thread)


@pytest.fixture
def running(request: pytest.FixtureRequest, db_url: str, pool: ConnectionPool) -> Iterator[Running]:
    timeframes, poll_s = getattr(request, "param", (("15m",), 60.0))
    r = start_runner(db_url, pool, timeframes, poll_s)
    yield r
    r.stop.set()
    r.thread.join(5)
    assert not r.thread.is_alive(), "the runner stops when asked"


def wait_for(predicate, timeout: float = 3.0) -> float:  # type: ignore[no-untyped-def]
    """Seconds until `predicate()` held; fails after `timeout`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic() - t0
        time.sleep(0.005)
    pytest.fail(f"not within {timeout}s")


def close_bar(db: psycopg.Connection, series: pd.DataFrame, notify: bool = True) -> dt.datetime:
    """Write a bar's final row and, like the collector, NOTIFY in the same transaction."""
    bucket = series["bucket"].iloc[0].to_pydatetime()
    with db.transaction():
        insert_candles(db, "EURUSD", "15m", series)
        if notify:
            payload = json.dumps({"pair": "EURUSD", "timeframe": "15m", "bucket": bucket.isoformat()})
            db.execute("SELECT pg_notify('candle_closed', %s)", (payload,))
    return bucket


def signal_count(db: psycopg.Connection, bucket: dt.datetime, timeframe: str = "15m") -> int:
    return db.execute(
        "SELECT count(*) FROM signals WHERE pair = 'EURUSD' AND timeframe = %s AND bucket = %s", (timeframe, bucket)
    ).fetchone()[0]


SERIES = market_series(15, 12, quiet=0.0)


@pytest.fixture
def history(db: psycopg.Connection) -> pd.DataFrame:
    insert_candles(db, "EURUSD", "15m", SERIES.iloc[:10])
    return SERIES


def test_a_notification_is_acted_on_within_a_second(db: psycopg.Connection, history, running: Running) -> None:
    wait_for(lambda: signal_count(db, history["bucket"].iloc[9]) == 1)  # the start-up catch-up

    t0 = time.monotonic()
    bucket = close_bar(db, history.iloc[10:11])
    elapsed = wait_for(lambda: signal_count(db, bucket) == 1, timeout=2.0)

    assert elapsed < 1.0
    assert running.strategy.seen[("15m", bucket)] - t0 < 1.0


@pytest.mark.parametrize("running", [(("15m",), 0.3)], indirect=True)
def test_without_a_notification_the_safety_poll_evaluates_the_new_bar(
    db: psycopg.Connection, history, running: Running
) -> None:
    bucket = close_bar(db, history.iloc[10:11], notify=False)

    wait_for(lambda: signal_count(db, bucket) == 1, timeout=3.0)


def test_a_lost_listen_connection_is_re_established(db: psycopg.Connection, history, running: Running) -> None:
    db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'trading-bot listen'")
    wait_for(lambda: not running.runner.listening.is_set(), timeout=3.0)
    assert running.runner.listening.wait(5.0)

    bucket = close_bar(db, history.iloc[10:11])

    wait_for(lambda: signal_count(db, bucket) == 1, timeout=2.0)


@pytest.mark.parametrize("running", [(("15m", "1h"), 60.0)], indirect=True)
def test_a_15m_close_that_ends_an_hour_also_evaluates_the_hour(db: psycopg.Connection, running: Running) -> None:
    # Bars at :00, :15, :30 then the :45 bar closes the hour.
    series = market_series(15, 8, quiet=0.0)
    series["bucket"] = pd.date_range("2025-01-08 09:00", periods=8, freq="15min", tz="UTC")
    insert_candles(db, "EURUSD", "15m", series.iloc[:7])

    close_bar(db, series.iloc[7:8])

    wait_for(lambda: signal_count(db, dt.datetime(2025, 1, 8, 10, 0, tzinfo=dt.UTC), "1h") == 1, timeout=2.0)


def test_a_malformed_notification_is_logged_and_ignored(db: psycopg.Connection, history, running: Running) -> None:
    db.execute("SELECT pg_notify('candle_closed', 'not json')")
    db.execute("""SELECT pg_notify('candle_closed', '{"pair": "EURUSD"}')""")

    bucket = close_bar(db, history.iloc[10:11])

    wait_for(lambda: signal_count(db, bucket) == 1, timeout=2.0)


def test_notification_buckets_may_be_iso_text_or_epoch_ms() -> None:
    t = dt.datetime(2025, 1, 8, 10, 45, tzinfo=dt.UTC)

    assert parse_bucket("2025-01-08T10:45:00+00:00") == t
    assert parse_bucket("2025-01-08 10:45:00") == t
    assert parse_bucket(1736333100000) == t


def test_rollups_closed_by_a_15m_bar() -> None:
    def closed(text: str) -> list[str]:
        return rollups_closed_by(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC))

    assert closed("2025-01-08 10:30") == []
    assert closed("2025-01-08 10:45") == ["1h"]
    assert closed("2025-01-08 11:45") == ["1h", "4h"]
    assert closed("2025-01-08 21:45") == ["1h", "1d"]  # 17:00 New York in winter
    assert closed("2025-07-08 20:45") == ["1h", "1d"]  # 17:00 New York in summer
