"""Two real `ig-collector run` processes against one database and the IG simulator: exactly one
leads, the other stands by holding no IG session, and leadership moves on kill -9 and on
`ig-collector step-down` (docs/design.md, "Leadership and fencing")."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from collector import devdb
from collector.audit import Class as AuditClass
from collector.audit import run_audit
from collector.config import load_settings
from collector.migrate import migrate
from collector.simulator.server import Simulator
from tests.e2e.harness import ROOT, CollectorProcess, pending_repairs, start_simulator, wait_for

pytestmark = pytest.mark.timeout(300)
LEASE_S = "4"
LEADER = "ig_collector_leader"


@pytest.fixture
def fresh_db(pg_server_url: str) -> Iterator[str]:
    url = devdb.fresh_database(pg_server_url, "standby")
    migrate(url, load_settings())
    yield url
    devdb.drop_database(pg_server_url, url)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    s = start_simulator()
    yield s
    s.stop()


@pytest.fixture
def pair(sim: Simulator, fresh_db: str, tmp_path: Path) -> Iterator[dict[str, CollectorProcess]]:
    nodes = {}
    for name in ("node-a", "node-b"):
        (tmp_path / name).mkdir()
        nodes[name] = CollectorProcess(
            sim, fresh_db, tmp_path / name, env_extra={"COLLECTOR_NODE_NAME": name, "COLLECTOR_LEASE_S": LEASE_S}
        )
    yield nodes
    for c in nodes.values():
        if c.alive():
            c.kill9()


def _leaders(nodes: dict[str, CollectorProcess]) -> list[str]:
    return [n for n, c in nodes.items() if c.alive() and c.metric(LEADER) == 1]


def _streaming(c: CollectorProcess) -> bool:
    return c.metric("ig_collector_stream_connected") == 1 and c.metric("ig_collector_ticks_written_total") > 0


def _view(db_url: str) -> tuple[str | None, int, bool]:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT holder, epoch, alive FROM collector_leadership").fetchone()


def _one_leading(nodes: dict[str, CollectorProcess]) -> str:
    nodes["node-a"].start()
    wait_for(lambda: _leaders(nodes) == ["node-a"] and _streaming(nodes["node-a"]), 60, "node-a to lead and stream")
    nodes["node-b"].start()
    wait_for(lambda: "standing by: node-a leads since" in nodes["node-b"].log_text(), 60, "node-b to stand by")
    return "node-a"


def _cli(c: CollectorProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector.cli", *args], env=c.env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_of_two_collectors_exactly_one_leads(pair: dict[str, CollectorProcess]) -> None:
    _one_leading(pair)
    time.sleep(2 * float(LEASE_S))  # several renewals and standby polls later
    assert _leaders(pair) == ["node-a"]
    assert (pair["node-b"].metric(LEADER), pair["node-b"].metric("ig_collector_leader_epoch")) == (0, 0)
    assert _view(pair["node-a"].db_url) == ("node-a", 1, True)


def test_the_standby_holds_no_ig_session(pair: dict[str, CollectorProcess], sim: Simulator) -> None:
    _one_leading(pair)
    time.sleep(2 * float(LEASE_S))
    assert sim.stats()["sessions"] == 1  # one Lightstreamer session: the leader's
    assert pair["node-b"].metric("ig_collector_logins_total", result="ok") == 0
    assert "Creating new v2 session" not in pair["node-b"].log_text()  # no REST login either


def test_status_names_the_leader(pair: dict[str, CollectorProcess]) -> None:
    _one_leading(pair)
    out = _cli(pair["node-b"], "status").stdout
    assert "leader: node-a (epoch 1) since" in out and "lease expires in" in out


def test_after_kill_9_of_the_leader_the_standby_leads_within_15_s_and_nothing_is_unaccounted(
    pair: dict[str, CollectorProcess], sim: Simulator
) -> None:
    _one_leading(pair)
    covered_from = sim.now_ms()
    time.sleep(3)
    pair["node-a"].kill9()
    killed = time.monotonic()
    wait_for(lambda: _leaders(pair) == ["node-b"], 20, "node-b to lead")
    took = time.monotonic() - killed
    assert took < 15, f"takeover took {took:.1f} s"
    assert "leading (epoch 2)" in pair["node-b"].log_text()
    wait_for(lambda: _streaming(pair["node-b"]), 60, "node-b to stream")
    time.sleep(12)  # a few simulated buckets close after the takeover
    covered_to = sim.now_ms()
    wait_for(lambda: pending_repairs(pair["node-b"].db_url) == 0, 120, "the takeover gap's repairs")
    assert pair["node-b"].stop() == 0
    with psycopg.connect(pair["node-b"].db_url, autocommit=True) as conn:
        v = run_audit(conn, load_settings(), covered_from, covered_to - 2 * 60_000, sim.now_ms())
    assert (v.count(AuditClass.UNACCOUNTED), len(v.differing)) == (0, 0), (v.unaccounted[:5], v.differing[:5])


def test_step_down_moves_leadership_and_the_old_leader_stands_by_in_the_same_process(
    pair: dict[str, CollectorProcess],
) -> None:
    _one_leading(pair)
    pid = pair["node-a"].proc.pid  # type: ignore[union-attr]
    done = _cli(pair["node-a"], "step-down")
    assert done.returncode == 0, done.stderr
    assert "node-a stepped down (epoch 1); may take over: node-b" in done.stdout
    wait_for(lambda: _leaders(pair) == ["node-b"], 15, "node-b to lead")
    wait_for(lambda: "lost the lease, standing by" in pair["node-a"].log_text(), 15, "node-a to stand by")
    assert pair["node-a"].alive() and pair["node-a"].proc.pid == pid  # type: ignore[union-attr]
    wait_for(lambda: "standing by: node-b leads since" in pair["node-a"].log_text(), 30, "node-a's standby log")
    assert pair["node-a"].metric("ig_collector_leader_changes_total") == 2  # became leader, stopped leading


def test_step_down_of_a_node_that_does_not_lead_fails(pair: dict[str, CollectorProcess]) -> None:
    _one_leading(pair)
    done = _cli(pair["node-b"], "step-down")
    assert done.returncode == 1
    assert "node-b does not lead; leader: node-a (epoch 1)" in done.stderr
    assert _leaders(pair) == ["node-a"]


def test_the_collector_re_executes_itself_with_its_own_command_line() -> None:
    code = "import sys; from collector.standby import reexec_command; print(reexec_command() == [sys.executable, *sys.orig_argv[1:]], sys.orig_argv[1:])"  # noqa: E501
    out = subprocess.run([sys.executable, "-X", "utf8", "-c", code], capture_output=True, text=True,
                         env={**os.environ}, cwd=ROOT, check=True).stdout  # fmt: skip
    assert out.strip() == f"True ['-X', 'utf8', '-c', {code!r}]"
