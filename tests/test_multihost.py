"""A multi-host DATABASE_URL (libpq's own failover: the first host that answers read-write wins)
is accepted everywhere a URL is: settings, logs, the dev database helpers, the connections."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from collector import db as dbmod
from collector import devdb
from collector.config import ConfigError, load_settings
from collector.leadership import Lease
from collector.logs import redact
from collector.store import Writer

MULTI = "postgresql://collector:s3cret@db1.example:5432,db2.example:5433/igfx?target_session_attrs=read-write"


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again at once: connections to it are refused


@pytest.fixture
def failover_url(db_url: str) -> str:
    """The test database behind a first host that refuses every connection."""
    p = conninfo_to_dict(db_url)
    return (f"postgresql://{p['user']}@127.0.0.1:{_dead_port()},{p.get('host', '127.0.0.1')}:{p.get('port', 5432)}"
            f"/{p['dbname']}?target_session_attrs=read-write&connect_timeout=5")  # fmt: skip


@pytest.fixture
def lease_reset(db: psycopg.Connection) -> Iterator[None]:
    db.execute("TRUNCATE leader_history, flush_log")
    db.execute("UPDATE collector_leader SET epoch = 0, holder = NULL, since = NULL, expires_at = NULL, "
               "renewed_at = NULL, barred_holder = NULL, barred_until = NULL")  # fmt: skip
    yield


def test_settings_accept_a_multi_host_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", MULTI)
    assert load_settings().database_url == MULTI


def test_settings_refuse_a_url_libpq_cannot_read_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h1,h2/db?no_such_option=1")
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        load_settings()


def test_logs_mask_the_password_of_a_multi_host_url() -> None:
    assert redact(f"connecting to {MULTI}") == (
        "connecting to postgresql://collector:***@db1.example:5432,db2.example:5433/igfx?target_session_attrs=read-write"
    )


def test_logs_leave_a_url_without_password_alone() -> None:
    assert redact("postgresql://u@h1,h2/db and http://127.0.0.1:9108/metrics") == (
        "postgresql://u@h1,h2/db and http://127.0.0.1:9108/metrics"
    )


def test_the_dev_database_name_is_replaced_keeping_every_host_and_option() -> None:
    assert devdb.with_dbname(MULTI, "test_1") == (
        "postgresql://collector:s3cret@db1.example:5432,db2.example:5433/test_1?target_session_attrs=read-write"
    )


def test_a_fresh_dev_database_can_be_made_and_dropped_through_a_multi_host_url(failover_url: str) -> None:
    url = devdb.fresh_database(devdb.with_dbname(failover_url, "postgres"), "multihost")
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == conninfo_to_dict(url)["dbname"]
    devdb.drop_database(devdb.with_dbname(failover_url, "postgres"), url)


def test_db_connect_skips_a_host_that_does_not_answer(failover_url: str, db: psycopg.Connection) -> None:
    with dbmod.connect(failover_url, autocommit=True) as conn:
        assert (conn.info.port, conn.execute("SELECT pg_is_in_recovery()").fetchone()) == (db.info.port, (False,))


def test_the_writer_writes_through_a_multi_host_url(failover_url: str, db: psycopg.Connection) -> None:
    w = Writer(failover_url, ("EURUSD",))
    w.submit_ticks(np.zeros(2, dtype=np.int16), 1_700_000_000_000 + np.arange(2), np.full(2, 1.1), np.full(2, 1.2))
    w.flush()
    w.close()
    assert db.execute("SELECT count(*) FROM ticks").fetchone() == (2,)


def test_the_lease_is_taken_through_a_multi_host_url(failover_url: str, lease_reset: None) -> None:
    with Lease(failover_url, node_name="host-a", lease_s=5.0) as lease:
        assert lease.try_acquire() == 1
