"""Lightstreamer over HTTP streaming and HTTP polling, as IG serves them where a proxy blocks
WebSocket: the real lightstreamer-client-lib 1.0.3 forced onto each transport, or left to fall
back by itself while every WebSocket upgrade is refused, gets every tick of ground truth."""

from __future__ import annotations

import time

import pytest
from simkit import KEEPALIVE_MS, RestLogin, StreamClients, StreamProbe, rest_login, tick_item

from collector.simulator.server import Simulator

EURUSD = tick_item("EURUSD")
pytestmark = pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning")


def _ticks_equal_truth(sim: Simulator, probe: StreamProbe) -> None:
    got = [(int(u.values["UTM"]), float(u.values["BID"]), float(u.values["OFR"])) for u in list(probe.updates)]
    truth = [(t.time_ms, t.bid, t.ask) for t in sim.ticks("EURUSD")]
    start = truth.index(got[0])
    assert truth[start : start + len(got)] == got


@pytest.mark.parametrize("transport", ["HTTP-STREAMING", "HTTP-POLLING"])
def test_forced_http_transport_streams_every_tick(
    sim: Simulator, rest: RestLogin, streams: StreamClients, transport: str
) -> None:
    _, probe = streams.connect(sim, rest.ls_password, [EURUSD], ["UTM", "BID", "OFR"], "DISTINCT", "no",
                               forced_transport=transport)  # fmt: skip
    probe.wait(lambda: probe.count(EURUSD) >= 30, timeout=15, what="30 EURUSD ticks")
    assert probe.statuses[-1] == f"CONNECTED:{transport}"
    _ticks_equal_truth(sim, probe)
    stats = sim.stats()
    assert stats["sessions_created"] == 1
    assert stats["binds_by_transport"][transport] >= 1
    assert stats["binds_by_transport"]["WS-STREAMING"] == 0


def test_websockets_refused_for_good_fall_back_to_http_streaming_by_the_client_itself(
    sim: Simulator, rest: RestLogin, streams: StreamClients
) -> None:
    sim.refuse_websockets(-1)
    _, probe = streams.connect(sim, rest.ls_password, [EURUSD], ["UTM", "BID", "OFR"], snapshot="no")
    probe.wait(lambda: probe.count(EURUSD) >= 30, timeout=20, what="30 EURUSD ticks")
    assert probe.statuses[-1] == "CONNECTED:HTTP-STREAMING"
    _ticks_equal_truth(sim, probe)
    time.sleep(1)
    assert sim.stats()["sessions_created"] == 1  # no storm of sessions that never carry data


def test_http_streaming_rebinds_when_the_content_length_is_used_up(streams: StreamClients) -> None:
    with Simulator(seed=7, pairs=["EURUSD"], keepalive_ms=KEEPALIVE_MS, http_content_length=1000) as sim:
        rest = rest_login(sim)
        _, probe = streams.connect(sim, rest.ls_password, [EURUSD], ["UTM", "BID", "OFR"], "DISTINCT", "no",
                                   forced_transport="HTTP-STREAMING")  # fmt: skip
        probe.wait(lambda: probe.count(EURUSD) >= 200, timeout=20, what="200 EURUSD ticks")
        stats = sim.stats()
        assert stats["http_rebinds"] >= 3
        assert stats["sessions_created"] == 1
        _ticks_equal_truth(sim, probe)
        streams.close()
        streams.clients.clear()


def test_websockets_refused_count_below_minus_one_is_an_error(sim: Simulator) -> None:
    with pytest.raises(ValueError, match="-1"):
        sim.refuse_websockets(-2)
