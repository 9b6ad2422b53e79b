"""End-to-end through each behaviour IG may have (issue 14): the real collector process, never
told the mode, against the simulator in that mode, stores candles equal to ground truth and
spends exactly one REST point per missing candle (the simulator's `rest_candles_served`, the
collector's `rest_spend` and its `candle_repairs` agree), and nothing outside the gap."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from .harness import CollectorProcess, compare, start_simulator, wait_for

pytestmark = pytest.mark.timeout(240)
TIMEFRAMES = ("5m", "15m")
PREFIX = "ig_collector"
JULY_WEDNESDAY_10_UTC = int(dt.datetime(2026, 7, 15, 10, 0, tzinfo=dt.UTC).timestamp() * 1000)


def _streaming(c: CollectorProcess) -> bool:
    return c.metric(f"{PREFIX}_stream_connected") == 1 and c.metric(f"{PREFIX}_ticks_written_total") > 0


def _settle_and_stop(c: CollectorProcess) -> int:
    """Wait until every bucket that closed before now (less the repair settle time) is repaired,
    stop the collector; the end of the covered interval."""
    covered_to = c.sim.now_ms()

    def repaired() -> bool:
        with psycopg.connect(c.db_url) as conn:
            return (
                conn.execute(
                    "SELECT count(*) FROM candle_repairs WHERE resolved_at IS NULL AND bucket + "
                    "(CASE timeframe WHEN '5m' THEN interval '5 min' ELSE interval '15 min' END) "
                    "< to_timestamp(%s / 1000.0) - interval '2 min'",
                    (covered_to,),
                ).fetchone()[0]
                == 0
            )

    wait_for(repaired, 90, "REST repairs of closed buckets")
    assert c.stop() == 0
    return covered_to


def _verdict(c: CollectorProcess, covered_from: int, covered_to: int) -> None:
    cmp = compare(c.db_url, c.sim, TIMEFRAMES, covered_from, covered_to - 2 * 60_000)
    assert cmp.mismatches == [], cmp.mismatches[:5]
    assert cmp.missing == [], f"{len(cmp.missing)} buckets missing, e.g. {cmp.missing[:3]}; {cmp.summary()}"
    assert cmp.by_source.get("stream", 0) > 0 and cmp.by_source.get("rest", 0) > 0, cmp.summary()


def _points_match_missing_candles(c: CollectorProcess) -> int:
    """Every point IG charged bought a bucket the collector was missing, once."""
    with psycopg.connect(c.db_url) as conn:
        repaired = conn.execute("SELECT count(*) FROM candle_repairs WHERE resolution = 'rest'").fetchone()[0]
        spent = conn.execute("SELECT coalesce(sum(points), 0) FROM rest_spend").fetchone()[0]
    served = c.sim.stats()["rest_candles_served"]
    assert (served, spent) == (repaired, repaired)
    return served


def _collector(fresh_db: str, tmp_path: Path, **sim_kw: object) -> Iterator[CollectorProcess]:
    sim = start_simulator(start_ms=JULY_WEDNESDAY_10_UTC, **sim_kw)
    c = CollectorProcess(sim, fresh_db, tmp_path)
    try:
        yield c
    finally:
        if c.alive():
            c.kill9()
        sim.stop()


@pytest.fixture(params=["UTC", "Europe/London"])
def zone_collector(request: pytest.FixtureRequest, fresh_db: str, tmp_path: Path) -> Iterator[CollectorProcess]:
    yield from _collector(fresh_db, tmp_path, rest_time_zone=request.param)


@pytest.fixture
def spreadbet_collector(fresh_db: str, tmp_path: Path) -> Iterator[CollectorProcess]:
    for c in _collector(fresh_db, tmp_path):
        c.env_extra["IG_EPIC_SUFFIX"] = ".TODAY.IP"
        yield c


@pytest.fixture
def no_websocket_collector(fresh_db: str, tmp_path: Path) -> Iterator[CollectorProcess]:
    for c in _collector(fresh_db, tmp_path):
        c.sim.refuse_websockets(-1)
        yield c


def _run_with_an_outage(c: CollectorProcess) -> tuple[int, int]:
    """Stream, be down for 8 simulated minutes, come back, repair: the covered interval. A stop
    rather than kill -9: a killed repair may have been charged by IG and not recorded, and this
    test counts every point."""
    c.start()
    wait_for(lambda: _streaming(c), 60, "the collector to stream")
    t0 = c.sim.now_ms()
    time.sleep(6)
    assert c.stop() == 0
    time.sleep(8)
    c.start()
    wait_for(lambda: _streaming(c), 60, "the collector to stream again")
    time.sleep(14)
    return t0, _settle_and_stop(c)


def test_a_july_gap_is_repaired_exactly_under_either_rest_time_convention(zone_collector: CollectorProcess) -> None:
    covered = _run_with_an_outage(zone_collector)
    _verdict(zone_collector, *covered)
    assert _points_match_missing_candles(zone_collector) > 28  # the outage cost every pair a bucket or more


def test_a_spread_bet_account_stores_the_cfd_ground_truth(spreadbet_collector: CollectorProcess) -> None:
    covered = _run_with_an_outage(spreadbet_collector)
    _verdict(spreadbet_collector, *covered)
    _points_match_missing_candles(spreadbet_collector)
    with psycopg.connect(spreadbet_collector.db_url) as conn:
        top = conn.execute("SELECT max(ask_high) FROM candles").fetchone()[0]
    assert top < 300  # FX rates (the highest, GBPJPY, near 190), not spread-bet points (19,000)


def test_streams_over_http_when_websockets_are_refused_for_the_whole_run(
    no_websocket_collector: CollectorProcess,
) -> None:
    c = no_websocket_collector
    c.start()
    wait_for(lambda: _streaming(c), 60, "the collector to stream")
    t0 = c.sim.now_ms()
    assert c.metric(f"{PREFIX}_stream_transport", transport="HTTP-STREAMING") == 1
    assert c.metric(f"{PREFIX}_stream_transport", transport="WS-STREAMING") == 0
    time.sleep(12)
    covered_to = _settle_and_stop(c)
    _verdict(c, t0, covered_to)
    assert '"transport": "HTTP-STREAMING"' in c.log_text()
    stats = c.sim.stats()
    assert stats["binds_by_transport"]["WS-STREAMING"] == 0 and stats["sessions_created"] == 1
