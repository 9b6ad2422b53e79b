"""The Lightstreamer client patches change cost, never behaviour (see collector/ls_speedups.py).

The end-to-end and fault suites run the patched client against the simulator; these pin the two
patched functions' contracts one by one."""

from __future__ import annotations

import logging
import traceback

import pytest
from lightstreamer.client import ls_python_client_haxe as haxe

from collector import ls_speedups


@pytest.fixture(autouse=True)
def patched() -> None:
    assert ls_speedups.apply()


def _no_stack_capture(*_: object, **__: object) -> None:
    raise AssertionError("a stack was captured")


def test_haxe_iterator_yields_every_element_then_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(traceback, "extract_tb", _no_stack_capture)
    it = haxe.python_HaxeIterator(iter(["BID", "OFR", "UTM"]))
    seen = []
    while it.hasNext():
        seen.append(it.next())
    assert seen == ["BID", "OFR", "UTM"]
    assert it.hasNext() is False
    assert it.x is None


def test_haxe_iterator_over_nothing_has_no_next() -> None:
    assert haxe.python_HaxeIterator(iter([])).hasNext() is False


def test_haxe_iterator_lets_other_errors_through_unchanged() -> None:
    boom = ValueError("broken source")

    def source():
        yield 1
        raise boom

    it = haxe.python_HaxeIterator(source())
    assert it.next() == 1
    with pytest.raises(ValueError) as raised:
        it.hasNext()
    assert raised.value is boom


def test_library_field_lookup_counts_fields_without_capturing_a_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(traceback, "extract_tb", _no_stack_capture)
    fields = haxe.haxe_ds_IntMap()
    for pos, name in enumerate(["BID", "OFR", "UTM"], start=1):
        fields.set(pos, name)
    find = haxe.com_lightstreamer_client_internal_update__UpdateUtils_UpdateUtils_Fields_.findFirstIndex
    assert find(fields, "UTM") == 3
    assert find(fields, "LTV") is None


def test_exception_stack_names_the_same_frames_as_traceback() -> None:
    def inner() -> None:
        raise KeyError("x")

    def outer() -> None:
        inner()

    try:
        outer()
    except KeyError as e:
        ours = haxe.haxe_NativeStackTrace.exceptionStack()
        theirs = list(reversed(traceback.extract_tb(e.__traceback__)))
    assert [(f.filename, f.lineno, f.name) for f in ours] == [(f.filename, f.lineno, f.name) for f in theirs]
    assert [f.name for f in ours[:2]] == ["inner", "outer"]


def test_caught_native_exception_keeps_its_haxe_stack() -> None:
    try:
        {}["missing"]
    except KeyError as e:
        error = e
        wrapped = haxe.haxe_Exception.caught(e)
    assert wrapped.unwrap() is error
    stack = wrapped.get_stack()
    assert len(stack) == 1
    assert stack[0].params[1:3] == (__file__, error.__traceback__.tb_lineno)


def test_exception_stack_outside_an_exception_is_empty() -> None:
    assert haxe.haxe_NativeStackTrace.exceptionStack() == []


def test_apply_twice_patches_once() -> None:
    has_next = haxe.python_HaxeIterator.hasNext
    assert ls_speedups.apply() is True
    assert haxe.python_HaxeIterator.hasNext is has_next is ls_speedups._has_next


def test_a_changed_library_is_left_alone_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def rewritten_has_next(self: object) -> bool:
        return False

    monkeypatch.delattr(haxe, ls_speedups._MARK)
    monkeypatch.setattr(haxe.python_HaxeIterator, "hasNext", rewritten_has_next)
    with caplog.at_level(logging.WARNING, logger="collector.ls_speedups"):
        assert ls_speedups.apply() is False
    assert haxe.python_HaxeIterator.hasNext is rewritten_has_next
    assert caplog.records[0].why == (
        "python_HaxeIterator.hasNext no longer catches StopIteration through haxe_Exception.caught"
    )


def test_a_changed_library_is_warned_about_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr(haxe, ls_speedups._MARK)
    monkeypatch.setattr(haxe.python_HaxeIterator, "hasNext", lambda self: False)
    with caplog.at_level(logging.WARNING, logger="collector.ls_speedups"):
        assert ls_speedups.apply() is False
        assert ls_speedups.apply() is False  # a reconnect's new stream client
    assert len(caplog.records) == 1
