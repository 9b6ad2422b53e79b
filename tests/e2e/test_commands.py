"""The operator commands against the simulator: `backfill` (plan, spend, never twice), `status`,
and a v3 (OAuth) login streaming like v2."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from collector.pairs import PAIRS

from .harness import ROOT, CollectorProcess, compare, start_simulator, wait_for

pytestmark = pytest.mark.timeout(180)
HOUR = 3_600_000


def _cli(sim, db_url: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("IG_", "COLLECTOR_", "DATABASE_URL"))}
    e.update(
        DATABASE_URL=db_url, IG_USERNAME=sim.username, IG_PASSWORD=sim.password, IG_API_KEY=sim.api_key,
        IG_ACCOUNT_ID=sim.account_id, IG_API_URL=sim.url, COLLECTOR_CLOCK=sim.market_clock().spec(),
        COLLECTOR_REST_REQUESTS_PER_MINUTE="6000", COLUMNS="200", **env,
    )  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "collector.cli", *args], env=e, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def sim_with_history():
    s = start_simulator(history_ms=3 * HOUR, history_ticks=30_000, ticks_per_second=100.0)
    yield s
    s.stop()


def test_backfill_fills_exactly_the_missing_candles_and_never_pays_twice(sim_with_history, fresh_db: str) -> None:
    sim = sim_with_history
    first = _cli(sim, fresh_db, "backfill", "--pair", "EURUSD", "--pair", "GBPJPY", "--since", "2h")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Backfill plan" in first.stdout
    now = sim.now_ms()
    cmp = compare(fresh_db, sim, ("5m", "15m"), now - 2 * HOUR + 15 * 60_000, now - 10 * 60_000)
    assert cmp.mismatches == []
    assert cmp.by_source == {"rest": cmp.compared}
    assert {k[0] for k in cmp.missing} <= set(PAIRS) - {"EURUSD", "GBPJPY"}
    with psycopg.connect(fresh_db) as conn:
        spent = conn.execute("SELECT sum(points) FROM rest_spend").fetchone()[0]
        stored = conn.execute("SELECT count(*) FROM candles WHERE source = 'rest'").fetchone()[0]
        composed = conn.execute("SELECT count(*) FROM candle_repairs WHERE resolution = 'composed'").fetchone()[0]
    assert composed > 0, "15m buckets whose three 5m candles were bought are composed, not bought"
    assert spent == stored - composed
    again = _cli(sim, fresh_db, "backfill", "--pair", "EURUSD", "--pair", "GBPJPY", "--since", "2h")
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT sum(points) FROM rest_spend").fetchone()[0] <= spent + 8  # only new buckets
    assert again.returncode == 0


def test_backfill_dry_run_plans_and_spends_nothing(sim_with_history, fresh_db: str) -> None:
    out = _cli(sim_with_history, fresh_db, "backfill", "--since", "1h", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "REST allowance" in out.stdout
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT count(*) FROM rest_spend").fetchone()[0] == 0


def test_backfill_rejects_a_bad_since_with_a_clear_error(sim_with_history, fresh_db: str) -> None:
    out = _cli(sim_with_history, fresh_db, "backfill", "--since", "yesterday")
    assert out.returncode == 2
    assert "--since 'yesterday'" in out.stderr


def test_status_shows_stream_state_and_pairs(collector: CollectorProcess) -> None:
    collector.start()
    wait_for(lambda: collector.metric("ig_collector_stream_connected") == 1, 60, "the collector to stream")
    wait_for(lambda: collector.metric("ig_collector_ticks_written_total") > 0, 30, "ticks written")
    out = _cli(collector.sim, collector.db_url, "status", COLLECTOR_METRICS_PORT=str(collector.metrics_port))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "stream: CONNECTED" in out.stdout
    assert "EURUSD" in out.stdout and "NZDCAD" in out.stdout
    assert collector.stop() == 0


def test_v3_login_streams_like_v2(collector: CollectorProcess) -> None:
    collector.env_extra["IG_API_VERSION"] = "3"
    collector.start()
    wait_for(lambda: collector.metric("ig_collector_stream_connected") == 1, 60, "a v3 session to stream")
    wait_for(lambda: collector.metric("ig_collector_ticks_written_total") > 100, 30, "ticks written")
    assert collector.stop() == 0
