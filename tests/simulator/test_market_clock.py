"""The simulator's market clock as a collector receives it: the same clock in-process, over
`/_sim/clock` and as the `COLLECTOR_CLOCK` text a child process is given."""

from __future__ import annotations

from collector.clock import LinearClock, parse_clock
from collector.config import load_settings
from collector.simulator.clock import as_json, from_json, read_clock, start_clock
from collector.simulator.server import Simulator


def test_the_served_clock_is_the_market_clock(sim: Simulator) -> None:
    assert read_clock(sim.url) == sim.market_clock()


def test_the_market_clock_starts_where_it_was_told_and_at_its_speed() -> None:
    with Simulator(start_ms=1_719_835_200_000, speed=60.0, ticks_per_second=0.0) as s:
        c = s.market_clock()
        assert (c.origin_ms, c.speed) == (1_719_835_200_000, 60.0)
        assert 0 <= s.now_ms() - c.origin_ms < 60 * 5_000


def test_a_child_process_gets_the_same_clock_from_its_spec(sim: Simulator) -> None:
    assert parse_clock(sim.market_clock().spec()) == sim.market_clock()


def test_settings_accept_the_market_clock_spec(sim: Simulator, monkeypatch) -> None:
    monkeypatch.setenv("COLLECTOR_CLOCK", sim.market_clock().spec())
    assert parse_clock(load_settings().clock) == sim.market_clock()


def test_the_json_body_keeps_the_simulator_names() -> None:
    body = as_json(LinearClock(origin_ms=10, wall_origin_ms=20, speed=2.0))
    assert {k: body[k] for k in ("start_ms", "wall_start_ms", "speed")} == {
        "start_ms": 10,
        "wall_start_ms": 20,
        "speed": 2.0,
    }
    assert from_json(body) == LinearClock(10, 20, 2.0)


def test_start_clock_reads_its_start_now() -> None:
    c = start_clock(1_000, 1.0)
    assert 1_000 <= c.now_ms() < 1_000 + 5_000
