"""Fixtures for the simulator tests: a running simulator and real IG / Lightstreamer clients.

The clients are the real `trading-ig` and `lightstreamer-client-lib` (helpers in `simkit.py`),
so these tests prove the simulator speaks what they expect.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from simkit import KEEPALIVE_MS, RestLogin, StreamClients, rest_login

from collector.simulator.server import Simulator


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(seed=7, ticks_per_second=300.0, keepalive_ms=KEEPALIVE_MS) as s:
        yield s


@pytest.fixture
def rest(sim: Simulator) -> RestLogin:
    return rest_login(sim)


@pytest.fixture
def streams() -> Iterator[StreamClients]:
    sc = StreamClients()
    yield sc
    sc.close()
    time.sleep(0.05)
