"""End-to-end: the real collector process, the real Lightstreamer and trading-ig clients, the
IG simulator and a real TimescaleDB. Every scenario ends with the same verdict: every complete
candle equals ground truth, and every bucket that closed while the collector ran is there."""

from __future__ import annotations

import time

import pytest

from collector.pairs import PAIRS

from .harness import CollectorProcess, compare, pending_repairs, wait_for

pytestmark = pytest.mark.timeout(240)
TIMEFRAMES = ("5m", "15m")
PREFIX = "ig_collector"


def _streaming(c: CollectorProcess) -> bool:
    return c.metric(f"{PREFIX}_stream_connected") == 1 and c.metric(f"{PREFIX}_ticks_written_total") > 0


def _started(c: CollectorProcess) -> int:
    """Start the collector, wait until it streams; the simulated time it began covering."""
    c.start()
    wait_for(lambda: _streaming(c), 60, "the collector to stream")
    return c.sim.now_ms()


def _run_until_settled(c: CollectorProcess, seconds: float, covered_from: int | None = None) -> tuple[int, int]:
    """Collect `seconds` more of wall time, wait for the repairs of closed buckets, stop.
    Returns the simulated interval the verdict covers: from `covered_from` (default: now)."""
    wait_for(lambda: _streaming(c), 60, "the collector to stream")
    covered_from = covered_from if covered_from is not None else c.sim.now_ms()
    time.sleep(seconds)
    covered_to = c.sim.now_ms()
    wait_for(lambda: pending_repairs(c.db_url) == 0 or _only_open_pending(c), 90, "REST repairs to finish")
    assert c.stop() == 0
    return covered_from, covered_to


def _only_open_pending(c: CollectorProcess) -> bool:
    import psycopg

    with psycopg.connect(c.db_url) as conn:
        n = conn.execute(
            "SELECT count(*) FROM candle_repairs WHERE resolved_at IS NULL AND "
            "bucket + (CASE timeframe WHEN '5m' THEN interval '5 min' ELSE interval '15 min' END) "
            "< to_timestamp(%s / 1000.0) - interval '2 min'",
            (c.sim.now_ms(),),
        ).fetchone()[0]
    return n == 0


def _verdict(c: CollectorProcess, covered_from: int, covered_to: int, *, expect_rest: bool) -> None:
    # Buckets that closed inside the covered interval must be complete and exact.
    cmp = compare(c.db_url, c.sim, TIMEFRAMES, covered_from, covered_to - 2 * 60_000)
    assert cmp.mismatches == [], cmp.mismatches[:5]
    assert cmp.missing == [], f"{len(cmp.missing)} buckets missing, e.g. {cmp.missing[:3]}; {cmp.summary()}"
    assert cmp.by_source.get("stream", 0) > 0
    if expect_rest:
        assert cmp.by_source.get("rest", 0) > 0, cmp.summary()


def test_candles_equal_ground_truth_for_28_pairs(collector: CollectorProcess) -> None:
    t0 = _started(collector)
    covered = _run_until_settled(collector, 25, t0)
    _verdict(collector, *covered, expect_rest=True)  # the start-up bucket is partial: repaired
    with __import__("psycopg").connect(collector.db_url) as conn:
        pairs = {r[0] for r in conn.execute("SELECT DISTINCT pair FROM candles WHERE complete")}
    assert pairs == set(PAIRS)


@pytest.mark.parametrize("mode", ["close", "abort"])
def test_recovers_from_dropped_connections_and_backfills_the_gap(collector: CollectorProcess, mode: str) -> None:
    t0 = _started(collector)
    time.sleep(6)
    collector.sim.drop_connections(mode)
    wait_for(lambda: collector.metric(f"{PREFIX}_stream_connected") == 0, 30, "the drop to be noticed")
    wait_for(lambda: _streaming(collector), 60, "the collector to stream again")
    covered = _run_until_settled(collector, 12, t0)
    _verdict(collector, *covered, expect_rest=True)


@pytest.mark.parametrize("code", [48, 32])
def test_recovers_from_server_ended_session(collector: CollectorProcess, code: int) -> None:
    """48 is retried by the client itself; 32 is terminal there, so the collector logs in again."""
    t0 = _started(collector)
    logins = collector.metric(f"{PREFIX}_logins_total", result="ok")
    collector.sim.end_sessions(code)
    wait_for(lambda: collector.metric(f"{PREFIX}_stream_connected") == 0 or code == 48, 30, "the end")
    time.sleep(3)
    wait_for(lambda: _streaming(collector), 60, "the collector to stream again")
    if code == 32:
        assert collector.metric(f"{PREFIX}_logins_total", result="ok") > logins
    covered = _run_until_settled(collector, 10, t0)
    _verdict(collector, *covered, expect_rest=True)


def test_recovers_when_credentials_are_refused_for_a_while(collector: CollectorProcess) -> None:
    t0 = _started(collector)
    collector.sim.refuse_credentials(True)
    collector.sim.expire_tokens()
    collector.sim.end_sessions(32)
    wait_for(lambda: collector.metric(f"{PREFIX}_logins_total", result="refused") >= 1, 60, "a refused login")
    assert collector.alive()
    collector.sim.refuse_credentials(False)
    wait_for(lambda: _streaming(collector), 90, "the collector to stream again")
    covered = _run_until_settled(collector, 10, t0)
    _verdict(collector, *covered, expect_rest=True)


def test_silent_stream_during_market_hours_triggers_a_reconnect(collector: CollectorProcess) -> None:
    collector.env_extra["COLLECTOR_STALE_AFTER_S"] = "180"  # 3 simulated minutes = 3 s here
    t0 = _started(collector)
    collector.sim.stall_stream()
    wait_for(lambda: collector.metric(f"{PREFIX}_stream_reconnects_total", cause="stale") >= 1, 60, "a reconnect")
    collector.sim.unstall_stream()
    wait_for(lambda: _streaming(collector), 60, "the collector to stream again")
    covered = _run_until_settled(collector, 10, t0)
    _verdict(collector, *covered, expect_rest=True)


def test_malformed_values_are_rejected_and_counted(collector: CollectorProcess) -> None:
    t0 = _started(collector)
    kinds = {"empty": "missing", "non_numeric": "non_numeric", "crossed": "crossed", "far_future": "future",
             "negative": "non_positive", "zero": "non_positive"}  # fmt: skip
    for kind in kinds:
        collector.sim.inject(kind, "EURUSD")
    for reason in set(kinds.values()):
        wait_for(
            lambda r=reason: collector.metric(f"{PREFIX}_ticks_rejected_total", reason=r) >= 1, 30, f"{reason} counted"
        )
    assert collector.alive()
    covered = _run_until_settled(collector, 12, t0)
    _verdict(collector, *covered, expect_rest=False)


def test_no_secret_appears_in_the_log_even_at_debug(collector: CollectorProcess) -> None:
    collector.env_extra["COLLECTOR_LOG_LEVEL"] = "DEBUG"
    collector.start()
    wait_for(lambda: _streaming(collector), 60, "the collector to stream")
    collector.sim.end_sessions(32)  # a re-login mints new tokens to leak
    time.sleep(4)
    wait_for(lambda: _streaming(collector), 60, "the collector to stream again")
    assert collector.stop() == 0
    text = collector.log_text()
    tokens = collector.sim.issued_tokens()
    assert len(tokens) >= 4
    for secret in [collector.sim.password, collector.sim.api_key, *tokens]:
        assert secret not in text
    assert "CST-" not in text.replace("CST-***", "")
    assert '"level": "debug"' in text  # it really ran at DEBUG


def test_sigterm_flushes_forming_candles_and_exits_0_quickly(collector: CollectorProcess) -> None:
    import psycopg

    collector.start()
    wait_for(lambda: _streaming(collector), 60, "the collector to stream")
    time.sleep(2)
    t0 = time.monotonic()
    assert collector.stop() == 0
    assert time.monotonic() - t0 < 15
    with psycopg.connect(collector.db_url) as conn:
        forming = conn.execute("SELECT count(*) FROM candles WHERE NOT complete").fetchone()[0]
    assert forming >= len(PAIRS)


def test_updates_the_server_dropped_are_repaired_from_rest(collector: CollectorProcess) -> None:
    """Lightstreamer's OV (lost updates): the pair's bucket is short, so it is replaced from REST."""
    t0 = _started(collector)
    time.sleep(2)
    collector.sim.lose_updates("EURUSD", 5)
    wait_for(lambda: collector.metric(f"{PREFIX}_updates_lost_total", reason="server_dropped") >= 5, 30, "lost updates")
    covered = _run_until_settled(collector, 10, t0)
    _verdict(collector, *covered, expect_rest=True)
    import psycopg

    with psycopg.connect(collector.db_url) as conn:
        reasons = {r[0] for r in conn.execute("SELECT DISTINCT reason FROM candle_repairs WHERE pair = 'EURUSD'")}
    assert "lost_updates" in reasons
