from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from collector import devdb
from collector.config import load_settings
from collector.migrate import migrate
from tests.e2e.harness import start_simulator
from tests.netproxy import TcpProxy

from .kit import CountingProxy, Scenario


@pytest.fixture
def fresh_db(pg_server_url: str) -> Iterator[str]:
    """A database of its own per scenario: the verdict reads every candle in it.
    FAULTS_KEEP_DB=1 keeps it for a post-mortem (its URL is printed)."""
    url = devdb.fresh_database(pg_server_url, "faults")
    migrate(url, load_settings())
    yield url
    if os.environ.get("FAULTS_KEEP_DB") == "1":
        print(f"\nkept database: {url}")
        return
    devdb.drop_database(pg_server_url, url)


SLOW_HINT = "slow scenario: run it with `.venv/bin/pytest tests/faults -m slow` (or FAULTS_SLOW=1)"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Scenarios marked slow are left out of the default run (the folder stays near 6 minutes)."""
    if item.get_closest_marker("slow") is None:
        return
    if os.environ.get("FAULTS_SLOW") == "1" or "slow" in (item.config.option.markexpr or ""):
        return
    pytest.skip(SLOW_HINT)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    rep = yield
    if rep.when == "call":
        item.faults_outcome = "xfail" if hasattr(rep, "wasxfail") else rep.outcome  # type: ignore[attr-defined]
    return rep


@pytest.fixture
def scenario(request: pytest.FixtureRequest, fresh_db: str, tmp_path: Path) -> Iterator[Callable[..., Scenario]]:
    """Build the scenario's world: `scenario(name, fault, sim={...}, env={...}, db_proxy=True,
    rest_proxy=True)`. Proxies are reachable as `s.db_proxy` / `s.rest_proxy`; everything is
    torn down (collector killed if still alive) at the end."""
    made: list[Scenario] = []
    sims: list[Any] = []
    proxies: list[TcpProxy] = []

    def make(
        name: str,
        fault: str,
        *,
        sim: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        db_proxy: bool = False,
        rest_proxy: bool = False,
    ) -> Scenario:
        s_ = start_simulator(**(sim or {}))
        sims.append(s_)
        collector_url = None
        dbp = None
        if db_proxy:
            dbp, collector_url = TcpProxy.for_url(fresh_db)
            proxies.append(dbp)
        rp = None
        if rest_proxy:
            rp = CountingProxy("127.0.0.1", s_.port).start()
            proxies.append(rp)
        sc = Scenario(name, fault, s_, fresh_db, tmp_path, collector_url, dict(env or {}), rp, dbp)
        made.append(sc)
        return sc

    yield make
    outcome = getattr(request.node, "faults_outcome", "error")
    for sc in made:
        if sc.proc.alive():
            sc.proc.kill9()
        sc.notes["line"] = request.node.location[1]
        sc.write_record(outcome, request.node.nodeid)
    for sc in made:
        if sc.proc.alive():
            sc.proc.kill9()
    for p in proxies:
        p.stop()
    for s_ in sims:
        s_.stop()
