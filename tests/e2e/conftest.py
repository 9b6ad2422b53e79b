from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from collector import devdb
from collector.config import load_settings
from collector.migrate import migrate

from .harness import CollectorProcess, start_simulator


@pytest.fixture
def fresh_db(pg_server_url: str) -> Iterator[str]:
    """A database of its own per scenario: a collector run leaves rows behind."""
    url = devdb.fresh_database(pg_server_url, "e2e")
    migrate(url, load_settings())
    yield url
    devdb.drop_database(pg_server_url, url)


@pytest.fixture
def sim():
    s = start_simulator()
    yield s
    s.stop()


@pytest.fixture
def collector(sim, fresh_db: str, tmp_path: Path) -> Iterator[CollectorProcess]:
    c = CollectorProcess(sim, fresh_db, tmp_path)
    yield c
    if c.alive():
        c.kill9()
