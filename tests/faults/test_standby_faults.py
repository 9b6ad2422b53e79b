"""A standby collector and a database failover (issue 18), with real processes and real clusters.

Two `ig-collector run` processes (nodes `a` and `b`) share the simulator and one database; `a`
starts first and leads, `b` stands by without an IG stream. Each scenario kills, freezes or cuts
off the leader, waits for `b` to take over, and is then judged like every fault scenario (ground
truth + the audit: nothing unaccounted, every complete candle equal to ground truth) and by what
only two writers can break: `leader_overlaps` is empty, every candle and tick row was written by
a fenced transaction within its epoch's lease, and successive epochs' tick rows do not interleave.

The database failover runs one collector against a replicated pair of clusters (pgpair.py)
through libpq's multi-host URL, stops the primary hard and promotes the replica.

The takeover measurement (>= 10 takeovers) is marked slow:

    FAULTS_SLOW=1 .venv/bin/pytest tests/faults/test_standby_faults.py -k takeover_times -s

It prints p50/max takeover seconds and the REST points each takeover cost, and writes them to
`FAULTS_RESULTS` (as every scenario does) and to `<FAULTS_RESULTS stem>-takeovers.json` beside it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from collector.config import load_settings
from collector.migrate import migrate
from tests.e2e.harness import start_simulator

from .kit import MIN, Scenario, buckets_between, wait_for
from .pgpair import PgPair, available
from .standby_kit import LEASE_S, TAKEOVER_LIMIT_S, Duo, fault_now, sim_minutes, summary, takeover_results_path

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def duo(scenario: Callable[..., Scenario]) -> Iterator[Callable[..., Duo]]:
    """`duo(name, fault, env=..., db_proxies=True)`: a scenario with two collectors; both are
    killed at the end if still alive (before the scenario's own teardown records it)."""
    made: list[Duo] = []

    def make(name: str, fault: str, *, db_proxies: bool = False, names: tuple[str, ...] = ("a", "b"), **kw: Any) -> Duo:
        d = Duo.of(scenario(name, fault, **kw), names, db_proxies=db_proxies)
        made.append(d)
        return d

    yield make
    for d in made:
        for n in d.nodes:
            if n.proc.alive():
                if n.proc.proc is not None:
                    n.thaw()
                n.proc.kill9()
            if n.db_proxy is not None:
                n.db_proxy.stop()


def _assert_gap_repaired(d: Duo, lost_from_ms: int, lost_to_ms: int) -> None:
    """Every 5m bucket the takeover left without a writer, and the one the fault cut in two, is
    stored complete from REST."""
    whole = buckets_between(lost_from_ms, lost_to_ms, "5m")
    d.s.assert_from_rest([lost_from_ms - lost_from_ms % (5 * MIN), *whole])


def test_leader_kill9_the_standby_leads_within_15_s_and_repairs_the_gap(duo) -> None:
    d = duo("standby takes over after kill -9", "leader SIGKILLed 1 simulated minute into a 5m bucket")
    a = d.nodes[0]
    t0 = d.start()
    d.s.sleep_until_phase("5m", 1.0, min_wait_min=2)
    killed_ms = d.s.sim.now_ms()
    fault_at, mono = fault_now()
    a.proc.kill9()
    t = d.await_takeover(a, fault_at, mono)
    assert t.to_leader_s < TAKEOVER_LIMIT_S, f"takeover took {t.to_leader_s} s"
    led_ms = d.s.sim.now_ms()
    d.s.recoveries.append(t.to_first_tick_s)
    d.s.collect(6)
    d.s.recovered = "standby took over and repaired the dead leader's gap from REST"
    d.s.notes["gap_sim_minutes"] = sim_minutes(killed_ms, led_ms)
    d.finish(t0)
    assert [(e, h) for e, h, *_ in d.epochs()] == [(1, "a"), (2, "b")]
    assert d.epochs()[0][4] == "taken_over"
    _assert_gap_repaired(d, killed_ms, led_ms)


def test_leader_kill9_and_restarted_on_its_own_host_takes_its_lease_back_without_waiting_it_out(duo) -> None:
    d = duo(
        "leader restarted on its own host after kill -9",
        "the only collector SIGKILLed 1 simulated minute into a 5m bucket and started again at once, as systemd does",
        names=("a",),
    )
    (a,) = d.nodes
    t0 = d.start()
    d.s.sleep_until_phase("5m", 1.0, min_wait_min=2)
    killed_ms = d.s.sim.now_ms()
    a.proc.kill9()
    a.proc.start()
    wait_for(lambda: a.leads() and a.metric("leader_epoch") == 2, 3 * TAKEOVER_LIMIT_S, "a to lead again", interval=0.1)
    led_ms = d.s.sim.now_ms()
    wait_for(lambda: d.first_tick_commit(2) is not None, 30, "epoch 2's first tick rows")
    d.s.collect(6)
    d.s.recovered = "the restarted collector reclaimed its dead predecessor's lease and repaired the gap from REST"
    d.s.notes["gap_sim_minutes"] = sim_minutes(killed_ms, led_ms)
    d.finish(t0)
    (_, _, _, until, reason), (_, _, since, _, _) = d.epochs()
    assert [(e, h) for e, h, *_ in d.epochs()] == [(1, "a"), (2, "a")]
    assert reason == "restarted"  # taken back while its lease was still live, not after it lapsed
    assert until == since
    _assert_gap_repaired(d, killed_ms, led_ms)


def test_leader_frozen_past_its_lease_stands_by_when_resumed_and_no_interval_has_two_writers(duo) -> None:
    d = duo("leader frozen past its lease, resumed", "SIGSTOP the leader for 20 s (lease 10 s), then SIGCONT")
    a, b = d.nodes
    t0 = d.start()
    d.s.sleep_until_phase("5m", 1.0, min_wait_min=2)
    frozen_ms = d.s.sim.now_ms()
    fault_at, mono = fault_now()
    a.freeze()
    t = d.await_takeover(a, fault_at, mono)
    assert t.to_leader_s < TAKEOVER_LIMIT_S, f"takeover took {t.to_leader_s} s"
    led_ms = d.s.sim.now_ms()
    while time.monotonic() - mono < 20:
        time.sleep(0.2)
    standing_by = a.logged("standing by")
    a.thaw()
    wait_for(lambda: a.stands_by() and a.logged("standing by") > standing_by, 30, "the resumed leader to stand by")
    assert b.leads() and not a.leads()
    d.s.collect(6)
    d.s.recovered = "the resumed leader stood by, fenced; the standby's epoch wrote alone"
    d.finish(t0)
    assert [(e, h) for e, h, *_ in d.epochs()] == [(1, "a"), (2, "b")]
    stale = d.s.sql("SELECT count(*) FROM flush_log WHERE epoch = 1 AND logged_at >= %s", d.epochs()[1][2])[0][0]
    assert stale == 0, "the frozen leader wrote after the standby took over"
    _assert_gap_repaired(d, frozen_ms, led_ms)


def test_leaders_database_connection_cut_the_standby_takes_over_and_the_old_one_stands_by(duo) -> None:
    d = duo(
        "leader's database connection cut",
        "the leader's PostgreSQL proxy cut for 25 s (the standby's stays up), then restored",
        db_proxies=True,
        env={"COLLECTOR_DB_RETRY_MAX_S": "2"},
    )
    a, b = d.nodes
    t0 = d.start()
    d.s.sleep_until_phase("5m", 1.0, min_wait_min=2)
    cut_ms = d.s.sim.now_ms()
    fault_at, mono = fault_now()
    a.cut_db()
    t = d.await_takeover(a, fault_at, mono)
    assert t.to_leader_s < TAKEOVER_LIMIT_S, f"takeover took {t.to_leader_s} s"
    led_ms = d.s.sim.now_ms()
    wait_for(lambda: a.stands_by(), 30, "the cut-off leader to stop streaming and stand by")
    while time.monotonic() - mono < 25:
        time.sleep(0.2)
    a.heal_db()
    time.sleep(3)  # a few of its ~1 s acquire polls, now answered: the lease is b's
    assert a.stands_by() and b.leads()
    d.s.collect(5)
    d.s.recovered = "the standby took over; the cut-off leader stood by and stayed so once reconnected"
    d.finish(t0)
    assert [(e, h) for e, h, *_ in d.epochs()] == [(1, "a"), (2, "b")]
    _assert_gap_repaired(d, cut_ms, led_ms)


def test_rolling_restart_of_both_collectors_moves_leadership_once_and_loses_nothing(duo) -> None:
    d = duo("rolling restart of both collectors", "SIGTERM + start the standby, then the same for the leader")
    a, b = d.nodes
    t0 = d.start()
    d.s.sleep_until_phase("5m", 1.0, min_wait_min=2)
    d.stop(b)
    d.start_standby(b)
    assert a.leads(), "restarting the standby does not move leadership"
    d.s.collect(2)
    fault_at, mono = fault_now()
    d.stop(a)
    t = d.await_takeover(a, fault_at, mono)
    d.s.recoveries.append(t.to_first_tick_s)
    d.start_standby(a)
    d.s.collect(6)
    d.s.recovered = "leadership moved once, at the leader's stop (stepped down); the handover repaired from REST"
    d.finish(t0)
    assert [(e, h) for e, h, *_ in d.epochs()] == [(1, "a"), (2, "b")]
    d.s.notes["leader_stop_ended_epoch_as"] = d.epochs()[0][4]


# --- database failover -----------------------------------------------------------------------

FULL_RATE = 1000.0  # ticks/s: what two shared cores sustain beside other scenarios (2,000 overflowed the queue)
FAILOVER_LEASE_S = "20"  # a lease longer than the failover: the leader keeps its epoch and its buffer


@pytest.fixture
def pair_scenario(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Scenario, PgPair]]:
    """One collector on a fresh database of a replicated pair, through the multi-host URL, with
    synchronous replication: a commit the collector saw is on the replica, so the failover can
    be asked to lose nothing (asynchronously, the last commits before a hard stop are lost with
    the primary, and no client can know to write them again)."""
    if why := available():
        pytest.skip(why)
    pair = PgPair.start()
    sim = None
    s: Scenario | None = None
    try:
        with psycopg.connect(pair.primary.url(), autocommit=True) as c:
            c.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
            c.execute("SELECT pg_reload_conf()")
        wait_for(lambda: pair_sync(pair) == "sync", 30, "the replica to be a synchronous standby", interval=0.1)
        url = pair.create_database("collector")  # a pair of its own: one database
        migrate(url, load_settings())
        sim = start_simulator(ticks_per_second=FULL_RATE)
        s = Scenario(
            "primary database failover at full rate",
            f"primary stopped hard (pg_ctl stop -m immediate) at {FULL_RATE:.0f} ticks/s, replica promoted",
            sim,
            url,
            tmp_path,
            url,
            {
                "COLLECTOR_LEASE_S": FAILOVER_LEASE_S,
                "COLLECTOR_DB_RETRY_MAX_S": "2",
                "COLLECTOR_NODE_NAME": "a",
                # A stalled consumer on a loaded box is not this scenario's fault: silence must
                # last 10 s of wall time before the stream is called stale and reconnected.
                "COLLECTOR_STALE_AFTER_S": "600",
            },
        )
        yield s, pair
    finally:
        if s is not None:
            if s.proc.alive():
                s.proc.kill9()
            s.notes["line"] = request.node.location[1]
            s.write_record(getattr(request.node, "faults_outcome", "error"), request.node.nodeid)
        if sim is not None:
            sim.stop()
        pair.cleanup()


def pair_sync(pair: PgPair) -> str | None:
    with psycopg.connect(pair.primary.url(), autocommit=True) as c:
        row = c.execute("SELECT sync_state FROM pg_stat_replication").fetchone()
    return None if row is None else str(row[0])


@pytest.mark.timeout(300)
def test_primary_failover_at_full_rate_the_collector_writes_everything_to_the_promoted_replica(
    pair_scenario: tuple[Scenario, PgPair],
) -> None:
    s, pair = pair_scenario
    t0 = s.start()
    epoch = s.metric("leader_epoch")
    s.sleep_until_phase("5m", 1.0, min_wait_min=2)
    fail_ms = s.sim.now_ms()
    since = time.monotonic()
    pair.stop_primary_hard()
    wait_for(lambda: s.metric("db_up") == 0, 30, "the collector to notice the primary is gone")
    s.notes["promote_s"] = round(pair.promote(), 2)
    assert s.metric("stream_connected") == 1, "a database failover must not touch the stream"
    s.recovered_within(since, what="writes to the promoted replica")
    written, buffered = s.metric("ticks_written_total"), s.metric("buffer_ticks")
    wait_for(lambda: s.metric("ticks_written_total") >= written + buffered, 60, "the buffer to drain")
    back_ms = s.sim.now_ms()
    assert (s.metric("leader"), s.metric("leader_epoch")) == (1, epoch), "the lease outlived the failover"
    s.collect(4)
    s.db_url = pair.replica.url("collector")  # the verdict reads the promoted server itself
    assert s.sql("SELECT pg_is_in_recovery()") == [(False,)]
    s.recovered = "buffered through the failover; reconnected to the promoted replica; every row written"
    s.finish(t0)
    assert [(int(e), h) for e, h in s.sql("SELECT epoch, holder FROM leader_history ORDER BY epoch")] == [(1, "a")]
    assert s.notes["ticks_dropped"] == 0
    _assert_failover_lost_no_tick(s, fail_ms, back_ms)
    s.notes["failover_sim_minutes"] = sim_minutes(fail_ms, back_ms)
    for tf in ("5m", "15m"):
        bs = buckets_between(fail_ms, back_ms, tf)
        if bs:
            rows = s.sql(
                "SELECT DISTINCT source FROM candles WHERE timeframe = %s AND bucket >= to_timestamp(%s / 1000.0) "
                "AND bucket <= to_timestamp(%s / 1000.0)",
                tf,
                bs[0],
                bs[-1],
            )
            assert rows == [("stream",)], f"{tf} buckets of the failover came from {rows}, not only the stream"


def _assert_failover_lost_no_tick(s: Scenario, fail_ms: int, back_ms: int) -> None:
    """No tick row is foreign, and every ground-truth tick missing from the promoted server is
    one the collector never accepted and said so: it lies in a bucket it flagged (a stream gap,
    a tick rejected as too late behind a consumer lagging on a loaded box), and there are no more
    of them than it counted as rejected or lost. A row lost by the failover itself - a commit the
    collector believed stored - is caught by the audit in the verdict: the candle then counts
    more ticks than the table holds."""
    rows = s.sql("SELECT pair, (extract(epoch FROM time) * 1000)::bigint, bid, ask FROM ticks")
    stored = {(p, int(t), b, a) for p, t, b, a in rows}
    truth = {(t.pair, t.time_ms, t.bid, t.ask) for t in s.sim.ticks()}
    assert stored - truth == set(), f"{len(stored - truth)} tick rows are not ground truth"
    span: dict[str, tuple[int, int]] = {}  # each pair's first and last stored tick
    for p, t, _, _ in stored:
        lo, hi = span.get(p, (t, t))
        span[p] = (min(lo, t), max(hi, t))
    missing = {(p, t) for p, t, _, _ in truth - stored if p in span and span[p][0] <= t <= span[p][1]}
    flagged = {
        (p, int(b.timestamp() * 1000))
        for p, b in s.sql("SELECT pair, bucket FROM candle_repairs WHERE timeframe = '5m'")
    }
    unreported = sorted(k for k in missing if (k[0], k[1] - k[1] % (5 * MIN)) not in flagged)
    assert unreported == [], f"{len(unreported)} ticks missing outside any reported bucket, e.g. {unreported[:5]}"
    window = fail_ms - fail_ms % (5 * MIN), back_ms - back_ms % (5 * MIN) + 5 * MIN
    s.notes["tick_rows_checked"] = len(stored)
    s.notes["ticks_missing_reported"] = len(missing)
    s.notes["ticks_missing_reported_in_failover_buckets"] = sum(1 for k in missing if window[0] <= k[1] < window[1])
    if s.notes["reconnects"] == 0:  # a stream gap loses ticks it cannot count
        assert len(missing) <= s.notes["rejected"], f"{len(missing)} ticks missing, {s.notes['rejected']} rejected"


# --- measurement ---------------------------------------------------------------------------

TAKEOVERS = 10


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_takeover_times_over_ten_kill9_takeovers(duo) -> None:
    d = duo(
        "takeover times over 10 kill -9 takeovers",
        f"{TAKEOVERS} times: kill -9 whichever node leads, restart it as the standby",
    )
    t0 = d.start()
    wait_for(lambda: d.s.unresolved_before(d.s.sim.now_ms()) == 0, 120, "the first start's repairs to finish")
    costs: list[int] = []
    for _ in range(TAKEOVERS):
        lead = d.leader()
        assert lead is not None
        d.s.sleep_until_phase("5m", 1.0, min_wait_min=1)
        fault_at, mono = fault_now()
        lead.proc.kill9()
        t = d.await_takeover(lead, fault_at, mono)
        d.start_standby(lead)
        # Until the 15m bucket the gap touched has closed and every repair is done, so the
        # points spent are this takeover's alone.
        d.s.collect(16)
        wait_for(lambda: d.s.unresolved_before(d.s.sim.now_ms()) == 0, 120, "the takeover's repairs to finish")
        costs.append(d.rest_points_since(t.fault_at))
    figures = {
        "to_leader_s": summary([t.to_leader_s for t in d.takeovers]),
        "to_first_tick_s": summary([t.to_first_tick_s for t in d.takeovers]),
        "rest_points_per_takeover": costs,
        "rest_points": summary([float(c) for c in costs]),
        "lease_s": LEASE_S,
        "takeovers": [t.as_json() for t in d.takeovers],
    }
    # Written before the verdict: the figures stand even when a later check fails.
    d.s.notes["measurement"] = figures
    takeover_results_path().write_text(json.dumps(figures, indent=2, sort_keys=True))
    print(f"\ntakeover (kill -9 -> ig_collector_leader=1): {figures['to_leader_s']}")
    print(f"takeover (kill -9 -> first tick committed by the new epoch): {figures['to_first_tick_s']}")
    print(f"REST points per takeover: {costs} {figures['rest_points']}")
    d.s.recovered = f"{TAKEOVERS} takeovers, each gap repaired from REST"
    d.finish(t0)
    assert figures["to_leader_s"]["max"] < TAKEOVER_LIMIT_S
