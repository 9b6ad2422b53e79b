"""The collector's clock: the system clock, or a linear clock handed over as text."""

from __future__ import annotations

import time

import pytest

from collector.clock import LinearClock, SystemClock, make_clock, parse_clock
from collector.config import ConfigError, load_settings


def test_system_is_the_wall_clock() -> None:
    before = time.time_ns() // 1_000_000
    now = parse_clock("system").now_ms()
    assert isinstance(parse_clock("system"), SystemClock)
    assert before <= now <= time.time_ns() // 1_000_000


def test_a_linear_clock_runs_speed_times_the_wall_from_its_origin() -> None:
    wall = time.time_ns() // 1_000_000
    c = LinearClock(origin_ms=1_000_000, wall_origin_ms=wall - 2_000, speed=60.0)
    assert 1_000_000 + 120_000 <= c.now_ms() <= 1_000_000 + 120_000 + 60 * 1_000


def test_a_linear_clock_survives_its_spec_exactly() -> None:
    c = LinearClock(origin_ms=1_767_348_000_000, wall_origin_ms=1_767_347_990_123, speed=60.0)
    assert c.spec() == "linear:origin_ms=1767348000000,wall_origin_ms=1767347990123,speed=60.0"
    assert parse_clock(c.spec()) == c


def test_a_fractional_speed_survives_its_spec() -> None:
    c = LinearClock(origin_ms=5, wall_origin_ms=7, speed=0.1)
    assert parse_clock(c.spec()) == c


@pytest.mark.parametrize(
    "spec",
    [
        "simulator",
        "",
        "linear:",
        "linear:origin_ms=1,wall_origin_ms=2",
        "linear:origin_ms=1,wall_origin_ms=2,speed=abc",
    ],
)
def test_anything_else_is_refused_naming_both_forms(spec: str) -> None:
    with pytest.raises(ValueError, match="use 'system' or 'linear:origin_ms=<ms>,wall_origin_ms=<ms>,speed=<x>'"):
        parse_clock(spec)


def test_a_clock_must_move_forward() -> None:
    with pytest.raises(ValueError, match="speed must be > 0"):
        parse_clock("linear:origin_ms=1,wall_origin_ms=2,speed=0.0")


def test_make_clock_ignores_a_rest_url_passed_beside_the_spec() -> None:
    assert make_clock("linear:origin_ms=1,wall_origin_ms=2,speed=3.0", "http://127.0.0.1:1") == LinearClock(1, 2, 3.0)


def test_settings_refuse_an_unknown_clock_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLECTOR_CLOCK", "simulator")
    with pytest.raises(ConfigError, match="clock"):
        load_settings()


def test_settings_carry_a_linear_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLECTOR_CLOCK", "linear:origin_ms=1,wall_origin_ms=2,speed=3.0")
    assert parse_clock(load_settings().clock) == LinearClock(1, 2, 3.0)
