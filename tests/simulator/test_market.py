"""The simulator's pure market code: price generator, tick store candles, streamed candles."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from collector import tickfile
from collector.models import Tick
from collector.pairs import PAIRS, pip_size
from collector.simulator.market import BASE_MID, PriceModel, StreamCandles, TickStore, price_digits
from collector.simulator.server import Simulator


def test_same_seed_same_prices_different_seed_different_prices() -> None:
    a, b, c = PriceModel(PAIRS, 11), PriceModel(PAIRS, 11), PriceModel(PAIRS, 12)
    seq_a = [a.next() for _ in range(2000)]
    assert seq_a == [b.next() for _ in range(2000)]
    assert seq_a != [c.next() for _ in range(2000)]


def test_quotes_look_like_ig_fx_quotes() -> None:
    model = PriceModel(PAIRS, 3)
    for _ in range(20_000):
        i, bid, ask = model.next()
        pair = PAIRS[i]
        pip = pip_size(pair)
        spread_pips = (ask - bid) / pip
        assert 0.49 < spread_pips < 3.01, (pair, bid, ask)
        assert round(bid, price_digits(pair)) == bid and round(ask, price_digits(pair)) == ask
        assert abs((bid + ask) / 2 / BASE_MID[pair] - 1) < 0.02


def reference(ticks: list[Tick], tf_ms: int) -> list[tuple]:
    """Plain-Python aggregation: open/close by time, ties by list order."""
    buckets: dict[int, list[Tick]] = {}
    for t in ticks:
        buckets.setdefault(t.time_ms - t.time_ms % tf_ms, []).append(t)
    out = []
    for b in sorted(buckets):
        rows = sorted(buckets[b], key=lambda t: t.time_ms)  # stable sort keeps list order on ties
        bids, asks = [t.bid for t in rows], [t.ask for t in rows]
        out.append((b, bids[0], max(bids), min(bids), bids[-1], asks[0], max(asks), min(asks), asks[-1], len(rows)))
    return out


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 20_000), st.integers(10_000, 11_000), st.integers(1, 30)),
        min_size=0,
        max_size=60,
    ),
    st.sampled_from([1_000, 5_000, 60_000]),
)
def test_store_candles_equal_reference_for_any_order_and_ties(rows: list[tuple[int, int, int]], tf_ms: int) -> None:
    store = TickStore(("EURUSD", "GBPUSD"), capacity=4)  # tiny capacity exercises growth
    ticks = []
    for i, (t, bid_ticks, spread) in enumerate(rows):
        bid = bid_ticks / 10_000
        ask = (bid_ticks + spread) / 10_000
        store.append(i % 2, t, bid, ask)
        if i % 2 == 0:
            ticks.append(Tick("EURUSD", t, bid, ask))
    got = [
        (c.bucket_ms, c.bid_open, c.bid_high, c.bid_low, c.bid_close, c.ask_open, c.ask_high, c.ask_low, c.ask_close,
         c.ticks)
        for c in store.candles("EURUSD", tf_ms, None, None)
    ]  # fmt: skip
    assert got == reference(ticks, tf_ms)


def test_store_candles_respect_the_bucket_range() -> None:
    store = TickStore(("EURUSD",))
    for t in (0, 59_999, 60_000, 120_000, 180_000):
        store.append(0, t, 1.1, 1.1001)
    assert [c.bucket_ms for c in store.candles("EURUSD", 60_000, 60_000, 120_000)] == [60_000, 120_000]


def test_stream_candle_closes_when_a_tick_opens_the_next_bucket_and_ignores_late_ticks() -> None:
    sc = StreamCandles()
    sc.add(0, 1_000, 1.1, 1.2)
    sc.add(0, 1_500, 1.3, 1.4)
    closed, changed = sc.add(0, 2_100, 1.0, 1.1)
    assert [(s, c.bucket_ms, c.bid_close, c.ticks, c.ended) for s, c in closed] == [("SECOND", 1_000, 1.3, 2, True)]
    assert "SECOND" in {s for s, _ in changed}
    late_closed, late_changed = sc.add(0, 1_700, 9.9, 9.9)
    assert late_closed == [] and "SECOND" not in {s for s, _ in late_changed}
    due = sc.close_due(3_000)
    assert [(s, c.bucket_ms) for _, s, c in due] == [("SECOND", 2_000)]


def test_simulators_with_one_seed_produce_the_same_price_sequence() -> None:
    seqs = []
    for _ in range(2):
        with Simulator(seed=42, ticks_per_second=500, keepalive_ms=1000) as s:
            time.sleep(0.3)
            seqs.append([(t.pair, t.bid, t.ask) for t in s.ticks()][:100])
    assert len(seqs[0]) == 100
    assert seqs[0] == seqs[1]


def test_total_tick_rate_follows_ticks_per_second() -> None:
    with Simulator(ticks_per_second=400, keepalive_ms=1000) as s:
        t0, n0 = time.monotonic(), len(s.ticks())
        time.sleep(1.0)
        rate = (len(s.ticks()) - n0) / (time.monotonic() - t0)
        assert 300 < rate < 500
        times = [t.time_ms for t in s.ticks()]
        assert times == sorted(times)  # generated ticks are in time order


def test_tick_file_replays_on_the_simulator_clock(tmp_path: Path) -> None:
    base = 1_700_000_000_000
    ticks = [
        Tick(p, base + 200 * i, 1.1 + i / 10_000, 1.1002 + i / 10_000) for i, p in enumerate(["EURUSD", "GBPUSD"] * 50)
    ]
    path = tmp_path / "ticks.csv"
    path.write_text(tickfile.dumps(ticks))
    with Simulator(tick_file=path, speed=40.0, pairs=("EURUSD", "GBPUSD"), keepalive_ms=1000) as s:
        assert s.clock()["start_ms"] == base
        first = s.ticks()
        assert 0 < len(first) < len(ticks)  # replay follows the clock, not all at once
        while s.now_ms() < ticks[-1].time_ms:
            time.sleep(0.02)
        assert s.ticks() == ticks


def test_history_is_generated_before_start() -> None:
    start = 1_719_835_200_000
    with Simulator(start_ms=start, history_ms=3_600_000, history_ticks=1000, ticks_per_second=10) as s:
        hist = [t for t in s.ticks() if t.time_ms < start]
        assert len(hist) == 1000
        assert hist[0].time_ms == start - 3_600_000


def test_stop_joins_the_loop_thread_even_with_a_client_connected() -> None:
    sim = Simulator(ticks_per_second=100, keepalive_ms=1000).start()
    s = requests.Session()
    assert s.get(sim.url + "/_sim/stats", timeout=5).status_code == 200  # a kept-alive HTTP connection
    t0 = time.monotonic()
    sim.stop()
    assert time.monotonic() - t0 < 3
    assert not [t for t in threading.enumerate() if t.name == "ig-simulator"]
    s.close()


def test_a_busy_port_fails_start_with_oserror() -> None:
    with Simulator(ticks_per_second=10) as a:
        b = Simulator(port=a.port, ticks_per_second=10)
        with pytest.raises(OSError):
            b.start()
