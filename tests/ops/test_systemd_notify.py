"""`collector.systemd_notify.Notifier` speaks sd_notify to a real unix datagram socket."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.systemd_notify import Notifier


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET, as systemd binds it."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(2)

    def receive(self) -> list[str]:
        return self.sock.recv(4096).decode().splitlines()


@pytest.fixture
def fs_systemd(tmp_path: Path) -> Iterator[tuple[FakeSystemd, str]]:
    path = str(tmp_path / "notify")
    receiver = FakeSystemd(path)
    yield receiver, path
    receiver.sock.close()


@pytest.fixture
def abstract_systemd() -> Iterator[tuple[FakeSystemd, str]]:
    name = f"igfx-test-{uuid.uuid4().hex}"
    receiver = FakeSystemd(b"\0" + name.encode())
    yield receiver, "@" + name
    receiver.sock.close()


def test_ready_reaches_a_filesystem_socket(fs_systemd) -> None:
    receiver, path = fs_systemd
    assert Notifier({"NOTIFY_SOCKET": path}).ready()
    assert receiver.receive() == ["READY=1"]


def test_watchdog_reaches_an_abstract_namespace_socket(abstract_systemd) -> None:
    receiver, name = abstract_systemd
    assert Notifier({"NOTIFY_SOCKET": name}).watchdog()
    assert receiver.receive() == ["WATCHDOG=1"]


def test_ready_with_a_status_sends_both_in_one_datagram(fs_systemd) -> None:
    receiver, path = fs_systemd
    Notifier({"NOTIFY_SOCKET": path}).ready("streaming 28 pairs")
    assert receiver.receive() == ["READY=1", "STATUS=streaming 28 pairs"]


def test_status_text_cannot_inject_protocol_lines(fs_systemd) -> None:
    receiver, path = fs_systemd
    Notifier({"NOTIFY_SOCKET": path}).status("reconnecting\nREADY=1")
    assert receiver.receive() == ["STATUS=reconnecting READY=1"]


def test_status_text_never_carries_a_password(fs_systemd) -> None:
    receiver, path = fs_systemd
    Notifier({"NOTIFY_SOCKET": path}).status("login failed password=hunter2secret")
    assert "hunter2secret" not in receiver.receive()[0]


def test_stopping_is_announced(fs_systemd) -> None:
    receiver, path = fs_systemd
    Notifier({"NOTIFY_SOCKET": path}).stopping()
    assert receiver.receive() == ["STOPPING=1"]


def test_extend_timeout_is_sent_in_microseconds(fs_systemd) -> None:
    receiver, path = fs_systemd
    Notifier({"NOTIFY_SOCKET": path}).extend_timeout(90)
    assert receiver.receive() == ["EXTEND_TIMEOUT_USEC=90000000"]


def test_without_notify_socket_every_call_is_a_silent_no_op(caplog) -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    with caplog.at_level(logging.DEBUG):
        results = [notifier.ready(), notifier.watchdog(), notifier.status("x"), notifier.stopping()]
    assert results == [False, False, False, False]
    assert caplog.records == []


def test_the_process_environment_is_the_default_source(monkeypatch, fs_systemd) -> None:
    receiver, path = fs_systemd
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    Notifier().watchdog()
    assert receiver.receive() == ["WATCHDOG=1"]


def test_a_send_error_never_raises_and_is_logged_once(tmp_path: Path, caplog) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with caplog.at_level(logging.DEBUG, logger="collector.systemd_notify"):
        results = [notifier.watchdog() for _ in range(5)]
    assert results == [False] * 5
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1


def test_sending_resumes_when_the_socket_comes_back(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert not notifier.watchdog()
    receiver = FakeSystemd(path)
    try:
        assert notifier.watchdog()
        assert receiver.receive() == ["WATCHDOG=1"]
    finally:
        receiver.sock.close()


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    notifier = Notifier({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())})
    assert notifier.watchdog_timeout_s() == 60
    assert notifier.watchdog_interval_s() == 30


def test_watchdog_interval_without_watchdog_pid_still_applies() -> None:
    assert Notifier({"WATCHDOG_USEC": "20000000"}).watchdog_interval_s() == 10


def test_watchdog_interval_is_none_when_no_watchdog_is_configured() -> None:
    assert Notifier({}).watchdog_interval_s() is None


def test_watchdog_meant_for_another_process_is_ignored() -> None:
    notifier = Notifier({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid() + 1)})
    assert notifier.watchdog_interval_s() is None


@pytest.mark.parametrize("value", ["", "0", "soon", "-5"])
def test_watchdog_interval_is_none_for_an_unusable_watchdog_usec(value: str) -> None:
    assert Notifier({"WATCHDOG_USEC": value}).watchdog_interval_s() is None
