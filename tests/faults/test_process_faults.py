"""The collector process killed with SIGKILL in the middle of a bucket and started again: the open
bucket is resumed from what was stored (no high, low or tick count lost), and the time it was
down is backfilled from REST and marked `rest`."""

from __future__ import annotations

import time

import pytest

from collector.store import ms_to_dt

from .kit import MIN, buckets_between, wait_for

pytestmark = pytest.mark.timeout(240)


def _forming(s, bucket_ms: int) -> dict[str, tuple]:
    """The stored forming 15m rows of `bucket_ms`: pair -> (bid_open, ask_open, bid_high, bid_low, ticks)."""
    rows = s.sql(
        "SELECT pair, bid_open, ask_open, bid_high, bid_low, ticks FROM candles "
        "WHERE timeframe = '15m' AND bucket = %s AND source = 'stream' AND NOT complete",
        ms_to_dt(bucket_ms),
    )
    return {r[0]: tuple(r[1:]) for r in rows}


def test_kill9_mid_bucket_resumes_the_open_bucket_and_backfills_the_downtime(scenario) -> None:
    s = scenario(
        "kill -9 mid-bucket, restart",
        "SIGKILL 1 simulated minute into a 15m bucket; restarted 7 simulated minutes later",
    )
    t0 = s.start()
    s.sleep_until_phase("15m", 1.0, min_wait_min=1)
    b15 = s.sim.now_ms() - s.sim.now_ms() % (15 * MIN)
    time.sleep(1.5)  # one forming interval: the open bucket is stored as it stands
    s.proc.kill9()
    killed_at = s.sim.now_ms()
    at_kill = _forming(s, b15)
    assert len(at_kill) == 28, f"every pair's open 15m bucket is stored before the kill: {len(at_kill)}"
    s.collect(7)
    t_restart = time.monotonic()
    s.proc.start()
    s.recovered_within(t_restart, what="the restarted collector")
    restarted_at = s.sim.now_ms()
    assert restarted_at < b15 + 15 * MIN, "the restart must land in the same 15m bucket"
    resumed = [r for r in s.log_records() if r.get("msg") == "resumed open buckets"][-1]
    assert resumed["candles"] >= 28

    def grown() -> bool:
        now = _forming(s, b15)
        return all(p in now and now[p][4] > at_kill[p][4] for p in at_kill)

    wait_for(grown, 30, "every resumed 15m bucket to take new ticks")
    now = _forming(s, b15)
    for pair, (bo, ao, hi, lo, n) in at_kill.items():
        bo2, ao2, hi2, lo2, n2 = now[pair]
        assert (bo2, ao2) == (bo, ao), f"{pair}: the resumed bucket keeps its open"
        assert hi2 >= hi and lo2 <= lo and n2 > n, f"{pair}: high, low and tick count carried over"
    s.collect(4)
    s.recovered = "open 15m bucket resumed (open/high/low/count kept); downtime replaced from REST"
    s.notes["down_sim_minutes"] = round((restarted_at - killed_at) / MIN, 1)
    s.finish(t0)
    down = buckets_between(killed_at, restarted_at, "5m")
    assert down, "the downtime spans at least one whole 5m bucket"
    s.assert_from_rest(down)
    s.assert_from_rest([killed_at - killed_at % (5 * MIN)])  # the bucket the kill cut in two
    s.assert_from_rest([b15], "15m")  # resumed, and still partial: replaced once closed
