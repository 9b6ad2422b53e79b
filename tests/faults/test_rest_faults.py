"""REST (the repair path) failing: the allowance spent, the gateway answering errors. Repairs are
never lost: they wait (pending, reported) and happen once REST answers again; when REST never
answers, the buckets are declared unrecoverable - reported, never passed off as complete. The
REST gateway sits behind a counting proxy, so "no REST use" is a count of requests."""

from __future__ import annotations

import time

import pytest

from collector.simulator.rest import WEEK_MS

from .kit import MIN, Scenario, wait_for

pytestmark = pytest.mark.timeout(240)
PRICES = "GET /prices/"


def _allowance_resets_in(s: Scenario, minutes: float) -> None:
    """IG's allowance resets weekly; a test cannot wait a week. Move the simulator's allowance
    period so that it resets `minutes` of simulated time from now."""

    def move(core) -> None:  # runs on the simulator's loop
        core.allowance.period_start_ms = core.clock.now_ms() - WEEK_MS + int(minutes * MIN)

    s.sim._call(move)


def _first_repairs_done(s: Scenario) -> None:
    """Wait until the start-up 5m bucket (partial: the collector began inside it) is replaced
    from REST and nothing else is due; the fault that follows meets only later repairs."""

    def done() -> bool:
        (resolved,) = s.sql("SELECT count(*) FROM candle_repairs WHERE resolution = 'rest'")[0]
        return resolved >= 28 and s.unresolved_before(s.sim.now_ms()) == 0

    wait_for(done, 60, "the start-up 5m bucket to be replaced from REST")


def _gap(s: Scenario) -> tuple[int, float]:
    """A stream drop mid-bucket, recovered: (simulated time of the drop, wall time recovered)."""
    s.sleep_until_phase("5m", 1.0, min_wait_min=1)
    at, sessions, t = s.sim.now_ms(), s.sessions(), time.monotonic()
    s.sim.drop_connections("abort")
    s.recovered_within(t, sessions, what="the drop")
    return at, time.monotonic()


def test_allowance_exhausted_during_a_backfill_waits_for_the_reset(scenario) -> None:
    """The allowance is spent just before a gap: the repair's request is refused (403), no
    crash, the repairs stay pending and are reported (metric, log) - a second gap adds to them -
    and no REST request is made until the allowance's expiry, known from the last successful
    answer. After the reset exactly the flagged buckets are bought and replaced: one point per
    candle, and the clean buckets between the two gaps stay stream candles."""
    s = scenario(
        "REST allowance exhausted before two gaps",
        "set_allowance(0), then two stream drops; the allowance resets 40 simulated minutes after start",
        rest_proxy=True,
    )
    assert s.rest_proxy is not None
    _allowance_resets_in(s, 40)
    reset_at = s.sim.now_ms() + 40 * MIN
    t0 = s.start()

    _first_repairs_done(s)  # their answer carries the allowance's expiry
    s.sim.set_allowance(0)
    requests = s.rest_proxy.count(PRICES)
    first, _ = _gap(s)
    wait_for(lambda: s.metric("rest_exhausted") == 1, 60, "the refused repair to mark REST exhausted")
    refused_at = s.rest_proxy.count(PRICES)
    assert refused_at == requests + 1, "one refused request, then REST use stops"
    assert s.logged("REST allowance exhausted") >= 1
    s.sleep_until_phase("5m", 1.0, min_wait_min=6)
    second, _ = _gap(s)
    assert s.sim.now_ms() < reset_at - 2 * MIN, "the scenario needs both gaps well before the reset"
    wait_for(lambda: s.metric("repairs_pending") > 0, 30, "the waiting repairs to be reported")
    pending = int(s.metric("repairs_pending"))
    assert s.proc.alive()
    wait_for(lambda: s.sim.now_ms() >= reset_at - MIN, 60, "the minute before the reset")
    assert s.rest_proxy.count(PRICES) == refused_at, "no REST request while the allowance is spent"
    assert s.metric("repairs_pending") >= pending, "the repairs are still pending, not dropped"
    t_reset = time.monotonic()
    wait_for(lambda: s.metric("rest_exhausted") == 0, 60, "REST use to resume after the reset")
    s.recoveries.append(round(time.monotonic() - t_reset, 2))
    s.collect(4)
    s.recovered = "repairs pending and reported while spent; no REST use until the reset; then repaired"
    s.notes["repairs_pending_peak"] = pending
    s.notes["rest_requests_while_spent"] = 0
    s.finish(t0)
    s.assert_from_rest([first - first % (5 * MIN), second - second % (5 * MIN)])
    (repaired,) = s.sql("SELECT count(*) FROM candle_repairs WHERE resolution = 'rest'")[0]
    assert s.notes["rest_points"] == repaired, "REST points spent on buckets that needed no repair"
    between = s.sql(
        "SELECT DISTINCT source FROM candles c WHERE timeframe = '5m' AND bucket > to_timestamp(%s / 1000.0) "
        "AND bucket + interval '5 min' <= to_timestamp(%s / 1000.0) AND NOT EXISTS (SELECT 1 FROM candle_repairs r "
        "WHERE r.pair = c.pair AND r.timeframe = c.timeframe AND r.bucket = c.bucket)",
        first,
        second - second % (5 * MIN),
    )
    assert between == [("stream",)], f"the clean buckets between the gaps were replaced: {between}"


def test_rest_errors_are_retried_until_the_repairs_succeed(scenario) -> None:
    """The gateway answers HTTP 500 to the next 80 price requests (more than one pass of the
    gap's repairs): each failure is counted and retried; every bucket is repaired in the end."""
    s = scenario("REST errors, then recovery", "fail_rest(80, 500) before a stream drop", rest_proxy=True)
    assert s.rest_proxy is not None
    t0 = s.start()
    _first_repairs_done(s)
    s.sim.fail_rest(80, 500)
    drop_at, _ = _gap(s)
    t = time.monotonic()
    wait_for(lambda: s.sim.stats()["rest_errors_pending"] == 0, 60, "the 80 failures to be spent by repairs")
    wait_for(lambda: s.metric("rest_errors_total") == 80, 30, "each failure to be counted")
    s.collect(4)
    s.recovered = "each 500 counted and retried; all repaired"
    s.finish(t0)
    s.recoveries.append(round(time.monotonic() - t, 2))
    assert s.repairs_by_resolution().keys() <= {"rest", "composed"}, s.repairs_by_resolution()
    retried = s.sql("SELECT count(*) FROM candle_repairs WHERE attempts > 1")[0][0]
    assert retried > 0, "some buckets needed more than one attempt"
    s.notes["retried_buckets"] = retried
    s.assert_from_rest([drop_at - drop_at % (5 * MIN)])


@pytest.mark.slow
def test_rest_failing_for_good_reports_the_buckets_unrecoverable(scenario) -> None:
    """The gateway never answers again: after 5 attempts each, the gap's buckets are declared
    unrecoverable - counted, logged, and their partial stream rows left incomplete. Nothing is
    passed off as complete; every missing candle is accounted for."""
    s = scenario("REST failing for good", "fail_rest(100000, 503) before a stream drop", rest_proxy=True)
    t0 = s.start()
    _first_repairs_done(s)
    s.sim.fail_rest(100_000, 503)
    drop_at, _ = _gap(s)
    gap_5m = drop_at - drop_at % (5 * MIN)

    def all_declared() -> bool:
        ((open_, declared, gap),) = s.sql(
            "SELECT count(*) FILTER (WHERE resolved_at IS NULL), count(*) FILTER (WHERE resolution = 'unrecoverable'), "
            "count(*) FILTER (WHERE resolution = 'unrecoverable' AND timeframe = '5m' "
            "AND bucket = to_timestamp(%s / 1000.0)) FROM candle_repairs",
            gap_5m,
        )
        return open_ == 0 and gap > 0 and s.metric("repairs_total", outcome="unrecoverable") == declared

    wait_for(all_declared, 120, "every flagged bucket to be declared unrecoverable after 5 attempts")
    ((declared,),) = s.sql("SELECT count(*) FROM candle_repairs WHERE resolution = 'unrecoverable'")
    assert s.logged("could not be repaired from REST") == declared
    s.collect(2)
    s.recovered = "buckets declared unrecoverable (metric, log); partial rows left incomplete"
    v = s.finish(t0)
    assert len(v.cmp.missing) > 0 and set(v.cmp.missing) <= v.reported
    rows = s.sql(
        "SELECT DISTINCT complete FROM candles WHERE timeframe = '5m' AND bucket = to_timestamp(%s / 1000.0)", gap_5m
    )
    assert rows in ([], [(False,)]), f"the gap's partial rows stay incomplete: {rows}"
    s.notes["unrecoverable"] = declared
