"""Fixtures for the bot tests: the session database (tests/conftest.py) seen through the bot's pool."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from trading_bot.market_data import MarketData, open_pool


@pytest.fixture
def pool(db: psycopg.Connection, db_url: str) -> Iterator[ConnectionPool]:
    """The bot's pool on the session database; market tables and signals emptied by `db` first."""
    p = open_pool(db_url, max_size=3, application_name="trading-bot tests")
    yield p
    p.close()


@pytest.fixture
def market(pool: ConnectionPool) -> MarketData:
    return MarketData(pool)
