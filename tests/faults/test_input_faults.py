"""Bad input on a healthy stream: malformed updates at a high rate, and ticks that arrive late.

Malformed updates are each counted under their reason and none is stored. A late tick within
COLLECTOR_LATENESS_MS (simulated ms) corrects its closed candle from the stream; beyond it the
tick is dropped for that timeframe, counted, and the bucket is replaced from REST - whose candle
includes the tick - so it still equals ground truth."""

from __future__ import annotations

import pytest

from .kit import MIN, wait_for

pytestmark = pytest.mark.timeout(240)

# inject kind -> the reject reason it must be counted under
KINDS = {
    "empty": "missing", "null": "missing", "non_numeric": "non_numeric", "crossed": "crossed",
    "far_future": "future", "negative": "non_positive", "zero": "non_positive", "duplicate": "duplicate",
}  # fmt: skip
PAIRS = ("EURUSD", "USDJPY", "GBPUSD", "AUDNZD")
PER_KIND = 100


def _rejects(s) -> dict[str, int]:
    return {r: int(s.metric("ticks_rejected_total", reason=r)) for r in sorted(set(KINDS.values()) | {"too_late"})}


def test_malformed_updates_at_a_high_rate_are_each_counted_and_never_stored(scenario) -> None:
    s = scenario(
        "malformed updates at a high rate",
        f"{PER_KIND * len(KINDS)} bad updates in a burst: {', '.join(KINDS)} ({PER_KIND} each, 4 pairs)",
    )
    t0 = s.start()
    s.collect(1)
    before = _rejects(s)
    expected = dict.fromkeys(before, 0)
    for i in range(PER_KIND):
        for kind, reason in KINDS.items():
            sent = s.sim.inject(kind, PAIRS[i % len(PAIRS)])
            assert sent["recipients"] == 1, f"{kind} not delivered: {sent}"
            expected[reason] += 1
    want = {r: before[r] + expected[r] for r in before}
    wait_for(lambda: _rejects(s) == want, 30, f"every injected update counted by reason: {want}")
    s.collect(6)
    assert _rejects(s) == want, "nothing else was rejected"
    s.recovered = "every bad update counted under its reason; none stored; stream untouched"
    s.notes["rejected_by_reason"] = {r: expected[r] for r in expected if expected[r]}
    s.finish(t0)
    stored, short, foreign = s.ticks_table_vs_truth()
    assert foreign == 0, f"{foreign} stored tick rows are not ground truth (a malformed update was stored)"
    assert short == 0
    s.notes["tick_rows_checked"] = stored


def _late_in(tick_ms: int, at_ms: int) -> int:
    """Timeframes for which a tick stamped `tick_ms` and received at `at_ms` is late (its bucket
    closed: end + the 1.5 s close grace)."""
    return sum(1 for n in (5 * MIN, 15 * MIN) if at_ms >= tick_ms - tick_ms % n + n + 1500)


def test_late_ticks_within_the_lateness_window_correct_the_closed_candle(scenario) -> None:
    """COLLECTOR_LATENESS_MS=240000. Ticks stamped 3 simulated minutes in the past arrive 2.5
    minutes after their 5m bucket closed: in a bucket the stream saw whole, the stream's candle
    is corrected (still `stream`, no REST); in the start-up bucket (partial, to be replaced from
    REST) the correction must not be lost either: the REST candle that replaces it has them.
    Each is counted as a correction."""
    s = scenario(
        "late ticks within the lateness window",
        "2 x 8 ticks 3 min (simulated) late, 2.5 min after their 5m bucket closed (the start-up bucket "
        "and a whole one); lateness 4 min",
        env={"COLLECTOR_LATENESS_MS": "240000"},
    )
    t0 = s.start()
    b0 = t0 - t0 % (5 * MIN)  # the start-up 5m bucket
    pairs = ("EURUSD", "USDJPY", "GBPUSD", "EURGBP", "AUDUSD", "NZDUSD", "USDCHF", "USDCAD")
    expected = 0
    groups = []
    for bucket in (b0, b0 + 5 * MIN):
        wait_for(lambda b=bucket: s.sim.now_ms() >= b + 7.5 * MIN, 30, "2.5 minutes after the bucket closed")
        at = s.sim.now_ms()
        late = [s.sim.inject_late_tick(p, 3 * MIN) for p in pairs]
        assert all(bucket <= t.time_ms < bucket + 5 * MIN for t in late)
        expected += sum(_late_in(t.time_ms, at) for t in late)
        groups.append(late)
    wait_for(
        lambda: s.metric("late_ticks_total", outcome="corrected") == expected,
        30,
        f"{expected} corrections counted (per timeframe)",
    )
    s.collect(4)
    assert s.metric("late_ticks_total", outcome="dropped") == 0
    s.recovered = "closed candles corrected: from the stream, or by the REST candle replacing the partial one"
    s.notes["late_corrected"] = expected
    s.finish(t0)
    s.assert_from_rest([b0], pairs=pairs)
    rows = s.sql(
        "SELECT DISTINCT source, complete FROM candles WHERE timeframe = '5m' AND bucket = to_timestamp(%s / 1000.0) "
        "AND pair = ANY(%s)",
        b0 + 5 * MIN,
        list(pairs),
    )
    assert rows == [("stream", True)], f"corrected candles of a whole bucket stay stream candles: {rows}"
    assert s.sql("SELECT count(*) FROM candle_repairs WHERE reason = 'late_tick'") == [(0,)]


def test_late_ticks_beyond_the_lateness_window_are_dropped_counted_and_repaired(scenario) -> None:
    """With the default lateness (60 simulated s): ticks 6 min late for their 5m bucket (but
    inside the open 15m bucket) are dropped for 5m only; ticks 8 min late are dropped for both
    timeframes (`too_late`, not stored); their 15m bucket is the start-up one, already replaced
    from REST before they came. Each is counted, each bucket is repaired from REST, and the candles equal
    ground truth, which has the late ticks."""
    s = scenario(
        "late ticks beyond the lateness window",
        "5 ticks 6 min late (5m closed, 15m open) and 5 ticks 8 min late (both closed); lateness 60 s",
    )
    t0 = s.start()
    b0 = t0 - t0 % (15 * MIN)  # the start-up 15m bucket: partial, so replaced from REST once closed
    b15 = b0 + 15 * MIN
    wait_for(lambda: s.sim.now_ms() >= b15 + 7 * MIN, 60, "7 minutes into the next 15m bucket")
    wait_for(lambda: s.unresolved_before(b15) == 0, 30, "the start-up buckets to be replaced from REST")
    s.assert_from_rest([b0], "15m")
    pairs = ("EURUSD", "USDJPY", "GBPUSD", "EURGBP", "AUDUSD")
    five_only = [s.sim.inject_late_tick(p, 6 * MIN) for p in pairs]  # at b15 + 1 min
    both = [s.sim.inject_late_tick(p, 8 * MIN) for p in pairs]  # at b15 - 1 min
    assert all(b15 <= t.time_ms < b15 + 5 * MIN for t in five_only)
    assert all(b15 - 5 * MIN <= t.time_ms < b15 for t in both)
    dropped = len(five_only) + 2 * len(both)
    wait_for(
        lambda: s.metric("late_ticks_total", outcome="dropped") == dropped,
        30,
        f"{dropped} late drops counted (per timeframe)",
    )
    assert s.metric("ticks_rejected_total", reason="too_late") == len(both)
    assert s.metric("late_ticks_total", outcome="corrected") == 0
    s.collect(4)
    s.recovered = "dropped ticks counted; their buckets replaced from REST, which has them"
    s.notes["late_dropped"] = dropped
    s.finish(t0)
    s.assert_from_rest([b15], pairs=pairs)  # the 5m bucket of the 6-min-late ticks
    s.assert_from_rest([b15 - 5 * MIN], pairs=pairs)  # the 5m bucket of the 8-min-late ticks
    s.assert_from_rest([b0], "15m", pairs=pairs)  # their 15m bucket: replaced again, now with the late ticks
    untouched = s.sql(
        "SELECT DISTINCT source FROM candles WHERE timeframe = '5m' AND bucket = to_timestamp(%s / 1000.0) "
        "AND NOT pair = ANY(%s)",
        b15,
        list(pairs),
    )
    assert untouched == [("stream",)], "only the buckets that lost a tick are replaced"
    rows = s.sql("SELECT pair, (extract(epoch FROM time) * 1000)::bigint FROM ticks WHERE pair = ANY(%s)", list(pairs))
    stored_keys = {(p, int(t)) for p, t in rows}
    assert all((t.pair, t.time_ms) in stored_keys for t in five_only), "kept for 15m: stored"
    assert not any((t.pair, t.time_ms) in stored_keys for t in both), "too late for every timeframe: not stored"
