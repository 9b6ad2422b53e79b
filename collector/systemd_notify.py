"""sd_notify without a dependency: tell systemd we are ready, alive, busy or stopping.

The protocol is one datagram of `KEY=value` lines to the unix socket named by `NOTIFY_SOCKET`
(a filesystem path, or the abstract namespace when it starts with '@'). Outside systemd the
variable is unset and every call is a no-op, so the same code runs under a terminal, in tests
and in containers. A failed send never raises: the service keeps running and the first failure
is logged (later ones only at DEBUG), because a watchdog ping must never take the collector down.

Usage by a daemon (Type=notify, WatchdogSec=60s in the unit):

    notifier = Notifier()
    ...                                    # connect, resume candles, subscribe
    notifier.ready("streaming 28 pairs")
    every notifier.watchdog_interval_s():  # None outside systemd: then never ping
        notifier.watchdog()                # only while the main loop is healthy
    notifier.stopping()                    # on SIGTERM, before flushing the buffer
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping

from .logs import redact

log = logging.getLogger(__name__)

MAX_STATUS_CHARS = 200


class Notifier:
    """One service's channel to systemd; thread-safe, never raises."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = _watchdog_usec(env)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notify socket."""
        return self._address is not None

    def ready(self, status: str | None = None) -> bool:
        """Startup is complete: systemd marks the unit active and starts the watchdog clock."""
        return self._send("READY=1", *_status_line(status))

    def watchdog(self) -> bool:
        """I am alive. Send at least every `watchdog_interval_s()` seconds while healthy."""
        return self._send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """A one-line status shown by `systemctl status` (never put secrets in it)."""
        return self._send(*_status_line(text))

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun; systemd waits up to TimeoutStopSec for the exit."""
        return self._send("STOPPING=1", *_status_line(status))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more time to start or stop (e.g. a long backlog flush), from now on."""
        return self._send(f"EXTEND_TIMEOUT_USEC={max(1, round(seconds * 1_000_000))}")

    def watchdog_timeout_s(self) -> float | None:
        """WatchdogSec of this service in seconds, or None when no watchdog is watching us."""
        return None if self._watchdog_usec is None else self._watchdog_usec / 1_000_000

    def watchdog_interval_s(self) -> float | None:
        """How often to call `watchdog()`: half of WatchdogSec, as systemd recommends; None without one."""
        timeout = self.watchdog_timeout_s()
        return None if timeout is None else timeout / 2

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _send(self, *lines: str) -> bool:
        if self._address is None or not lines:
            return False
        payload = ("\n".join(lines) + "\n").encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(payload, self._address)
                return True
            except OSError as e:
                if self._sock is not None:
                    self._sock.close()
                    self._sock = None
                level = logging.DEBUG if self._warned else logging.WARNING
                self._warned = True
                log.log(level, "systemd notification failed (%s); the service keeps running", e)
                return False


def _socket_address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    log.warning("NOTIFY_SOCKET=%r is not a unix socket path; systemd notifications are off", value)
    return None


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None  # the watchdog is meant for another process (e.g. our parent)
        except ValueError:
            return None
    return usec if usec > 0 else None


def _status_line(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    one_line = " ".join(redact(text).split())[:MAX_STATUS_CHARS]
    return (f"STATUS={one_line}",)
