"""Faults between the collector's own parts (issue 9): a stop, an exception or a permanent error
inside the process rather than at its edges. After each, the audit finds nothing unaccounted and
every complete candle equals ground truth.

- kill -9 while the REST repair worker has a backlog, restart, SIGTERM, a final start: the flags
  the restart raised must outlive the stop;
- SIGTERM while the database is away and a flag is pending: it is spooled to disk and committed
  by the next start;
- an exception in the consumer mid-batch (tests/faults/inject): the batch's buckets are flagged;
- a row the database refuses for good: quarantined, and the writer goes on;
- a consumer far slower than the stream for 60 s: the queue overflows, flags stay bounded, every
  overflowed bucket is repaired.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg
import pytest

from collector.store import ms_to_dt

from .kit import MIN, Scenario, buckets_between, wait_for

pytestmark = pytest.mark.timeout(300)

INJECT = Path(__file__).parent / "inject"


def _injectable(s: Scenario) -> Path:
    control = s.workdir / "inject"
    control.mkdir(exist_ok=True)
    s.proc.env_extra["PYTHONPATH"] = str(INJECT)
    s.proc.env_extra["FAULT_INJECT_DIR"] = str(control)
    return control


def _pending(s: Scenario) -> int:
    return int(s.sql("SELECT count(*) FROM candle_repairs WHERE resolved_at IS NULL")[0][0])


def test_flags_raised_behind_a_repair_backlog_survive_kill9_restart_and_sigterm(scenario) -> None:
    s = scenario(
        "kill -9 during a repair backlog, restart, SIGTERM, start",
        "REST paced at 2 requests/min so repairs queue up; kill -9, restart 9 sim min later, SIGTERM "
        "while the restart's flags wait behind the backlog, then a final start with REST at full pace",
        env={"COLLECTOR_REST_REQUESTS_PER_MINUTE": "2"},
    )
    t0 = s.start()
    s.sleep_until_phase("5m", 2.0, min_wait_min=3)
    s.proc.kill9()
    killed_at = s.sim.now_ms()
    s.collect(9)
    s.proc.start()
    s.recovered_within(time.monotonic(), what="the restarted collector")
    restarted_at = s.sim.now_ms()
    wait_for(lambda: s.logged("gap flagged for REST repair") >= 1, 30, "the restart to flag the downtime")
    down = buckets_between(killed_at, restarted_at, "5m")
    assert down, "the downtime spans at least one whole 5m bucket"
    flagged = s.sql(
        "SELECT count(*) FROM candle_repairs WHERE timeframe = '5m' AND bucket = ANY(%s)", [ms_to_dt(b) for b in down]
    )[0][0]
    assert flagged >= 28 * len(down), f"the restart's flags are on disk at once: {flagged}"
    backlog = _pending(s)
    assert backlog > 10, f"a repair backlog waits behind the REST pace: {backlog}"
    s.stop()  # SIGTERM: what systemctl restart does
    assert _pending(s) >= backlog - 4, "the stop drops no flag"
    s.proc.env_extra["COLLECTOR_REST_REQUESTS_PER_MINUTE"] = "6000"
    s.proc.start()
    s.recovered_within(time.monotonic(), what="the final start")
    s.collect(3)
    s.recovered = "every flag outlived the stop; the downtime replaced from REST"
    s.notes["backlog_at_sigterm"] = backlog
    s.finish(t0)
    s.assert_from_rest(down)


def test_sigterm_while_the_database_is_away_spools_the_flags_for_the_next_start(scenario) -> None:
    s = scenario(
        "SIGTERM during a database outage with a flag pending",
        "PostgreSQL cut; a too-late tick flags a bucket from before the outage; SIGTERM; database back; start",
        db_proxy=True,
        env={"COLLECTOR_DB_RETRY_MAX_S": "2"},
    )
    t0 = s.start()
    s.sleep_until_phase("5m", 1.0, min_wait_min=3)
    assert s.db_proxy is not None
    s.db_proxy.stop()
    cut_at = s.sim.now_ms()
    wait_for(lambda: s.metric("db_up") == 0, 30, "the collector to notice the database is gone")
    # A tick for a bucket that closed before the outage, past the lateness window: only the
    # flag it raises records that this bucket is short; the next start cannot re-derive it.
    late = s.sim.inject_late_tick("EURUSD", age_ms=s.sim.now_ms() - cut_at + 4 * MIN)
    late_bucket = late.time_ms - late.time_ms % (5 * MIN)
    wait_for(lambda: s.metric("late_ticks_total", outcome="dropped") >= 1, 30, "the too-late tick to be counted")
    s.stop()
    spool = s.workdir / "state" / "unwritten-flags.json"
    spooled = json.loads(spool.read_text())["flags"]
    assert ["EURUSD", "5m", late_bucket, "late_tick"] in spooled, spooled[:5]
    s.db_proxy.start()
    s.proc.start()
    s.recovered_within(time.monotonic(), what="the collector after the outage")
    assert not spool.exists(), "the start commits the spool, then removes it"
    s.collect(3)
    s.recovered = "the pending flag was spooled at the stop and committed by the next start"
    s.notes["flags_spooled"] = len(spooled)
    s.finish(t0)
    s.assert_from_rest([late_bucket], pairs=["EURUSD"])


def test_an_exception_in_the_consumer_mid_batch_flags_the_batchs_buckets(scenario) -> None:
    s = scenario(
        "consumer exception mid-batch",
        "the pipeline raises on one drained batch (test hook loaded through PYTHONPATH only)",
    )
    control = _injectable(s)
    t0 = s.start()
    s.sleep_until_phase("5m", 1.0, min_wait_min=2)
    (control / "raise").write_text("")
    wait_for(lambda: not (control / "raise").exists(), 30, "the injected exception to fire")
    wait_for(lambda: s.logged("consumer failed on a batch") >= 1, 30, "the consumer to log the failed batch")
    s.collect(6)
    s.recovered = "the failed batch's buckets flagged and replaced from REST; the consumer went on"
    s.finish(t0)
    rows = s.sql("SELECT resolution, count(*) FROM candle_repairs WHERE reason = 'consumer_error' GROUP BY 1")
    # Replaced from REST; a bucket still open at the end (a 15m one) may still wait for its turn.
    assert dict(rows).get("rest", 0) >= 1 and set(dict(rows)) <= {"rest", None}, rows
    s.notes["consumer_error_buckets"] = sum(int(n) for _, n in rows)


def test_a_row_the_database_refuses_for_good_is_quarantined_and_the_writer_goes_on(scenario) -> None:
    s = scenario(
        "a row refused for good",
        "a CHECK constraint refuses EURUSD ticks for 30 simulated seconds",
    )
    t0 = s.start()
    s.sleep_until_phase("5m", 1.0, min_wait_min=2)
    now = s.sim.now_ms()
    lo, hi = ms_to_dt(now + 20_000), ms_to_dt(now + 50_000)
    with psycopg.connect(s.db_url, autocommit=True) as conn:
        conn.execute(
            "ALTER TABLE ticks ADD CONSTRAINT fault_refuse "
            f"CHECK (NOT (pair = 'EURUSD' AND time BETWEEN '{lo}' AND '{hi}'))"
        )
    wait_for(lambda: s.metric("rows_quarantined_total", kind="tick") >= 1, 60, "refused tick rows to be quarantined")
    written = s.metric("ticks_written_total")
    s.collect(3)
    assert s.metric("ticks_written_total") > written, "the writer goes on after the refused rows"
    s.recovered = "refused rows quarantined with the database's error; every other row written"
    s.finish(t0)
    quarantined = s.sql("SELECT count(*), min(sqlstate), max(sqlstate) FROM quarantine WHERE kind = 'tick'")[0]
    assert quarantined[0] >= 1 and quarantined[1:] == ("23514", "23514")
    assert s.logged("the database refused rows for good") == 1, "logged once, not once per flush"
    s.notes["quarantined_ticks"] = int(quarantined[0])


@pytest.mark.timeout(360)
def test_a_consumer_far_slower_than_the_stream_for_60_s_loses_nothing_silently(scenario) -> None:
    s = scenario(
        "overload past the consumer's capacity for 60 s",
        "the consumer sleeps 10 ms per update (about 100 updates/s) for 60 s wall while the stream sends "
        "1,000 ticks/s; the queue is bound at 1,000 updates",
        sim={"ticks_per_second": 1000.0},
        env={"COLLECTOR_BUFFER_MAX_TICKS": "1000"},
    )
    control = _injectable(s)
    t0 = s.start()
    s.sleep_until_phase("5m", 1.0, min_wait_min=2)
    (control / "slow").write_text("0.01")
    wait_for(lambda: s.metric("updates_lost_total", reason="queue_full") > 1000, 60, "the queue to overflow")
    time.sleep(60)
    (control / "slow").unlink()
    lost = s.metric("updates_lost_total", reason="queue_full")
    s.collect(4)
    s.recovered = "overflowed buckets flagged once each and replaced from REST"
    s.notes["updates_lost"] = int(lost)
    s.finish(t0)
    flags = int(s.sql("SELECT count(*) FROM candle_repairs WHERE reason = 'queue_overflow'")[0][0])
    assert 0 < flags < lost, f"flags are one per bucket, not one per lost update: {flags} for {lost:.0f}"
    s.notes["overflow_flags"] = flags
