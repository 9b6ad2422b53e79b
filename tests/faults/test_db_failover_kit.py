"""The database-failover kit (tests/faults/pgpair.py) does what the failover scenarios rely on:
libpq's multi-host URL writes to the primary, the replica streams every write, and after the
primary dies and the replica is promoted, a NEW connection with the same URL writes to the
promoted replica, TimescaleDB and the collector's schema (lease included) working there."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from collector.config import load_settings
from collector.migrate import migrate

from .pgpair import PgPair, available

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(available() is not None, reason=available() or ""),
]


@pytest.fixture
def pair() -> Iterator[PgPair]:
    """A pair of its own for each test that fails it over."""
    with PgPair.start() as p:
        yield p


@pytest.fixture(scope="module")
def seeded_pair() -> Iterator[PgPair]:
    """One pair, seeded once, for the tests that only read it (starting a pair takes ~4 s)."""
    with PgPair.start() as p:
        _seed(p)
        yield p


def _writer_port(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as c:
        return int(c.info.port)


def _seed(pair: PgPair) -> None:
    with psycopg.connect(pair.url(), autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        c.execute("CREATE TABLE readings (time timestamptz NOT NULL, v integer NOT NULL)")
        c.execute("SELECT create_hypertable('readings', 'time', chunk_time_interval => INTERVAL '1 day')")
        c.execute("INSERT INTO readings VALUES ('2026-01-05 10:00Z', 1), ('2026-01-05 10:01Z', 2)")


def _fail_over(pair: PgPair) -> float:
    pair.wait_replayed()
    pair.stop_primary_hard()
    return pair.promote()


def test_a_write_through_the_multi_host_url_lands_on_the_primary(seeded_pair: PgPair) -> None:
    assert _writer_port(seeded_pair.url()) == seeded_pair.primary.port
    with psycopg.connect(seeded_pair.primary.url()) as c:
        assert c.execute("SELECT v FROM readings ORDER BY time").fetchall() == [(1,), (2,)]


def test_the_replica_receives_the_primarys_writes_and_refuses_its_own(seeded_pair: PgPair) -> None:
    seeded_pair.wait_replayed()
    with psycopg.connect(seeded_pair.replica.url(), autocommit=True) as r:
        assert r.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        assert r.execute("SELECT v FROM readings ORDER BY time").fetchall() == [(1,), (2,)]
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            r.execute("INSERT INTO readings VALUES ('2026-01-05 10:02Z', 3)")


def test_after_hard_stop_and_promote_a_new_connection_writes_to_the_promoted_replica(pair: PgPair) -> None:
    _seed(pair)
    took = _fail_over(pair)
    assert 0 < took < 30
    with psycopg.connect(pair.url(), autocommit=True) as c:
        assert c.info.port == pair.replica.port
        c.execute("INSERT INTO readings VALUES ('2026-01-05 10:02Z', 3)")
        assert c.execute("SELECT v FROM readings ORDER BY time").fetchall() == [(1,), (2,), (3,)]


def test_a_connection_open_across_the_failover_fails_and_a_new_one_recovers(pair: PgPair) -> None:
    _seed(pair)
    with psycopg.connect(pair.url(), autocommit=True) as old:
        _fail_over(pair)
        with pytest.raises(psycopg.OperationalError):
            old.execute("SELECT 1")
    assert _writer_port(pair.url()) == pair.replica.port


def test_timescaledb_hypertables_work_on_the_promoted_replica(pair: PgPair) -> None:
    _seed(pair)
    _fail_over(pair)
    with psycopg.connect(pair.url(), autocommit=True) as c:
        c.execute("INSERT INTO readings VALUES ('2026-02-01 00:00Z', 10)")  # a new chunk, made after promotion
        assert c.execute(
            "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'readings'"
        ).fetchone() == (2,)
        assert c.execute(
            "SELECT time_bucket('1 day', time)::text, sum(v) FROM readings GROUP BY 1 ORDER BY 1"
        ).fetchall() == [("2026-01-05 00:00:00+00", 3), ("2026-02-01 00:00:00+00", 10)]
        c.execute("CREATE TABLE after_failover (time timestamptz NOT NULL)")
        c.execute("SELECT create_hypertable('after_failover', 'time')")
        c.execute("INSERT INTO after_failover VALUES ('2026-02-01 00:00Z')")
        assert c.execute("SELECT count(*) FROM after_failover").fetchone() == (1,)


def test_the_collector_schema_and_its_lease_survive_the_failover(pair: PgPair) -> None:
    url = pair.create_database("collector")
    migrate(url, load_settings())
    with psycopg.connect(url, autocommit=True) as c:
        assert c.execute("SELECT leader_acquire('host-a', 0.5)").fetchone() == (1,)
    _fail_over(pair)
    time.sleep(0.6)  # host-a's lease lapses on the promoted replica's clock
    with psycopg.connect(url, autocommit=True) as c:
        assert c.execute("SELECT holder, epoch, alive FROM collector_leadership").fetchone() == ("host-a", 1, False)
        assert c.execute("SELECT leader_acquire('host-b', 10)").fetchone() == (2,)
        with pytest.raises(psycopg.Error) as err:
            c.execute("SELECT leader_fence(1, 'host-a')")
        assert err.value.sqlstate == "IGL01"
