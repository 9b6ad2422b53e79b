"""The collector's REST client under each behaviour IG may have, without being told which.

IG may read `from`/`to` of `/prices` as UTC or as the account's time zone (UK time); spread-bet
epics quote points, not rates. The simulator reproduces each (`rest_time_zone`, `.TODAY.IP`),
and the collector's `RestClient` must in every mode return exactly the gap's candles, equal to
ground truth, paying one point per missing candle and nothing else (`rest_candles_served`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from collector.config import load_settings
from collector.ig_convention import LOCAL_READING, UTC_READING, PriceScale, RestTimeConvention, Window, price_scale
from collector.ig_rest import RestClient
from collector.simulator.server import Simulator
from collector.simulator.truth import reference_candles

JULY_WEDNESDAY_NOON = int(dt.datetime(2026, 7, 15, 12, 0, tzinfo=dt.UTC).timestamp() * 1000)
JANUARY_WEDNESDAY_NOON = int(dt.datetime(2026, 1, 14, 12, 0, tzinfo=dt.UTC).timestamp() * 1000)
MIN = 60_000
FIVE = 5 * MIN


def _sim(zone: str, start_ms: int = JULY_WEDNESDAY_NOON) -> Simulator:
    return Simulator(
        seed=3, pairs=["EURUSD", "USDJPY"], ticks_per_second=20.0, start_ms=start_ms,
        history_ms=6 * 3_600_000, history_ticks=40_000, rest_time_zone=zone,
    )  # fmt: skip


@pytest.fixture(params=["UTC", "Europe/London"])
def zone_sim(request: pytest.FixtureRequest) -> Iterator[Simulator]:
    with _sim(request.param) as s:
        yield s


def _client(sim: Simulator, suffix: str = ".CFD.IP") -> RestClient:
    settings = load_settings(
        ig_username=sim.username, ig_password=sim.password, ig_api_key=sim.api_key, ig_api_url=sim.url,
        ig_epic_suffix=suffix, database_url=None,
    )  # fmt: skip
    return RestClient(settings, "collector", db_url=None, now_ms=sim.now_ms)


def _truth(sim: Simulator, pair: str, start_ms: int, end_ms: int) -> dict[int, tuple]:
    ref = reference_candles(sim.ticks(pair), ["5m"])
    return {b: row for (_p, _tf, b), row in ref.items() if start_ms <= b <= end_ms}


def _row(c) -> tuple:
    return (c.bid_open, c.bid_high, c.bid_low, c.bid_close, c.ask_open, c.ask_high, c.ask_low, c.ask_close, c.ticks)


# Gaps relative to the simulator's start (now): (from, to) in minutes ago. An old long gap (both
# readings of a probe fall inside it), a recent short one (the other reading lands after now) and
# a recent long one.
GAPS = {"old-long": (240, 90), "recent-short": (30, 10), "recent-long": (150, 5)}


@pytest.mark.parametrize("gap", list(GAPS))
def test_a_july_gap_is_fetched_exactly_under_either_time_convention(zone_sim: Simulator, gap: str) -> None:
    now = zone_sim.now_ms()
    start, end = (now - now % FIVE - GAPS[gap][0] * MIN, now - now % FIVE - GAPS[gap][1] * MIN)
    client = _client(zone_sim)
    served = zone_sim.stats()["rest_candles_served"]
    candles = client.fetch_candles("EURUSD", "5m", start, end, "repair")
    truth = _truth(zone_sim, "EURUSD", start, end)
    assert {c.bucket_ms: _row(c) for c in candles} == truth
    assert zone_sim.stats()["rest_candles_served"] - served == len(truth)  # not one point outside
    want = LOCAL_READING if zone_sim.stats()["rest_time_zone"] == "Europe/London" else UTC_READING
    assert client.convention.reading == want


def test_a_learned_convention_is_kept_for_the_next_gaps(zone_sim: Simulator) -> None:
    now = zone_sim.now_ms() - zone_sim.now_ms() % FIVE
    client = _client(zone_sim)
    client.fetch_candles("EURUSD", "5m", now - 200 * MIN, now - 100 * MIN, "repair")
    served = zone_sim.stats()["rest_candles_served"]
    candles = client.fetch_candles("USDJPY", "5m", now - 60 * MIN, now - 30 * MIN, "repair")
    assert len(candles) == 7
    assert zone_sim.stats()["rest_candles_served"] - served == 7


def test_in_winter_both_conventions_agree_and_nothing_is_probed() -> None:
    with _sim("Europe/London", JANUARY_WEDNESDAY_NOON) as sim:
        now = sim.now_ms() - sim.now_ms() % FIVE
        client = _client(sim)
        candles = client.fetch_candles("EURUSD", "5m", now - 60 * MIN, now - 20 * MIN, "repair")
        assert [c.bucket_ms for c in candles] == list(range(now - 60 * MIN, now - 20 * MIN + 1, FIVE))
        assert sim.stats()["rest_candles_served"] == 9
        assert client.convention.reading is None  # nothing to learn while UK time is UTC


@pytest.mark.parametrize("pair", ["EURUSD", "USDJPY"])
def test_spread_bet_candles_are_stored_as_the_cfd_rates(pair: str) -> None:
    with _sim("Europe/London") as sim:
        now = sim.now_ms() - sim.now_ms() % FIVE
        start, end = now - 90 * MIN, now - 30 * MIN
        bet, cfd = _client(sim, ".TODAY.IP"), _client(sim, ".CFD.IP")
        raw = bet.check_epic(f"CS.D.{pair}.TODAY.IP")["snapshot"]
        assert raw["bid"] > 10_000  # quoted in points, as IG quotes spread bets
        got = bet.fetch_candles(pair, "5m", start, end, "repair")
        assert [_row(c) for c in got] == [_row(c) for c in cfd.fetch_candles(pair, "5m", start, end, "repair")]
        assert {c.bucket_ms: _row(c) for c in got} == _truth(sim, pair, start, end)
        assert bet.scales[pair] == PriceScale(10_000 if pair == "EURUSD" else 100, 5 if pair == "EURUSD" else 3)


# --- the pure parts ------------------------------------------------------------------------------


def test_price_scale_from_market_snapshots_as_ig_sends_them() -> None:
    assert price_scale("GBPUSD", {"snapshot": {"decimalPlacesFactor": 5, "scalingFactor": 10000}}) == PriceScale(1, 5)
    bet = price_scale("GBPUSD", {"snapshot": {"decimalPlacesFactor": 1, "scalingFactor": 10000}})
    assert (bet.rate(13681.4), bet.rate(13682.9)) == (1.36814, 1.36829)  # IG's recorded GBPUSD close
    assert bet.rate_text("13681.4") == "1.36814"
    assert [bet.rate_text(v) for v in (None, "", "abc", "nan")] == [None, "", "abc", "nan"]
    jpy = price_scale("USDJPY", {"snapshot": {"decimalPlacesFactor": 1, "scalingFactor": 100}})
    assert jpy.rate("15012.3") == 150.123


def test_an_unexplainable_scale_is_refused_with_the_numbers() -> None:
    with pytest.raises(ValueError, match="decimalPlacesFactor 2, scalingFactor 10000"):
        price_scale("EURUSD", {"snapshot": {"decimalPlacesFactor": 2, "scalingFactor": 10000}})


def test_learning_needs_a_bucket_that_only_one_reading_explains() -> None:
    conv = RestTimeConvention()
    w = Window("2026-07-15T10:00:00", "2026-07-15T10:00:00")
    conv.learn(w, [{"snapshotTimeUTC": "2026-07-15T09:00:00"}])  # IG read 10:00 as UK time
    assert conv.reading == LOCAL_READING
    conv.learn(w, [{"snapshotTimeUTC": "2026-07-15T10:00:00"}])  # and now as UTC: it changed its mind
    assert conv.reading == UTC_READING
    winter = RestTimeConvention()
    winter.learn(Window("2026-01-15T10:00:00", "2026-01-15T10:00:00"), [{"snapshotTimeUTC": "2026-01-15T10:00:00"}])
    assert winter.reading is None


def test_day_candles_start_at_midnight_uk_time() -> None:
    start = int(dt.datetime(2026, 7, 15, 2, 0, tzinfo=dt.UTC).timestamp() * 1000)
    with Simulator(seed=3, pairs=["EURUSD"], ticks_per_second=0.0, start_ms=start, history_ms=4 * 3_600_000,
                   history_ticks=400) as sim:  # fmt: skip
        client = _client(sim)
        status, body = client._get(
            "/prices/CS.D.EURUSD.CFD.IP", {"resolution": "DAY", "from": "2026-07-14T00:00:00",
                                          "to": "2026-07-15T02:00:00", "pageSize": 0}, version="3",
        )  # fmt: skip
        assert status == 200
        (day,) = body["prices"]
        assert (day["snapshotTimeUTC"], day["snapshotTime"]) == ("2026-07-14T23:00:00", "2026/07/15 00:00:00")
        midnight_uk = start - 3 * 3_600_000
        assert day["lastTradedVolume"] == len(sim.ticks("EURUSD", from_ms=midnight_uk))
