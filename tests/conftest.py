"""Session-wide fixtures: a real PostgreSQL + TimescaleDB, a fresh migrated database per session.

Where the database comes from is `collector.devdb`'s business (env URL, testcontainers, or a
local throwaway cluster). Tests never mock the database.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from collector import devdb
from collector.config import load_settings
from collector.db import TimescaleInfo, timescale_info
from collector.migrate import migrate

MARKET_TABLES = (
    "ticks", "candles", "candle_repairs", "rest_spend", "rest_allowance", "stream_coverage", "quarantine", "tick_gaps",
)  # fmt: skip


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    return devdb.server_url()


@pytest.fixture(scope="session")
def db_url(pg_server_url: str) -> Iterator[str]:
    """Superuser URL of a database created and migrated for this test session."""
    url = devdb.fresh_database(pg_server_url, "test")
    migrate(url, load_settings())
    yield url
    devdb.drop_database(pg_server_url, url)


@pytest.fixture(scope="session")
def tsdb(db_url: str) -> TimescaleInfo:
    with psycopg.connect(db_url) as conn:
        info = timescale_info(conn)
    assert info is not None
    return info


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection]:
    """Autocommit connection to the session database, market-data tables emptied first."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        existing = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        tables = [t for t in MARKET_TABLES if t in existing]
        extra = [t for t in ("signals",) if t in existing]
        conn.execute("TRUNCATE " + ", ".join(tables + extra))
        # TRUNCATE does not reach rows a test materialized into a continuous aggregate; a
        # refresh over everything re-materializes them from the now empty candles.
        caggs = conn.execute(
            "SELECT c.relname FROM pg_class c WHERE c.relname IN ('candles_1h', 'candles_4h', 'candles_1d') "
            "AND c.relkind = 'v' AND EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') "
            "AND current_setting('timescaledb.license', true) = 'timescale'"
        ).fetchall()
        for (view,) in caggs:
            if conn.execute(
                "SELECT 1 FROM timescaledb_information.continuous_aggregates WHERE view_name = %s", (view,)
            ).fetchone():
                conn.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")
        yield conn


@pytest.fixture
def full_edition(tsdb: TimescaleInfo) -> TimescaleInfo:
    """Use in tests of the full-edition path: skips with the reason where it is absent."""
    if tsdb.edition != "full":
        pytest.skip(f"needs TimescaleDB's full edition; this server has {tsdb.describe()}")
    return tsdb
