"""The collector's `StreamClient` against the simulator's transports and spread-bet quotes."""

from __future__ import annotations

import time
from collections import deque

import pytest
from simkit import RestLogin

from collector.ig_convention import PriceScale
from collector.ig_rest import IGSession
from collector.ig_stream import RawUpdate, StreamClient, TransportWatch
from collector.metrics import Metrics
from collector.simulator.server import Simulator

pytestmark = pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning")


def _client(sim: Simulator, rest: RestLogin, suffix: str, **kw) -> tuple[StreamClient, deque]:
    cst, xst = rest.ls_password.removeprefix("CST-").split("|XST-")
    session = IGSession(cst, xst, sim.account_id, sim.url)
    updates: deque = deque()
    epics = {f"CS.D.{p}{suffix}": p for p in ("EURUSD", "USDJPY")}
    c = StreamClient(session, epics, updates, lambda e: None, sim.now_ms, max_queue=100_000,
                     on_overflow=lambda r: None, stalled_timeout_ms=500, reconnect_timeout_ms=500, **kw)  # fmt: skip
    c.connect()
    return c, updates


def _wait(pred, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_websockets_refused_for_good_stream_over_http_and_the_gauge_says_so(sim: Simulator, rest: RestLogin) -> None:
    sim.refuse_websockets(-1)
    metrics = Metrics()
    c, updates = _client(sim, rest, ".CFD.IP", on_transport=metrics.set_stream_transport)
    try:
        _wait(lambda: len(updates) > 20)
        assert c.status() == "CONNECTED:HTTP-STREAMING"
        gauge = {t: metrics.stream_transport.labels(t)._value.get() for t in ("WS-STREAMING", "HTTP-STREAMING")}
        assert gauge == {"WS-STREAMING": 0, "HTTP-STREAMING": 1}
    finally:
        c.disconnect()


def test_spread_bet_ticks_arrive_as_fx_rates_equal_to_ground_truth(sim: Simulator, rest: RestLogin) -> None:
    scales = {"EURUSD": PriceScale(10_000, 5), "USDJPY": PriceScale(100, 3)}
    c, updates = _client(sim, rest, ".TODAY.IP", scales=scales)
    try:
        _wait(lambda: sum(1 for u in updates if isinstance(u, RawUpdate) and not u.snapshot) > 40)
    finally:
        c.disconnect()
    live = [u for u in list(updates) if isinstance(u, RawUpdate) and not u.snapshot]
    truth = {(t.pair, t.time_ms): (t.bid, t.ask) for p in ("EURUSD", "USDJPY") for t in sim.ticks(p)}
    assert all(truth[(u.pair, int(u.utm))] == (float(u.bid), float(u.ofr)) for u in live)
    assert {u.pair for u in live} == {"EURUSD", "USDJPY"}


def test_transport_watch_forces_http_after_repeated_failures_without_a_session() -> None:
    seen: list[str] = []
    forced: list[str] = []
    w = TransportWatch(seen.append, forced.append, force_after=3)
    for s in ["CONNECTING", "DISCONNECTED:WILL-RETRY", "CONNECTING", "DISCONNECTED:WILL-RETRY"]:
        w.status(s)
    assert forced == []
    w.status("DISCONNECTED:WILL-RETRY")
    assert forced == ["HTTP"]
    w.status("CONNECTED:STREAM-SENSING")
    w.status("CONNECTED:HTTP-STREAMING")
    w.status("DISCONNECTED:WILL-RETRY")  # once a transport worked, retries are the client's own
    w.status("CONNECTED:HTTP-STREAMING")
    assert (seen, forced) == (["HTTP-STREAMING"], ["HTTP"])


def test_spread_bet_epics_stream_points_as_ig_quotes_them(sim: Simulator, rest: RestLogin) -> None:
    c, updates = _client(sim, rest, ".TODAY.IP")
    try:
        _wait(lambda: sum(1 for u in updates if isinstance(u, RawUpdate)) > 5)
    finally:
        c.disconnect()
    raw = next(u for u in list(updates) if isinstance(u, RawUpdate) and u.pair == "EURUSD")
    bid = float(raw.bid)
    assert 10_000 < bid < 12_000 and round(bid, 1) == bid  # 1.08512 is quoted 10851.2
