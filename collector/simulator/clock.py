"""The simulator's market clock, and how a collector is given it.

The clock is linear in wall time (`sim_ms = start_ms + (wall_ms - wall_start_ms) * speed`), so it
is a `collector.clock.LinearClock`: the collector and the simulator then compute "now" with the
same formula. `GET /_sim/clock` serves its numbers; `read_clock` turns them back into a clock for
an in-process collector (the demo, benchmarks), and `LinearClock.spec()` is the `COLLECTOR_CLOCK`
value that gives a child process (`ig-collector run` in the end-to-end tests) the same clock.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from collector.clock import LinearClock


def start_clock(start_ms: int, speed: float) -> LinearClock:
    """A clock reading `start_ms` now and running `speed` times as fast as the wall."""
    return LinearClock(origin_ms=start_ms, wall_origin_ms=time.time_ns() // 1_000_000, speed=float(speed))


def as_json(clock: LinearClock) -> dict[str, Any]:
    """The `/_sim/clock` body; its names are the simulator's own contract (scripts and tests read them)."""
    return {
        "now_ms": clock.now_ms(),
        "start_ms": clock.origin_ms,
        "wall_start_ms": clock.wall_origin_ms,
        "speed": clock.speed,
    }


def from_json(body: dict[str, Any]) -> LinearClock:
    return LinearClock(
        origin_ms=int(body["start_ms"]), wall_origin_ms=int(body["wall_start_ms"]), speed=float(body["speed"])
    )


def read_clock(api_url: str) -> LinearClock:
    """The clock of the simulator at `api_url` (one request: the clock is linear)."""
    with urllib.request.urlopen(f"{api_url.rstrip('/')}/_sim/clock", timeout=10) as r:
        return from_json(json.load(r))
