"""Where "now" comes from. Production uses the system clock; the simulator can run a fast clock
(`--speed`), and a collector following it must close candles on the same clock.

The simulator's clock is linear in wall time, so after one read of `/_sim/clock` no further
request is needed.
"""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass
from typing import Protocol


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

    def now_ms(self) -> int:
        return self.origin_ms + int((time.time_ns() // 1_000_000 - self.wall_origin_ms) * self.speed)

    def wall_seconds(self, sim_ms: float) -> float:
        """Wall-clock seconds that `sim_ms` of simulated time take."""
        return sim_ms / 1000 / self.speed


def simulator_clock(api_url: str) -> LinearClock:
    with urllib.request.urlopen(f"{api_url.rstrip('/')}/_sim/clock", timeout=10) as r:
        c = json.load(r)
    return LinearClock(origin_ms=int(c["start_ms"]), wall_origin_ms=int(c["wall_start_ms"]), speed=float(c["speed"]))


def make_clock(kind: str, api_url: str | None) -> Clock:
    if kind == "simulator":
        if not api_url:
            raise ValueError("COLLECTOR_CLOCK=simulator needs IG_API_URL pointing at the simulator")
        return simulator_clock(api_url)
    return SystemClock()
