"""The simulator's REST answers have the shape of IG's recorded responses.

The shapes (keys, nesting, JSON types, date formats) are our own records of responses captured
from IG and published by others (tests/fixtures/ig_shapes/README.md says where each was seen).
A simulator answer that drifts from them would let the collector pass against a fiction.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from simkit import RestLogin, epic, rest_login

from collector.simulator.server import Simulator

SHAPES = Path(__file__).resolve().parents[1] / "fixtures" / "ig_shapes"
TIME_FORMATS = {"yyyy/MM/dd HH:mm:ss": "%Y/%m/%d %H:%M:%S", "yyyy-MM-ddTHH:mm:ss": "%Y-%m-%dT%H:%M:%S",
                "HH:mm:ss": "%H:%M:%S"}  # fmt: skip
START_MS = int(dt.datetime(2026, 7, 15, 12, 0, tzinfo=dt.UTC).timestamp() * 1000)


def shape(name: str) -> Any:
    return json.loads((SHAPES / f"{name}.json").read_text())["shape"]


def _type_ok(kind: str, value: Any) -> bool:
    if kind.startswith("time:"):
        try:
            dt.datetime.strptime(value, TIME_FORMATS[kind[5:]])
        except (TypeError, ValueError):
            return False
        return True
    return any(
        (k == "string" and isinstance(value, str))
        or (k == "integer" and isinstance(value, int) and not isinstance(value, bool))
        or (k == "number" and isinstance(value, int | float) and not isinstance(value, bool))
        or (k == "boolean" and isinstance(value, bool))
        or (k == "null" and value is None)
        for k in kind.split("|")
    )


def mismatches(want: Any, got: Any, path: str = "$") -> list[str]:
    """Where `got` departs from the shape `want`, as readable paths."""
    if isinstance(want, str):
        return [] if _type_ok(want, got) else [f"{path}: {got!r} is not {want}"]
    if isinstance(want, list):
        if not isinstance(got, list) or not got:
            return [f"{path}: expected a non-empty array, got {got!r}"]
        return [m for i, item in enumerate(got) for m in mismatches(want[0], item, f"{path}[{i}]")]
    if not isinstance(got, dict):
        return [f"{path}: expected an object, got {got!r}"]
    out = [f"{path}.{k}: missing" for k in want if k != "$exact" and k not in got]
    out += [m for k, w in want.items() if k != "$exact" and k in got for m in mismatches(w, got[k], f"{path}.{k}")]
    if want.get("$exact"):
        out += [f"{path}.{k}: not in IG's answer" for k in got if k not in want]
    return out


@pytest.fixture(scope="module")
def login() -> Any:
    with Simulator(seed=5, pairs=["EURUSD", "USDJPY"], ticks_per_second=0.0, start_ms=START_MS,
                   history_ms=3_600_000, history_ticks=5_000) as sim:  # fmt: skip
        yield rest_login(sim)


@pytest.mark.parametrize("suffix", [".CFD.IP", ".TODAY.IP"])
def test_prices_have_igs_shape(login: RestLogin, suffix: str) -> None:
    body = login.get(f"/prices/{epic('USDJPY', suffix)}", resolution="MINUTE_5", to="2026-07-15T11:55:00",
                     **{"from": "2026-07-15T11:30:00"}).json()  # fmt: skip
    assert len(body["prices"]) == 6
    assert mismatches(shape("prices_v3"), body) == []


@pytest.mark.parametrize("suffix", [".CFD.IP", ".MINI.IP", ".TODAY.IP"])
def test_market_details_have_igs_shape(login: RestLogin, suffix: str) -> None:
    assert mismatches(shape("market_v3"), login.get(f"/markets/{epic('EURUSD', suffix)}").json()) == []


def test_session_has_igs_shape(login: RestLogin) -> None:
    assert mismatches(shape("session"), login.get("/session", version="1").json()) == []


def test_applications_have_igs_shape(login: RestLogin) -> None:
    assert mismatches(shape("applications"), login.get("/operations/application", version="1").json()) == []


def test_the_shape_check_catches_a_drift() -> None:
    want = {"$exact": True, "a": "time:yyyy-MM-ddTHH:mm:ss", "b": ["integer"]}
    assert mismatches(want, {"a": "2020/09/01 00:00:00", "b": [1, 2.5], "c": 0}) == [
        "$.a: '2020/09/01 00:00:00' is not time:yyyy-MM-ddTHH:mm:ss",
        "$.b[1]: 2.5 is not integer",
        "$.c: not in IG's answer",
    ]
