"""The simulator's IG REST gateway, driven through the real trading-ig and through raw requests."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests
from simkit import epic, ig_service, rest_login

from collector import tickfile
from collector.models import Tick
from collector.simulator.server import Simulator

START_MS = 1_719_835_200_000  # 2024-07-01T12:00:00Z, British Summer Time (UK = UTC+1)
HOUR = 3_600_000
ALLOWANCE_ERR = "error.public-api.exceeded-account-historical-data-allowance"


@pytest.fixture
def fast_sim() -> Iterator[Simulator]:
    """A market that starts at 13:00 BST with an hour of history (20 ticks per pair-minute)."""
    pairs = ("EURUSD", "GBPUSD", "AUDNZD")
    with Simulator(
        seed=3, ticks_per_second=100.0, pairs=pairs, start_ms=START_MS + HOUR, history_ms=HOUR, history_ticks=3600
    ) as s:
        yield s


def reference_candles(ticks: list[Tick], pair: str, tf_ms: int) -> list[dict[str, float | int]]:
    """Plain-Python aggregation: open/close by time (ties by file order), high/low, count."""
    buckets: dict[int, list[tuple[int, int, Tick]]] = {}
    for i, t in enumerate(ticks):
        if t.pair == pair:
            buckets.setdefault(t.time_ms - t.time_ms % tf_ms, []).append((t.time_ms, i, t))
    out = []
    for b in sorted(buckets):
        rows = [t for _, _, t in sorted(buckets[b], key=lambda r: (r[0], r[1]))]
        out.append(
            {
                "bucket": b,
                "bid_open": rows[0].bid,
                "bid_high": max(t.bid for t in rows),
                "bid_low": min(t.bid for t in rows),
                "bid_close": rows[-1].bid,
                "ask_open": rows[0].ask,
                "ask_high": max(t.ask for t in rows),
                "ask_low": min(t.ask for t in rows),
                "ask_close": rows[-1].ask,
                "ticks": len(rows),
            }
        )
    return out


def rest_rows(prices: list[dict]) -> list[dict[str, float | int]]:
    return [
        {
            "bucket": int(datetime.fromisoformat(p["snapshotTimeUTC"]).replace(tzinfo=UTC).timestamp() * 1000),
            "bid_open": p["openPrice"]["bid"],
            "bid_high": p["highPrice"]["bid"],
            "bid_low": p["lowPrice"]["bid"],
            "bid_close": p["closePrice"]["bid"],
            "ask_open": p["openPrice"]["ask"],
            "ask_high": p["highPrice"]["ask"],
            "ask_low": p["lowPrice"]["ask"],
            "ask_close": p["closePrice"]["ask"],
            "ticks": p["lastTradedVolume"],
        }
        for p in prices
    ]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def ground_truth(sim: Simulator) -> list[Tick]:
    r = requests.get(sim.url + "/_sim/ticks.csv", timeout=30)
    r.raise_for_status()
    return tickfile.parse(io.StringIO(r.text))


# --- sessions -------------------------------------------------------------------------------
def test_v2_login_through_trading_ig_returns_tokens_and_lightstreamer_endpoint(sim: Simulator) -> None:
    ig = ig_service(sim)
    body = ig.create_session(version="2")
    assert body["currentAccountId"] == "SIMACC1"
    assert body["lightstreamerEndpoint"] == sim.url
    assert body["accounts"][0]["accountId"] == "SIMACC1"
    assert len(ig.session.headers["CST"]) == 48
    assert len(ig.session.headers["X-SECURITY-TOKEN"]) == 48


def test_v3_login_through_trading_ig_then_session_tokens_for_streaming(sim: Simulator) -> None:
    from trading_ig import IGStreamService

    ig = ig_service(sim, version="3")
    stream = IGStreamService(ig)
    body = ig.create_session(version="3")
    assert body["oauthToken"]["token_type"] == "Bearer"
    assert ig.session.headers["Authorization"].startswith("Bearer ")
    assert ig.session.headers["IG-ACCOUNT-ID"] == "SIMACC1"
    session = ig.read_session(fetch_session_tokens="true")
    assert session["accountId"] == "SIMACC1"
    assert session["lightstreamerEndpoint"] == sim.url
    assert ig.session.headers["CST"] and ig.session.headers["X-SECURITY-TOKEN"]
    assert stream.ig_service is ig


def test_wrong_password_is_401_invalid_details(sim: Simulator) -> None:
    from trading_ig.rest import IGException

    ig = ig_service(sim, password="wrong")
    with pytest.raises(IGException, match=r"HTTP error: 401 .*error\.security\.invalid-details"):
        ig.create_session()


def test_wrong_api_key_is_403_api_key_invalid(sim: Simulator) -> None:
    from trading_ig.rest import IGException

    ig = ig_service(sim, api_key="not-the-key")
    with pytest.raises(IGException, match=r"HTTP error: 403 .*error\.security\.api-key-invalid"):
        ig.create_session()


def test_refused_credentials_fail_login_until_turned_off(sim: Simulator) -> None:
    from trading_ig.rest import IGException

    sim.refuse_credentials(True)
    with pytest.raises(IGException, match="invalid-details"):
        ig_service(sim).create_session()
    sim.refuse_credentials(False)
    assert ig_service(sim).create_session()["currentAccountId"] == "SIMACC1"


def test_expired_tokens_give_client_token_invalid(sim: Simulator) -> None:
    from trading_ig.rest import TokenInvalidException

    ig = ig_service(sim)
    ig.create_session()
    assert ig.fetch_market_by_epic(epic("EURUSD"))["instrument"]["epic"] == epic("EURUSD")
    assert sim.expire_tokens() == {"expired": 1}
    with pytest.raises(TokenInvalidException):
        ig.fetch_market_by_epic(epic("EURUSD"))
    r = requests.get(
        sim.url + "/markets/" + epic("EURUSD"),
        headers={k: ig.session.headers[k] for k in ("X-IG-API-KEY", "CST", "X-SECURITY-TOKEN")},
        timeout=10,
    )
    assert (r.status_code, r.json()) == (401, {"errorCode": "error.security.client-token-invalid"})


def test_idle_tokens_expire_after_ttl() -> None:
    with Simulator(token_ttl_s=0.3, ticks_per_second=10) as s:
        login = rest_login(s)
        assert login.get("/markets/" + epic("EURUSD")).status_code == 200
        time.sleep(0.45)
        r = login.get("/markets/" + epic("EURUSD"))
        assert (r.status_code, r.json()["errorCode"]) == (401, "error.security.client-token-invalid")


def test_v3_access_token_expiry_is_refreshed_by_trading_ig() -> None:
    with Simulator(oauth_ttl_s=1, ticks_per_second=10) as s:
        ig = ig_service(s, version="3")
        ig.create_session(version="3")
        old = ig.session.headers["Authorization"]
        time.sleep(1.1)
        raw = requests.get(
            s.url + "/markets/" + epic("EURUSD"),
            headers={"X-IG-API-KEY": s.api_key, "Authorization": old, "IG-ACCOUNT-ID": "SIMACC1"},
            timeout=10,
        )
        assert (raw.status_code, raw.json()) == (401, {"errorCode": "error.security.oauth-token-invalid"})
        assert ig.fetch_market_by_epic(epic("EURUSD"))["instrument"]["epic"] == epic("EURUSD")
        assert ig.session.headers["Authorization"] != old


def test_logout_via_trading_ig_revokes_the_session(sim: Simulator) -> None:
    ig = ig_service(sim)
    ig.create_session()
    headers = {k: ig.session.headers[k] for k in ("X-IG-API-KEY", "CST", "X-SECURITY-TOKEN")}
    ig.logout()
    r = requests.get(sim.url + "/session", headers=headers, timeout=10)
    assert r.status_code == 401


# --- markets --------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".CFD.IP", ".MINI.IP", ".TODAY.IP"])
def test_market_details_for_each_epic_suffix(sim: Simulator, suffix: str) -> None:
    ig = ig_service(sim)
    ig.create_session()
    m = ig.fetch_market_by_epic(epic("USDJPY", suffix))
    assert m["instrument"]["epic"] == epic("USDJPY", suffix)
    assert m["instrument"]["type"] == "CURRENCIES"
    assert m["instrument"]["onePipMeans"] == "0.01 JPY/USD"
    assert m["snapshot"]["marketStatus"] == "TRADEABLE"
    scale = 100 if suffix == ".TODAY.IP" else 1  # a spread bet quotes points: the rate x 100 for JPY
    assert 140 * scale < m["snapshot"]["bid"] < m["snapshot"]["offer"] < 160 * scale
    assert m["snapshot"]["scalingFactor"] == 100
    assert m["snapshot"]["decimalPlacesFactor"] == (1 if suffix == ".TODAY.IP" else 3)


def test_unknown_epic_is_404_epic_unavailable(rest) -> None:
    r = rest.get("/markets/CS.D.EURXXX.CFD.IP")
    assert (r.status_code, r.json()) == (404, {"errorCode": "error.service.marketdata.instrument.epic.unavailable"})


# --- prices ---------------------------------------------------------------------------------
def test_rest_candles_equal_reference_aggregation_of_ground_truth(fast_sim: Simulator) -> None:
    login = rest_login(fast_sim)
    fast_sim.inject_late_tick("EURUSD", age_ms=7 * 60_000)
    now = fast_sim.now_ms()
    to_ms = now - now % 60_000 - 60_000  # last closed minute
    for resolution, tf_ms in (("MINUTE", 60_000), ("MINUTE_5", 300_000)):
        r = login.get(
            f"/prices/{epic('EURUSD')}", resolution=resolution, pageSize=0, to=iso(to_ms), **{"from": iso(START_MS)}
        )
        assert r.status_code == 200, r.text
        truth = reference_candles(ground_truth(fast_sim), "EURUSD", tf_ms)
        expected = [c for c in truth if START_MS <= c["bucket"] <= to_ms - to_ms % tf_ms]
        assert len(expected) >= 3
        assert rest_rows(r.json()["prices"]) == expected


def test_trading_ig_history_helper_with_pandas_resolution_and_uk_local_index(fast_sim: Simulator) -> None:
    ig = ig_service(fast_sim)
    ig.create_session()
    to_ms = START_MS + 10 * 60_000
    data = ig.fetch_historical_prices_by_epic(
        epic("GBPUSD"), resolution="5Min", start_date=iso(START_MS), end_date=iso(to_ms), wait=0
    )
    prices = data["prices"]
    # snapshotTime is UK local time: 12:00 UTC is 13:00 BST.
    assert [str(ts) for ts in prices.index] == ["2024-07-01 13:00:00", "2024-07-01 13:05:00", "2024-07-01 13:10:00"]
    truth = reference_candles(ground_truth(fast_sim), "GBPUSD", 300_000)[:3]
    assert list(prices[("bid", "Open")]) == [c["bid_open"] for c in truth]
    assert list(prices[("ask", "Close")]) == [c["ask_close"] for c in truth]
    assert list(prices[("last", "Volume")]) == [c["ticks"] for c in truth]
    assert data["metadata"]["allowance"]["remainingAllowance"] == 10_000 - 3


def test_trading_ig_flat_prices_index_is_utc(fast_sim: Simulator) -> None:
    ig = ig_service(fast_sim)
    ig.create_session()
    data = ig.fetch_historical_prices_by_epic(
        epic("GBPUSD"), resolution="15Min", start_date=iso(START_MS), end_date=iso(START_MS), wait=0,
        format=ig.flat_prices,
    )  # fmt: skip
    assert [str(ts) for ts in data["prices"].index] == ["2024-07-01 12:00:00"]


def test_range_is_inclusive_of_bucket_starts(fast_sim: Simulator) -> None:
    login = rest_login(fast_sim)
    b = START_MS + 5 * 60_000
    one = login.get(f"/prices/{epic('EURUSD')}", resolution="MINUTE", to=iso(b), **{"from": iso(b)}).json()
    assert [p["snapshotTimeUTC"] for p in one["prices"]] == ["2024-07-01T12:05:00"]
    three = login.get(
        f"/prices/{epic('EURUSD')}", resolution="MINUTE", to=iso(b + 120_000), **{"from": iso(b - 30_000)}
    ).json()
    assert [p["snapshotTimeUTC"] for p in three["prices"]] == [
        "2024-07-01T12:05:00", "2024-07-01T12:06:00", "2024-07-01T12:07:00",
    ]  # fmt: skip


def test_forming_bucket_is_returned_and_nothing_after_now(fast_sim: Simulator) -> None:
    login = rest_login(fast_sim)
    r = login.get(
        f"/prices/{epic('EURUSD')}", resolution="HOUR", pageSize=0,
        to=iso(START_MS + 10 * 3_600_000), **{"from": iso(START_MS - 3_600_000)},
    )  # fmt: skip
    prices = r.json()["prices"]
    assert [p["snapshotTimeUTC"] for p in prices] == ["2024-07-01T12:00:00", "2024-07-01T13:00:00"]
    assert prices[1]["lastTradedVolume"] < 60  # 13:00 is still forming: only the ticks so far
    assert fast_sim.now_ms() < START_MS + 2 * HOUR


def test_default_request_returns_last_ten_minute_candles(fast_sim: Simulator) -> None:
    r = rest_login(fast_sim).get(f"/prices/{epic('EURUSD')}")
    body = r.json()
    assert len(body["prices"]) == 10
    times = [p["snapshotTimeUTC"] for p in body["prices"]]
    assert times == sorted(times)
    now = fast_sim.now_ms()
    assert body["prices"][-1]["snapshotTimeUTC"] <= iso(now - now % 60_000)


def test_allowance_decreases_by_one_per_candle_and_exhaustion_is_403(fast_sim: Simulator) -> None:
    login = rest_login(fast_sim)
    path = f"/prices/{epic('EURUSD')}"
    args = {"resolution": "MINUTE", "from": iso(START_MS), "to": iso(START_MS + 4 * 60_000)}
    first = login.get(path, **args).json()["metadata"]
    assert first["size"] == 5
    assert first["allowance"]["remainingAllowance"] == 10_000 - 5
    assert first["allowance"]["totalAllowance"] == 10_000
    fast_sim.set_allowance(4)
    r = login.get(path, **args)
    assert (r.status_code, r.json()) == (403, {"errorCode": ALLOWANCE_ERR})
    assert fast_sim.stats()["allowance"]["remainingAllowance"] == 4


def test_trading_ig_raises_the_allowance_error_code(fast_sim: Simulator) -> None:
    ig = ig_service(fast_sim)
    ig.create_session()
    fast_sim.set_allowance(0)
    with pytest.raises(Exception, match=ALLOWANCE_ERR):
        ig.fetch_historical_prices_by_epic(epic("EURUSD"), start_date=iso(START_MS), end_date=iso(START_MS), wait=0)


def test_paging_spends_per_page_and_trading_ig_collects_all_pages(fast_sim: Simulator) -> None:
    login = rest_login(fast_sim)
    path = f"/prices/{epic('EURUSD')}"
    args = {"resolution": "MINUTE", "from": iso(START_MS), "to": iso(START_MS + 4 * 60_000), "pageSize": 2}
    page3 = login.get(path, pageNumber=3, **args).json()
    assert page3["metadata"]["pageData"] == {"pageSize": 2, "pageNumber": 3, "totalPages": 3}
    assert [p["snapshotTimeUTC"] for p in page3["prices"]] == ["2024-07-01T12:04:00"]
    assert page3["metadata"]["allowance"]["remainingAllowance"] == 10_000 - 1

    ig = ig_service(fast_sim)
    ig.create_session()
    ig.return_dataframe = False
    data = ig.fetch_historical_prices_by_epic(
        epic("EURUSD"), start_date=iso(START_MS), end_date=iso(START_MS + 4 * 60_000), pagesize=2, wait=0
    )
    assert len(data["prices"]) == 5
    assert data["metadata"]["allowance"]["remainingAllowance"] == 10_000 - 1 - 5


def test_rest_error_mode_fails_the_next_n_price_calls(fast_sim: Simulator) -> None:
    from trading_ig.rest import IGException

    login = rest_login(fast_sim)
    path = f"/prices/{epic('EURUSD')}"
    fast_sim.fail_rest(2, status=503)
    assert login.get(path).status_code == 503
    ig = ig_service(fast_sim)
    ig.create_session()
    with pytest.raises(IGException, match="Server problem: status code: 503"):
        ig.fetch_historical_prices_by_epic(epic("EURUSD"), wait=0)
    assert login.get(path).status_code == 200


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"from": "2024-13-01T00:00:00"}, 400, "Unable to parse datetime=2024-13-01T00:00:00"),
        ({"from": "2020/09/01T00:00:00"}, 400, "Unable to parse datetime=2020/09/01T00:00:00"),
        ({"to": "2021-06-01 01:00:00"}, 400, "Unable to parse datetime=2021-06-01 01:00:00"),
        ({"from": "2024-07-01T12:00:00Z"}, 400, "Unable to parse datetime=2024-07-01T12:00:00Z"),
        ({"from": "2024-07-01T12:10:00", "to": "2024-07-01T12:00:00"}, 400, "error.invalid.daterange"),
        ({"resolution": "FORTNIGHT"}, 400, "error.invalid.resolution"),
    ],
)
def test_bad_price_requests_are_rejected(rest, params: dict[str, str], status: int, code: str) -> None:
    r = rest.get(f"/prices/{epic('EURUSD')}", **params)
    assert (r.status_code, r.json()) == (status, {"errorCode": code})


def test_ticks_csv_filters_by_pair_and_time(fast_sim: Simulator) -> None:
    lo, hi = START_MS + 60_000, START_MS + 120_000
    r = requests.get(
        fast_sim.url + "/_sim/ticks.csv", params={"pair": "AUDNZD", "from_ms": lo, "to_ms": hi}, timeout=10
    )
    got = tickfile.parse(io.StringIO(r.text))
    expected = [t for t in fast_sim.ticks() if t.pair == "AUDNZD" and lo <= t.time_ms <= hi]
    assert got == expected
    assert got


def test_clock_endpoint_follows_the_linear_contract() -> None:
    with Simulator(start_ms=START_MS, speed=600.0, ticks_per_second=10) as s:
        c = requests.get(s.url + "/_sim/clock", timeout=10).json()
        assert (c["start_ms"], c["speed"]) == (START_MS, 600.0)
        time.sleep(0.2)
        wall = time.time_ns() // 1_000_000
        expected = c["start_ms"] + int((wall - c["wall_start_ms"]) * c["speed"])
        assert abs(expected - s.now_ms()) <= 600 * 20  # within 20 ms of wall time
        assert s.now_ms() - START_MS >= 600 * 200


def test_market_details_for_a_pair_outside_the_simulated_set(fast_sim: Simulator) -> None:
    m = rest_login(fast_sim).get("/markets/" + epic("CADCHF"), version="3").json()
    assert m["instrument"]["epic"] == epic("CADCHF")
    assert m["snapshot"]["offer"] > m["snapshot"]["bid"] > 0
