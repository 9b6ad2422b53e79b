"""The `/_sim/` HTTP control API: each endpoint reaches the same control as the Python method."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from collector.simulator.server import Simulator


def post(sim: Simulator, name: str, body: dict[str, Any] | None = None) -> requests.Response:
    return requests.post(f"{sim.url}/_sim/{name}", json=body or {}, timeout=10)


@pytest.mark.parametrize(
    ("name", "body", "answer", "stat", "value"),
    [
        ("credentials", {"refuse": True}, {"refuse_credentials": True}, "refuse_credentials", True),
        ("pause", None, {"paused": True}, "paused", True),
        ("stall", None, {"stalled": True}, "stalled", True),
        ("rest-errors", {"count": 2, "status": 503}, {"rest_errors_pending": 2, "status": 503}, "rest_errors_pending",
         2),
        ("end", {"code": 41}, {"ended": 0}, "sessions", 0),
        ("drop", {"mode": "abort"}, {"dropped": 0}, "connections", 0),
        ("loop", None, {"looped": 0}, "sessions", 0),
        ("expire-tokens", None, {"expired": 0}, "rest_sessions", 0),
    ],
)  # fmt: skip
def test_control_endpoint_answers_and_changes_state(
    sim: Simulator, name: str, body: dict | None, answer: dict, stat: str, value: object
) -> None:
    r = post(sim, name, body)
    assert (r.status_code, r.json()) == (200, answer)
    assert sim.stats()[stat] == value


def test_allowance_endpoint_sets_remaining_and_total(sim: Simulator) -> None:
    r = post(sim, "allowance", {"remaining": 5, "total": 50})
    assert {k: r.json()[k] for k in ("remainingAllowance", "totalAllowance")} == {
        "remainingAllowance": 5,
        "totalAllowance": 50,
    }


def test_inject_and_late_tick_endpoints(sim: Simulator) -> None:
    sent = post(sim, "inject", {"kind": "zero", "pair": "GBPUSD"}).json()
    assert (sent["pair"], sent["values"]["BID"], sent["values"]["OFR"], sent["recipients"]) == ("GBPUSD", "0", "0", 0)
    late = post(sim, "late-tick", {"pair": "GBPUSD", "age_ms": 5000}).json()
    assert any(t.time_ms == late["time"] and t.bid == late["bid"] for t in sim.ticks("GBPUSD"))


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("drop", {"mode": "sideways"}),
        ("inject", {"kind": "gibberish"}),
        ("inject", {}),
        ("rest-errors", {"count": 1, "status": 200}),
        ("late-tick", {"pair": "EURXXX"}),
    ],
)
def test_bad_control_requests_are_400_with_a_reason(sim: Simulator, name: str, body: dict) -> None:
    r = post(sim, name, body)
    assert r.status_code == 400
    assert r.json()["error"]
