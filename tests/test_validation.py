"""Parsing raw stream values (Lightstreamer strings, CSV fields) and the stateless value rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.validation import (
    MAX_TIME_MS,
    Parsed,
    Reject,
    check_values,
    check_values_batch,
    parse_columns,
    parse_price,
    parse_raw,
    parse_time,
)

CODES = {"EURUSD": 0, "USDJPY": 1}


def test_reject_labels_are_the_metrics_vocabulary() -> None:
    from collector.metrics import REJECT_REASONS

    assert {r.label for r in Reject} == set(REJECT_REASONS)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1.08765", 1.08765), (" 149.5 ", 149.5), ("1e-3", 0.001), (1.5, 1.5), (2, 2.0), ("-0.5", -0.5)],
)
def test_price_parses_decimal_strings_and_numbers(raw: object, expected: float) -> None:
    assert parse_price(raw) == expected


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_absent_or_blank_price_is_missing(raw: object) -> None:
    assert parse_price(raw) is Reject.MISSING


@pytest.mark.parametrize("raw", ["abc", "1,5", "nan", "inf", "-Infinity", "1e400", object(), True])
def test_unparseable_or_non_finite_price_is_non_numeric(raw: object) -> None:
    assert parse_price(raw) is Reject.NON_NUMERIC


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1700000000123", 1700000000123), ("1.7e12", 1_700_000_000_000), (1700000000123, 1700000000123)],
)
def test_time_parses_whole_milliseconds(raw: object, expected: int) -> None:
    assert parse_time(raw) == expected


@pytest.mark.parametrize("raw", ["1700000000123.5", "soon", "nan", 1.5])
def test_fractional_or_unparseable_time_is_non_numeric(raw: object) -> None:
    assert parse_time(raw) is Reject.NON_NUMERIC


def test_missing_wins_over_non_numeric_across_fields() -> None:
    assert parse_raw("EURUSD", "abc", None, "1") is Reject.MISSING


def test_blank_pair_is_missing() -> None:
    assert parse_raw(" ", "1.1", "1.2", "1") is Reject.MISSING


def test_parse_raw_returns_typed_values() -> None:
    assert parse_raw("EURUSD", "1.1", "1.1002", "1700000000000") == Parsed("EURUSD", 1_700_000_000_000, 1.1, 1.1002)


@pytest.mark.parametrize(
    ("known", "t", "bid", "ask", "expected"),
    [
        (True, 1, 1.0, 1.0, None),  # bid == ask is a valid (locked) quote
        (True, 1, math.nan, 1.0, Reject.NON_NUMERIC),
        (True, 0, 1.0, 1.1, Reject.NON_NUMERIC),  # time must be positive
        (False, 1, -1.0, 1.1, Reject.UNKNOWN_PAIR),  # pair checked before prices
        (True, 1, 0.0, 1.1, Reject.NON_POSITIVE),
        (True, 1, 1.0, -1.0, Reject.NON_POSITIVE),  # non-positive checked before crossed
        (True, 1, 1.2, 1.1, Reject.CROSSED),
        (True, MAX_TIME_MS + 1, 1.0, 1.1, Reject.FUTURE),
    ],
)
def test_value_rules_in_their_fixed_order(known: bool, t: int, bid: float, ask: float, expected) -> None:
    assert check_values(known, t, bid, ask) == expected


def test_batch_value_rules_match_scalar_rules() -> None:
    cases = [
        (0, 1, 1.0, 1.0),
        (0, 1, math.nan, 1.0),
        (0, 0, 1.0, 1.1),
        (-1, 1, -1.0, 1.1),
        (5, 1, 1.0, 1.1),
        (0, 1, 0.0, 1.1),
        (0, 1, 1.0, -1.0),
        (0, 1, 1.2, 1.1),
        (0, MAX_TIME_MS + 1, 1.0, 1.1),
        (1, 1, math.inf, 1.1),
    ]
    c, t, b, a = (np.array(x) for x in zip(*cases, strict=True))
    got = check_values_batch(c, 2, t, b, a).tolist()
    want = [check_values(0 <= ci < 2, ti, bi, ai) or 0 for ci, ti, bi, ai in cases]
    assert got == want


def test_parse_columns_fast_path() -> None:
    pb = parse_columns(["EURUSD", "USDJPY"], ["1.1", "150.1"], ["1.2", "150.2"], ["10", "20"], CODES)
    assert pb.codes.tolist() == [0, 1]
    assert pb.times.tolist() == [10, 20]
    assert pb.bids.tolist() == [1.1, 150.1]
    assert pb.asks.tolist() == [1.2, 150.2]
    assert pb.reason.tolist() == [0, 0]


def test_parse_columns_marks_unknown_pairs_with_code_minus_one() -> None:
    pb = parse_columns(["GBPUSD"], ["1.1"], ["1.2"], ["10"], CODES)
    assert (pb.codes.tolist(), pb.reason.tolist()) == ([-1], [0])


_raw_price = st.one_of(
    st.none(),
    st.sampled_from(["", " ", "abc", "nan", "inf", "1e400", "0", "-1.5", "1.25", " 2.5 ", "1_0", "3"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
_raw_time = st.one_of(
    st.none(),
    st.sampled_from(["", "x", "1.5", "1e3", "-5", "0", "1700000000000", "1e300", "99999999999999999999"]),
    st.integers(-10, 1 << 50).map(str),
)
_raw_pair = st.sampled_from(["EURUSD", "USDJPY", "GBPUSD", "", " EURUSD ", None])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_raw_pair, _raw_price, _raw_price, _raw_time), min_size=1, max_size=30))
def test_parse_columns_equals_parse_raw_row_by_row(rows) -> None:
    """The vectorised parser (replay, queue drains) gives each row the scalar parser's result."""
    pairs, bids, asks, times = (list(x) for x in zip(*rows, strict=True))
    pb = parse_columns(pairs, bids, asks, times, CODES)
    for i, row in enumerate(rows):
        one = parse_raw(*row)
        if isinstance(one, Reject):
            assert pb.reason[i] == one, row
        else:
            assert pb.reason[i] == 0, row
            assert pb.codes[i] == CODES.get(one.pair, -1)
            assert (pb.bids[i], pb.asks[i]) == (one.bid, one.ask)
            if one.time_ms <= MAX_TIME_MS:
                assert pb.times[i] == one.time_ms
            else:
                assert pb.times[i] > MAX_TIME_MS
