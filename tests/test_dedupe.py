"""The duplicate filter on its own: what counts as a repeat, for how long, on both paths."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.dedupe import DuplicateFilter

T = 1_709_892_000_000  # 2024-03-08 10:00 UTC
S = 1000
WINDOW = 10 * S


def dedupe() -> DuplicateFilter:
    return DuplicateFilter(n_pairs=2, window_ms=WINDOW)


def batch(f: DuplicateFilter, codes: list[int], times: list[int], bids: list[float], asks: list[float]):
    duplicate, order = f.admit_batch(
        np.array(codes, np.int64), np.array(times, np.int64), np.array(bids), np.array(asks)
    )
    return duplicate.tolist(), order.tolist()


# ---------------------------------------------------------------------------------- per tick
def test_a_new_tick_is_admitted_and_its_repeat_refused() -> None:
    f = dedupe()
    assert [f.admit(0, T, 1.1, 1.2), f.admit(0, T, 1.1, 1.2)] == [True, False]


def test_the_same_millisecond_with_another_quote_is_admitted() -> None:
    f = dedupe()
    assert [f.admit(0, T, 1.1, 1.2), f.admit(0, T, 1.1, 1.3), f.admit(0, T, 1.0, 1.2)] == [True, True, True]


def test_the_same_quote_on_another_pair_is_admitted() -> None:
    f = dedupe()
    assert [f.admit(0, T, 1.1, 1.2), f.admit(1, T, 1.1, 1.2)] == [True, True]


def test_a_repeat_at_the_window_edge_of_the_pairs_newest_time_is_refused() -> None:
    f = dedupe()
    f.admit(0, T, 1.1, 1.2)
    f.admit(0, T + WINDOW, 1.1, 1.2)
    assert f.admit(0, T, 1.1, 1.2) is False


def test_a_repeat_older_than_the_window_is_admitted_again() -> None:
    f = dedupe()
    f.admit(0, T, 1.1, 1.2)
    f.admit(0, T + WINDOW + 1, 1.1, 1.2)
    assert f.admit(0, T, 1.1, 1.2) is True


def test_the_window_runs_from_the_newest_time_of_that_pair_only() -> None:
    f = dedupe()
    f.admit(0, T, 1.1, 1.2)
    f.admit(1, T + WINDOW + 1, 1.1, 1.2)  # another pair moving on does not age pair 0's keys
    assert f.admit(0, T, 1.1, 1.2) is False


def test_len_counts_every_remembered_key() -> None:
    f = dedupe()
    for i in range(3):
        f.admit(0, T + i, 1.1, 1.2)
    f.admit(0, T, 1.1, 1.2)  # a repeat adds nothing
    assert len(f) == 3


# ---------------------------------------------------------------------------------- batch
def test_batch_refuses_repeats_inside_the_batch_in_arrival_order() -> None:
    f = dedupe()
    dup, _ = batch(f, [0, 0, 0, 0], [T, T + 1, T + 1, T], [1.1, 1.1, 1.1, 1.1], [1.2] * 4)
    assert dup == [False, False, True, True]


def test_batch_refuses_repeats_of_ticks_the_per_tick_path_admitted() -> None:
    f = dedupe()
    f.admit(0, T, 1.1, 1.2)
    dup, _ = batch(f, [0, 0], [T, T + 1], [1.1, 1.1], [1.2, 1.2])
    assert dup == [True, False]


def test_the_per_tick_path_refuses_repeats_of_ticks_a_batch_admitted() -> None:
    f = dedupe()
    batch(f, [0, 1], [T, T], [1.1, 1.1], [1.2, 1.2])
    assert [f.admit(0, T, 1.1, 1.2), f.admit(1, T, 1.1, 1.2), f.admit(1, T, 1.1, 1.25)] == [False, False, True]


def test_batch_measures_the_window_from_the_newest_time_before_each_tick() -> None:
    f = dedupe()
    # The third tick repeats the first, but by then the pair has moved past the window.
    dup, _ = batch(f, [0, 0, 0], [T, T + WINDOW + 1, T], [1.1] * 3, [1.2] * 3)
    assert dup == [False, False, False]


def test_batch_returns_the_pair_time_arrival_order() -> None:
    f = dedupe()
    _, order = batch(f, [1, 0, 0, 0], [T, T + 5, T, T], [1.1, 1.1, 1.1, 1.2], [1.2, 1.2, 1.2, 1.3])
    assert order == [2, 3, 1, 0]


def test_batch_prunes_keys_no_tick_can_repeat_any_more() -> None:
    f = dedupe()
    f.admit(0, T, 1.1, 1.2)
    f.admit(0, T + 5 * S, 1.1, 1.2)
    f.admit(1, T, 1.1, 1.2)
    batch(f, [0], [T + 20 * S], [1.1], [1.2])
    assert len(f) == 2  # pair 0's two old keys gone; its new one and pair 1's stay


# ---------------------------------------------------------------------------------- restart
def test_seeded_ticks_are_refused_as_repeats() -> None:
    f = dedupe()
    f.seed(np.array([0, 1]), np.array([T, T + S]), np.array([1.1, 150.0]), np.array([1.2, 150.1]))
    assert [f.admit(0, T, 1.1, 1.2), f.admit(1, T + S, 150.0, 150.1), f.admit(1, T, 150.0, 150.1)] == [
        False,
        False,
        True,
    ]


def test_seeding_moves_the_pairs_newest_time_so_older_repeats_pass() -> None:
    f = dedupe()
    f.seed(np.array([0]), np.array([T + WINDOW + 1]), np.array([1.3]), np.array([1.4]))
    assert [f.admit(0, T, 1.1, 1.2), f.admit(0, T, 1.1, 1.2)] == [True, True]


def test_seeding_nothing_changes_nothing() -> None:
    f = dedupe()
    f.seed(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), np.empty(0))
    assert (len(f), f.admit(0, T, 1.1, 1.2)) == (0, True)


# ---------------------------------------------------------------------------------- property
Quote = tuple[int, int, float, float]  # (pair code, time, bid, ask)


def reference(quotes: list[Quote]) -> list[bool]:
    """The definition: a repeat of any earlier key, while within the window of the pair's newest
    time before it."""
    out = []
    for i, (c, t, b, a) in enumerate(quotes):
        earlier = quotes[:i]
        newest = max((q[1] for q in earlier if q[0] == c), default=None)
        out.append((c, t, b, a) in earlier and newest is not None and t >= newest - WINDOW)
    return out


quotes = st.lists(
    st.tuples(
        st.integers(0, 1),
        st.integers(0, 30).map(lambda k: T + k * 1000),
        st.sampled_from((1.1, 1.2)),
        st.sampled_from((1.3, 1.4)),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(quotes, st.lists(st.tuples(st.integers(1, 20), st.booleans()), min_size=1, max_size=10))
def test_any_mix_of_per_tick_and_batch_calls_equals_the_definition(qs: list[Quote], plan) -> None:
    f = dedupe()
    verdicts: list[bool] = []
    i = 0
    for size, as_batch in [*plan, (len(qs), True)]:
        chunk = qs[i : i + size]
        i += size
        if not chunk:
            break
        if as_batch:
            dup, _ = batch(f, *(list(col) for col in zip(*chunk, strict=True)))
            verdicts += dup
        else:
            verdicts += [not f.admit(*q) for q in chunk]
    assert verdicts == reference(qs)
