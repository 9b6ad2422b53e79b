"""Database faults: PostgreSQL unreachable behind a TCP proxy (tests/netproxy.py) that the test
cuts and restores. The stream keeps flowing; the writer buffers (bounded), retries with backoff
and flushes when the database is back. Candle state lives in memory, so candles stay exact even
when tick rows are dropped at the buffer bound; what is dropped is counted and logged."""

from __future__ import annotations

import time

import pytest

from .kit import MIN, Scenario, buckets_between, wait_for

pytestmark = pytest.mark.timeout(300)


def _cut(s: Scenario) -> float:
    assert s.db_proxy is not None
    s.db_proxy.stop()
    wait_for(lambda: s.metric("db_up") == 0, 30, "the collector to notice the database is gone")
    return time.monotonic()


def _restore_and_drain(s: Scenario) -> float:
    """Bring the database back; wait until every tick row buffered at that moment is written
    (the writer's backoff, up to COLLECTOR_DB_RETRY_MAX_S, decides when it next tries).
    Returns the seconds taken."""
    assert s.db_proxy is not None
    written, buffered = s.metric("ticks_written_total"), s.metric("buffer_ticks")
    s.db_proxy.start()
    t = time.monotonic()
    wait_for(
        lambda: s.metric("db_up") == 1 and s.metric("ticks_written_total") >= written + buffered,
        120,
        f"{s.name}: the {buffered:.0f} buffered tick rows to be written once the database is back",
    )
    took = round(time.monotonic() - t, 2)
    s.recoveries.append(took)
    return took


def _assert_stream_candles(s: Scenario, start_ms: int, end_ms: int) -> None:
    """The buckets wholly inside the outage came from the stream (never needed REST) and are
    complete: a database outage is not a market-data gap."""
    checked = 0
    for tf in ("5m", "15m"):
        bs = buckets_between(start_ms, end_ms, tf)
        if not bs:
            continue
        rows = s.sql(
            "SELECT source, complete, count(*) FROM candles WHERE timeframe = %s "
            "AND bucket >= to_timestamp(%s / 1000.0) AND bucket < to_timestamp(%s / 1000.0) GROUP BY 1, 2",
            tf,
            bs[0],
            bs[-1] + 1,
        )
        assert {(src, c) for src, c, _ in rows} == {("stream", True)}, f"{tf} outage buckets: {rows}"
        checked += sum(n for _, _, n in rows)
    assert checked > 0, "the outage must span at least one whole bucket"
    s.notes["outage_candles_from_stream"] = checked


@pytest.mark.slow
@pytest.mark.timeout(360)
def test_database_unreachable_for_an_hour_of_market_at_full_rate(scenario) -> None:
    """60 s of wall time without the database at 2,000 ticks/s (an hour of market at 60x):
    ~120,000 tick rows and every candle change wait in memory, then are written. Not one tick
    row is lost, every candle equals ground truth and none needed REST."""
    s = scenario(
        "database unreachable 60 s at 2,000 ticks/s",
        "PostgreSQL cut (proxy) for 60 s wall = 60 simulated minutes, stream at full rate",
        sim={"ticks_per_second": 2000.0},
        db_proxy=True,
    )
    t0 = s.start()
    s.sleep_until_phase("5m", 1.0, min_wait_min=2)
    cut_from = s.sim.now_ms()
    since = _cut(s)
    while time.monotonic() - since < 60:
        time.sleep(1)
        assert s.metric("stream_connected") == 1, "a database outage must not touch the stream"
    buffered = s.metric("buffer_ticks")
    assert buffered > 60_000, f"expected the outage's ticks in the buffer, found {buffered}"
    cut_to = s.sim.now_ms()
    s.notes["buffered_ticks_peak"] = int(buffered)
    _restore_and_drain(s)
    s.collect(4)
    s.recovered = "buffer held the outage; flushed when back; no tick row lost"
    s.finish(t0)
    assert s.notes["ticks_dropped"] == 0
    stored, short, foreign = s.ticks_table_vs_truth()
    assert (short, foreign) == (0, 0), f"ticks table: {short} missing, {foreign} not ground truth of {stored}"
    s.notes["tick_rows_checked"] = stored
    _assert_stream_candles(s, cut_from, cut_to)


def test_buffer_bound_exceeded_drops_counted_and_candles_stay_exact(scenario) -> None:
    """COLLECTOR_BUFFER_MAX_TICKS=1000 and a 10 s outage (~1,500 ticks): the oldest tick rows
    are dropped at the bound. The drop is counted (ig_collector_ticks_dropped_total) and logged,
    the ticks table is short by exactly that count, and the candles - built in memory - still
    equal ground truth, from the stream."""
    s = scenario(
        "buffer bound exceeded during a database outage",
        "COLLECTOR_BUFFER_MAX_TICKS=1000, PostgreSQL cut for 10 s at 150 ticks/s",
        env={"COLLECTOR_BUFFER_MAX_TICKS": "1000", "COLLECTOR_DB_RETRY_MAX_S": "5"},
        db_proxy=True,
    )
    t0 = s.start()
    s.sleep_until_phase("5m", 1.0, min_wait_min=2)
    cut_from = s.sim.now_ms()
    since = _cut(s)
    wait_for(lambda: s.metric("ticks_dropped_total") > 0, 60, "the buffer bound to be reached")
    while time.monotonic() - since < 10:
        time.sleep(0.5)
    cut_to = s.sim.now_ms()
    assert s.metric("buffer_ticks") <= 1000
    _restore_and_drain(s)
    s.collect(4)
    s.recovered = "oldest tick rows dropped at the bound (counted, logged); candles exact from memory"
    s.finish(t0)
    dropped = s.notes["ticks_dropped"]
    assert dropped > 0
    assert s.logged("write buffer full") >= 1
    logged_total = max(
        int(r.get("dropped_total", 0)) for r in s.log_records() if "write buffer full" in str(r.get("msg"))
    )
    assert 0 < logged_total <= dropped
    stored, short, foreign = s.ticks_table_vs_truth()
    assert foreign == 0
    assert short == dropped, f"ticks table short by {short}, but {dropped} drops were counted"
    s.notes["tick_rows_checked"] = stored
    _assert_stream_candles(s, cut_from, cut_to)


def test_stream_drop_while_the_database_is_down_is_repaired_when_it_returns(scenario) -> None:
    """Two faults at once: the database is unreachable, and meanwhile the stream drops. The
    gap's repair flags cannot be stored yet; they are kept in memory, the gap's closing buckets
    are written incomplete, and once the database is back they are replaced from REST."""
    s = scenario(
        "stream drop during a database outage",
        "PostgreSQL cut for 12 s; 5 s in, the stream connection is reset",
        env={"COLLECTOR_DB_RETRY_MAX_S": "5"},
        db_proxy=True,
    )
    t0 = s.start()
    s.sleep_until_phase("5m", 1.0, min_wait_min=2)
    since = _cut(s)
    s.collect(5)
    drop_at, sessions = s.sim.now_ms(), s.sessions()
    t_drop = time.monotonic()
    s.sim.drop_connections("abort")
    s.recovered_within(t_drop, sessions, what="the stream drop during the outage", database=False)
    while time.monotonic() - since < 12:
        time.sleep(0.5)
    _restore_and_drain(s)
    s.collect(4)
    s.recovered = "stream reconnected during the outage; gap flags kept in memory; repaired after"
    s.finish(t0)
    s.assert_from_rest([drop_at - drop_at % (5 * MIN)])


def test_kill9_while_the_database_is_down_backfills_everything_unwritten(scenario) -> None:
    """The worst case for the buffer: the collector is killed while the database is away, so
    every buffered row is lost with the process. It restarts (the database still away), waits
    for it, and then repairs from REST everything since its last committed tick."""
    s = scenario(
        "kill -9 during a database outage",
        "PostgreSQL cut; 8 s in, kill -9; restart while still cut; database back 6 s later",
        env={"COLLECTOR_DB_RETRY_MAX_S": "5"},
        db_proxy=True,
    )
    t0 = s.start()
    s.sleep_until_phase("5m", 1.0, min_wait_min=2)
    cut_from = s.sim.now_ms()
    _cut(s)
    s.collect(8)
    s.proc.kill9()
    killed_at = s.sim.now_ms()
    s.proc.start()
    wait_for(lambda: s.logged("database not reachable at start") >= 1, 60, "the restart to wait for the database")
    s.collect(4)
    assert s.db_proxy is not None
    s.db_proxy.start()
    back = time.monotonic()
    s.recovered_within(back, what="the restarted collector once the database is back")
    s.collect(4)
    s.recovered = "restart waited for the database; everything unwritten replaced from REST"
    s.finish(t0)
    # Every bucket from the last commit to the restart lost rows with the process: all from REST.
    s.assert_from_rest(list(range(cut_from - cut_from % (5 * MIN), killed_at, 5 * MIN)))


def test_database_restart_loses_no_tick_row_and_every_connection_comes_back(scenario) -> None:
    """A restart as the collector sees `pg_ctl restart -m fast`: the server terminates every
    backend (FATAL 57P01, an open transaction rolled back), refuses new connections for a
    while, then accepts them with everything committed intact. (The shared test cluster cannot
    be bounced under other tests, so the proxy refuses while the backends are terminated.)
    Every tick row reaches the table exactly once, the candles come from the stream, and each
    of the collector's connections comes back: the writer's, and the repair worker's, which a
    stream drop after the restart needs for its REST repair."""
    s = scenario(
        "database restarted",
        "every collector backend terminated (57P01 admin shutdown), connections refused 10 s, then "
        "accepted; then a stream drop",
        env={"COLLECTOR_DB_RETRY_MAX_S": "5"},
        db_proxy=True,
    )
    assert s.db_proxy is not None
    t0 = s.start()
    s.sleep_until_phase("5m", 1.0, min_wait_min=2)
    restart_from = s.sim.now_ms()
    s.db_proxy.refuse()
    killed = s.sql(
        "SELECT application_name FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name LIKE 'ig-collector%' AND pg_terminate_backend(pid)"
    )
    names = sorted({n for (n,) in killed})
    assert "ig-collector writer" in names, f"the writer's connection was not among those terminated: {names}"
    s.notes["backends_terminated"] = len(killed)
    s.notes["backends"] = names
    wait_for(lambda: s.metric("db_up") == 0, 30, "the collector to notice the restart")
    since = time.monotonic()
    while time.monotonic() - since < 10:
        time.sleep(0.5)
        assert s.metric("stream_connected") == 1, "a database restart must not touch the stream"
    restart_to = s.sim.now_ms()
    _restore_and_drain(s)
    s.collect(4)
    # The repair worker's connection was terminated too: a gap now needs it back.
    drop_at, sessions = s.sim.now_ms(), s.sessions()
    t_drop = time.monotonic()
    s.sim.drop_connections("close")
    s.recovered_within(t_drop, sessions, what="the stream drop after the restart")
    s.collect(4)
    s.recovered = "writer retried what was rolled back; every connection back; later gap repaired from REST"
    s.finish(t0)
    stored, short, foreign = s.ticks_table_vs_truth(before_ms=drop_at)
    assert (short, foreign) == (0, 0), f"ticks table: {short} missing, {foreign} not ground truth of {stored}"
    s.notes["tick_rows_checked"] = stored
    _assert_stream_candles(s, restart_from, restart_to)
    s.assert_from_rest([drop_at - drop_at % (5 * MIN)])
    assert s.logged("database unavailable, retrying") + s.logged("database write failed") >= 1
