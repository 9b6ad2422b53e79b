"""The simulator's Lightstreamer TLCP server, driven by the real lightstreamer-client-lib 1.0.3."""

from __future__ import annotations

import time

import pytest
from simkit import (
    RestLogin,
    StreamClients,
    connected,
    epic,
    ig_service,
    rest_login,
    tick_item,
    truth_by_key,
)

from collector.pairs import PAIRS
from collector.simulator.market import STREAM_SCALES_MS
from collector.simulator.server import Simulator

EURUSD = tick_item("EURUSD")
# The Lightstreamer client library passes ssl=None to aiohttp; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning")


@pytest.mark.parametrize("version", ["2", "3"])
def test_trading_ig_stream_service_reaches_ws_streaming(sim: Simulator, version: str) -> None:
    from trading_ig import IGStreamService

    stream = IGStreamService(ig_service(sim, version=version))
    stream.create_session(version=version)  # REST login, then LightstreamerClient.connect()
    try:
        deadline = time.monotonic() + 10
        while stream.ls_client.getStatus() != "CONNECTED:WS-STREAMING":
            assert time.monotonic() < deadline, stream.ls_client.getStatus()
            time.sleep(0.02)
        assert stream.ls_client.connectionDetails.getSessionId().startswith("S")
    finally:
        stream.disconnect()


def test_all_28_tick_items_update_in_one_subscription(sim: Simulator, rest: RestLogin, streams: StreamClients) -> None:
    items = [tick_item(p) for p in PAIRS]
    _, probe = streams.connect(sim, rest.ls_password, items, ["BID", "OFR", "UTM"], snapshot="no")
    probe.wait(lambda: probe.subscribed == 1, what="SUBOK")
    probe.wait(lambda: {u.item for u in probe.updates} == set(items), timeout=15, what="all 28 items")
    assert sim.stats()["subscriptions"] == 1


def test_streamed_ticks_equal_ground_truth_without_loss(sim: Simulator, rest: RestLogin, streams) -> None:
    _, probe = streams.connect(sim, rest.ls_password, [EURUSD], ["UTM", "BID", "OFR", "LTP"], snapshot="no")
    probe.wait(lambda: probe.count(EURUSD) >= 20, what="20 EURUSD ticks")
    got = [(int(u.values["UTM"]), float(u.values["BID"]), float(u.values["OFR"])) for u in list(probe.updates)]
    assert all(u.values["LTP"] is None for u in probe.updates)  # FX has no last traded price
    truth = [(t.time_ms, t.bid, t.ask) for t in sim.ticks("EURUSD")]
    start = truth.index(got[0])
    assert truth[start : start + len(got)] == got
    # Prices are sent as IG writes them: at most 5 decimals for EURUSD.
    assert all(len(u.values["BID"].split(".")[1]) <= 5 for u in probe.updates)


def test_distinct_snapshot_is_the_last_tick_then_end_of_snapshot(sim: Simulator, rest: RestLogin, streams) -> None:
    time.sleep(0.3)  # let the market produce some EURUSD ticks first
    sim.pause_market()
    last = sim.ticks("EURUSD")[-1]
    _, probe = streams.connect(sim, rest.ls_password, [EURUSD], ["BID", "OFR", "UTM"], snapshot="yes")
    probe.wait(lambda: probe.end_of_snapshot == [EURUSD], what="EOS")
    assert [(u.snapshot, u.values) for u in probe.updates] == [
        (True, {"BID": repr(last.bid), "OFR": repr(last.ask), "UTM": str(last.time_ms)})
    ]
    sim.resume_market()
    probe.wait(lambda: probe.count() >= 3, what="live updates")
    assert [u.snapshot for u in probe.updates[1:]] == [False] * (len(probe.updates) - 1)


def test_candle_item_sends_cons_end_with_the_reference_ohlc() -> None:
    fields = ["UTM", "BID_OPEN", "BID_HIGH", "BID_LOW", "BID_CLOSE", "OFR_CLOSE", "CONS_END", "CONS_TICK_COUNT", "NOPE"]
    with Simulator(seed=5, ticks_per_second=200, pairs=("EURUSD",), keepalive_ms=1000) as s:
        streams = StreamClients()
        try:
            item = f"CHART:{epic('EURUSD')}:SECOND"
            _, probe = streams.connect(s, rest_login(s).ls_password, [item], fields, mode="MERGE", snapshot="no")
            probe.wait(lambda: sum(u.values["CONS_END"] == "1" for u in probe.updates) >= 2, what="two closed seconds")
            final = [u.values for u in probe.updates if u.values["CONS_END"] == "1"][1]
            bucket = int(final["UTM"])
            ticks = [t for t in s.ticks("EURUSD") if bucket <= t.time_ms < bucket + 1000]
            ticks.sort(key=lambda t: t.time_ms)  # stable: generation order breaks ties
            assert final == {
                "UTM": str(bucket),
                "BID_OPEN": repr(ticks[0].bid),
                "BID_HIGH": repr(max(t.bid for t in ticks)),
                "BID_LOW": repr(min(t.bid for t in ticks)),
                "BID_CLOSE": repr(ticks[-1].bid),
                "OFR_CLOSE": repr(ticks[-1].ask),
                "CONS_END": "1",
                "CONS_TICK_COUNT": str(len(ticks)),
                "NOPE": None,
            }
        finally:
            streams.close()


@pytest.mark.parametrize(
    ("item", "mode", "code", "message"),
    [
        ("CHART:CS.D.EURXXX.CFD.IP:TICK", "DISTINCT", 21, "Invalid group"),
        (f"MARKET:{epic('EURUSD')}", "MERGE", 21, "Invalid group"),
        (f"CHART:{epic('EURUSD')}:15MINUTE", "MERGE", 21, "Invalid group"),
        (f"CHART:{epic('EURUSD')}:TICK", "MERGE", 24, "Subscription mode not allowed for an Item"),
    ],
)
def test_invalid_subscriptions_get_reqerr(
    sim: Simulator, rest: RestLogin, streams: StreamClients, item: str, mode: str, code: int, message: str
) -> None:
    _, probe = streams.connect(sim, rest.ls_password, [item], ["BID"], mode=mode)
    probe.wait(lambda: bool(probe.sub_errors), what="onSubscriptionError")
    assert probe.sub_errors == [(code, message)]
    assert probe.subscribed == 0


@pytest.mark.parametrize("mode", ["close", "abort"])
def test_dropped_connection_reconnects_and_resubscribes(
    sim: Simulator, rest: RestLogin, streams: StreamClients, mode: str
) -> None:
    _, probe = streams.connect(sim, rest.ls_password, [EURUSD], ["BID", "OFR", "UTM"], snapshot="no")
    probe.wait(lambda: probe.subscribed == 1 and probe.count() > 0, what="first updates")
    assert sim.drop_connections(mode) == {"dropped": 1}
    probe.wait(lambda: probe.subscribed == 2, timeout=10, what="resubscription")
    seen = probe.count()
    probe.wait(lambda: probe.count() > seen + 3, what="updates after the drop")
    assert "DISCONNECTED:WILL-RETRY" in probe.statuses
    assert len(set(probe.session_ids)) == 2
    assert probe.server_errors == []


def test_http_session_recovery_is_refused_with_conerr_20_then_a_new_session(
    sim: Simulator, rest: RestLogin, streams: StreamClients
) -> None:
    _, probe = streams.connect(sim, rest.ls_password, [EURUSD], ["BID"], snapshot="no", recovery_timeout_ms=15_000)
    probe.wait(lambda: probe.subscribed == 1, what="SUBOK")
    sim.drop_connections("abort")
    probe.wait(lambda: probe.subscribed == 2, timeout=10, what="resubscription")
    assert "DISCONNECTED:TRYING-RECOVERY" in probe.statuses
    assert len(set(probe.session_ids)) == 2


def test_failed_websocket_create_falls_back_to_http_create_then_binds_over_websocket(
    sim: Simulator, rest: RestLogin, streams: StreamClients
) -> None:
    sim.refuse_websockets(1)
    _, probe = streams.connect(sim, rest.ls_password, [EURUSD], ["BID"], snapshot="no")
    probe.wait(lambda: probe.subscribed == 1 and probe.count() > 0, what="updates")
    stats = sim.stats()
    assert (stats["sessions_created"], stats["binds"]) == (1, 1)
    assert probe.statuses[-1] == "CONNECTED:WS-STREAMING"


def test_bad_password_is_terminal_conerr_1(sim: Simulator, streams: StreamClients) -> None:
    _, probe = streams.connect(sim, "CST-nope|XST-nope", [EURUSD], ["BID"])
    probe.wait(lambda: bool(probe.server_errors), what="onServerError")
    assert probe.server_errors == [(1, "Requested authentication failed")]
    time.sleep(0.5)
    assert probe.statuses == ["CONNECTING", "DISCONNECTED"]


def test_wrong_ls_user_is_refused(sim: Simulator, rest: RestLogin, streams: StreamClients) -> None:
    _, probe = streams.connect(sim, rest.ls_password, user="OTHERACC")
    probe.wait(lambda: bool(probe.server_errors), what="onServerError")
    assert probe.server_errors[0][0] == 1


def test_account_id_as_ls_user_is_accepted(sim: Simulator, rest: RestLogin, streams: StreamClients) -> None:
    _, probe = streams.connect(sim, rest.ls_password, user="SIMACC1")
    probe.wait(lambda: connected(probe), what="CONNECTED")


def test_refused_credentials_refuse_create_session(sim: Simulator, rest: RestLogin, streams: StreamClients) -> None:
    sim.refuse_credentials(True)
    _, probe = streams.connect(sim, rest.ls_password)
    probe.wait(lambda: bool(probe.server_errors), what="onServerError")
    assert probe.server_errors == [(1, "Requested authentication failed")]


def test_expired_tokens_keep_open_streams_but_refuse_new_ones(
    sim: Simulator, rest: RestLogin, streams: StreamClients
) -> None:
    _, probe = streams.connect(sim, rest.ls_password, [EURUSD], ["BID"], snapshot="no")
    probe.wait(lambda: probe.count() > 0, what="updates")
    sim.expire_tokens()
    seen = probe.count()
    probe.wait(lambda: probe.count() > seen + 3, what="updates after expiry")
    _, second = streams.connect(sim, rest.ls_password)
    second.wait(lambda: bool(second.server_errors), what="CONERR on the old token")
    assert second.server_errors[0][0] == 1


def test_end_32_is_terminal(sim: Simulator, rest: RestLogin, streams: StreamClients) -> None:
    _, probe = streams.connect(sim, rest.ls_password, [EURUSD], ["BID"], snapshot="no")
    probe.wait(lambda: probe.subscribed == 1, what="SUBOK")
    assert sim.end_sessions(32, "closed, by admin") == {"ended": 1}
    probe.wait(lambda: bool(probe.server_errors), what="onServerError")
    assert probe.server_errors == [(32, "closed, by admin")]
    time.sleep(0.5)
    assert probe.statuses[-1] == "DISCONNECTED"
    assert probe.subscribed == 1


def test_end_48_leads_to_a_new_session(sim: Simulator, rest: RestLogin, streams: StreamClients) -> None:
    _, probe = streams.connect(sim, rest.ls_password, [EURUSD], ["BID"], snapshot="no")
    probe.wait(lambda: probe.subscribed == 1, what="SUBOK")
    sim.end_sessions(48)
    probe.wait(lambda: probe.subscribed == 2, timeout=10, what="resubscription")
    assert "DISCONNECTED:WILL-RETRY" in probe.statuses
    assert len(set(probe.session_ids)) == 2
    assert probe.server_errors == []


def test_loop_rebinds_the_same_session_without_resubscribing(
    sim: Simulator, rest: RestLogin, streams: StreamClients
) -> None:
    client, probe = streams.connect(sim, rest.ls_password, [EURUSD], ["BID"], snapshot="no")
    probe.wait(lambda: probe.subscribed == 1 and probe.count() > 0, what="updates")
    sid = client.connectionDetails.getSessionId()
    assert sim.loop_sessions() == {"looped": 1}
    seen = probe.count()
    probe.wait(lambda: probe.count() > seen + 3 and sim.stats()["binds"] == 1, what="updates after LOOP")
    assert client.connectionDetails.getSessionId() == sid
    assert probe.subscribed == 1
    assert sim.stats()["sessions_created"] == 1


def test_stalled_stream_keeps_probing_and_recording(sim: Simulator, rest: RestLogin, streams: StreamClients) -> None:
    _, probe = streams.connect(sim, rest.ls_password, [EURUSD], ["BID"], snapshot="no")
    probe.wait(lambda: probe.count() > 0, what="updates")
    sim.stall_stream()
    time.sleep(0.1)
    seen, recorded = probe.count(), len(sim.ticks("EURUSD"))
    time.sleep(2.5)  # > keepalive + stalled + reconnect timeouts: PROBEs keep the client happy
    assert probe.count() == seen
    assert len(sim.ticks("EURUSD")) > recorded + 5
    assert probe.statuses[-1] == "CONNECTED:WS-STREAMING"
    sim.unstall_stream()
    probe.wait(lambda: probe.count() > seen, what="updates after unstall")


def test_paused_market_generates_nothing(sim: Simulator) -> None:
    sim.pause_market()
    n = sim.stats()["ticks_generated"]
    time.sleep(0.3)
    assert sim.stats()["ticks_generated"] == n
    sim.resume_market()
    time.sleep(0.3)
    assert sim.stats()["ticks_generated"] > n


@pytest.mark.parametrize("kind", ["empty", "null", "non_numeric", "crossed", "far_future", "negative", "zero"])
def test_malformed_values_arrive_as_sent_and_are_not_ground_truth(
    sim: Simulator, rest: RestLogin, streams: StreamClients, kind: str
) -> None:
    fields = ["BID", "OFR", "UTM", "LTP", "DAY_HIGH"]
    _, probe = streams.connect(sim, rest.ls_password, [EURUSD], fields, snapshot="no")
    probe.wait(lambda: probe.subscribed == 1, what="SUBOK")
    sim.pause_market()  # so the injected update is the last one
    recorded = len(sim.ticks())
    sent = sim.inject(kind, "EURUSD")
    assert sent["recipients"] == 1
    expected = {f: sent["values"][f] for f in fields}
    probe.wait(lambda: bool(probe.updates) and probe.updates[-1].values == expected, what=f"{kind} update")
    truth = truth_by_key(sim.ticks())
    assert len(sim.ticks()) == recorded  # malformed values are never ground truth
    if kind not in ("empty", "null", "non_numeric"):
        assert ("EURUSD", int(expected["UTM"]), float(expected["BID"]), float(expected["OFR"])) not in truth


def test_duplicate_resends_the_last_real_tick_without_recording_it(
    sim: Simulator, rest: RestLogin, streams: StreamClients
) -> None:
    _, probe = streams.connect(sim, rest.ls_password, [EURUSD], ["BID", "OFR", "UTM"], snapshot="no")
    probe.wait(lambda: probe.count() > 0, what="updates")
    sim.pause_market()
    time.sleep(0.1)
    before = len(probe.updates)
    recorded = len(sim.ticks())
    sim.inject("duplicate", "EURUSD")
    probe.wait(lambda: len(probe.updates) == before + 1, what="duplicate")
    assert probe.updates[-1].values == probe.updates[-2].values
    assert len(sim.ticks()) == recorded


def test_late_tick_is_streamed_and_recorded(sim: Simulator, rest: RestLogin, streams: StreamClients) -> None:
    _, probe = streams.connect(sim, rest.ls_password, [EURUSD], ["BID", "OFR", "UTM"], snapshot="no")
    probe.wait(lambda: probe.subscribed == 1, what="SUBOK")
    late = sim.inject_late_tick("EURUSD", age_ms=90_000)
    assert late.time_ms < sim.now_ms() - 89_000
    probe.wait(lambda: any(u.values["UTM"] == str(late.time_ms) for u in probe.updates), what="late tick")
    assert late in sim.ticks("EURUSD")


def test_one_session_carries_tick_and_candle_subscriptions(sim: Simulator, rest: RestLogin, streams) -> None:
    from lightstreamer.client import Subscription

    client, probe = streams.connect(sim, rest.ls_password, [EURUSD], ["BID"], snapshot="no")
    probe.wait(lambda: probe.subscribed == 1, what="first SUBOK")
    candles = Subscription("MERGE", [f"CHART:{epic('EURUSD')}:{s}" for s in STREAM_SCALES_MS], ["BID_CLOSE"])
    client.subscribe(candles)
    deadline = time.monotonic() + 5
    while sim.stats()["subscriptions"] != 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    while candles.getValue(f"CHART:{epic('EURUSD')}:HOUR", "BID_CLOSE") is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    client.unsubscribe(candles)
    while sim.stats()["subscriptions"] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert sim.stats()["sessions"] == 1


def test_pricing_adapter_price_item(sim: Simulator, rest: RestLogin, streams: StreamClients) -> None:
    item = f"PRICE:SIMACC1:{epic('EURUSD')}"
    _, probe = streams.connect(
        sim, rest.ls_password, [item], ["BIDPRICE1", "ASKPRICE1", "TIMESTAMP", "DLG_FLAG"], mode="MERGE",
        adapter="Pricing",
    )  # fmt: skip
    probe.wait(lambda: probe.count() >= 2, what="PRICE updates")
    v = probe.updates[-1].values
    assert v["DLG_FLAG"] == "DEAL"
    assert float(v["BIDPRICE1"]) < float(v["ASKPRICE1"])
    assert ("EURUSD", int(v["TIMESTAMP"]), float(v["BIDPRICE1"]), float(v["ASKPRICE1"])) in truth_by_key(sim.ticks())
