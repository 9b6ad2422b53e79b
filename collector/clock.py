"""Where "now" comes from, so that candles close on the market's clock and not on whatever clock a
module happens to read.

Production runs on the system clock. A run may instead be handed a linear clock: an origin and a
speed against the wall clock (`COLLECTOR_CLOCK=linear:origin_ms=..,wall_origin_ms=..,speed=..`),
which is all a fast market needs; a linear clock needs no further reads once it is known. Who
runs such a market and how its clock is learned is that market's business: nothing here knows.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Protocol

SYSTEM = "system"
LINEAR_PREFIX = "linear:"
_LINEAR = re.compile(r"linear:origin_ms=(-?\d+),wall_origin_ms=(-?\d+),speed=([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?\d+)?)")


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class LinearClock:
    """now = origin_ms + (wall - wall_origin_ms) * speed."""

    origin_ms: int
    wall_origin_ms: int
    speed: float

    def __post_init__(self) -> None:
        if not self.speed > 0:
            raise ValueError(f"a clock's speed must be > 0, not {self.speed!r}")

    def now_ms(self) -> int:
        return self.origin_ms + int((time.time_ns() // 1_000_000 - self.wall_origin_ms) * self.speed)

    def spec(self) -> str:
        """The `COLLECTOR_CLOCK` value that gives another process this same clock."""
        return f"{LINEAR_PREFIX}origin_ms={self.origin_ms},wall_origin_ms={self.wall_origin_ms},speed={self.speed!r}"


def parse_clock(spec: str) -> Clock:
    """`system` or a `LinearClock.spec()`; ValueError naming both forms for anything else."""
    if spec == SYSTEM:
        return SystemClock()
    m = _LINEAR.fullmatch(spec)
    if m is None:
        raise ValueError(
            f"{spec!r} is not a clock: use {SYSTEM!r} or '{LINEAR_PREFIX}origin_ms=<ms>,wall_origin_ms=<ms>,speed=<x>'"
        )
    return LinearClock(int(m.group(1)), int(m.group(2)), float(m.group(3)))


def make_clock(spec: str, *_ignored: object) -> Clock:
    """The clock `COLLECTOR_CLOCK` names. Extra positional arguments (callers that also pass
    the REST URL) are ignored: no clock here is read over the network."""
    return parse_clock(spec)
