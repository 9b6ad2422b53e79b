"""The bot rides through a real database failover: its multi-host DATABASE_URL finds the promoted
replica, LISTEN resumes, and the next bar's notification is acted on (two real clusters in
streaming replication: tests/faults/pgpair.py)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from collector.config import load_settings
from collector.migrate import migrate
from tests.faults.pgpair import PgPair, available
from trading_bot.market_data import open_pool

from .botkit import insert_candles
from .test_runner import SERIES, close_bar, signal_count, start_runner, wait_for

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(available() is not None, reason=available() or ""),
]


@pytest.fixture
def failover_db() -> Iterator[tuple[PgPair, str]]:
    with PgPair.start() as pair:
        url = pair.create_database("bot")
        migrate(url, load_settings())
        with psycopg.connect(url, autocommit=True) as conn:
            insert_candles(conn, "EURUSD", "15m", SERIES.iloc[:10])
        yield pair, url


def test_after_a_failover_the_bot_listens_on_the_promoted_replica_and_acts_on_the_next_bar(
    failover_db: tuple[PgPair, str],
) -> None:
    pair, url = failover_db
    pool = open_pool(url, max_size=3, application_name="trading-bot tests")
    running = start_runner(url, pool, ("15m",), 60.0)
    try:
        pair.wait_replayed()
        pair.stop_primary_hard()
        wait_for(lambda: not running.runner.listening.is_set(), timeout=10.0)
        pair.promote()
        assert running.runner.listening.wait(45.0), "LISTEN resumed on the promoted replica"
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.info.port == pair.replica.port
            bucket = close_bar(conn, SERIES.iloc[10:11])
            wait_for(lambda: signal_count(conn, bucket) == 1, timeout=5.0)
    finally:
        running.stop.set()
        running.thread.join(5)
        pool.close()
