"""Stream supervision: log in, connect, notice a stream that is not getting anywhere, reconnect.

trading-ig neither refreshes tokens nor reconnects after a server-side end, and the
Lightstreamer client notices a dead socket late and never reports STALLED (docs/design.md §5):
every (re)connect here is a fresh login (new CST/XST) and a new client, after a backoff with
jitter so that many collectors never reconnect in step. A silent stream counts as stale only
while the FX market is open, so a weekend raises no alarm and starts no reconnect storm.

The library's threads only enqueue (`on_stream_event`); the supervisor's thread acts.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping

from .config import Settings
from .consumer import Consumer
from .ig_rest import IGSession, LoginFailed, RestClient, RestError
from .ig_stream import StreamClient, StreamEvent
from .market_hours import is_open
from .metrics import Metrics
from .store import Writer
from .systemd_notify import Notifier
from .vocabulary import LS_DISCONNECTED, LS_STREAMING, LoginResult, ReconnectCause, StreamState

log = logging.getLogger("collector.daemon")

CONNECT_PATIENCE_S = 30.0  # the library's own retries get at least this long to bring a session up


class StreamSupervisor:
    """Owns the stream client and the supervisor's view of its state."""

    def __init__(
        self,
        settings: Settings,
        rest: RestClient,
        consumer: Consumer,
        *,
        epics: Mapping[str, str],
        writer: Writer,
        metrics: Metrics,
        notifier: Notifier,
        now_ms: Callable[[], int],
        stopping: threading.Event,
    ) -> None:
        """`epics`: epic -> pair; `writer` only for its buffer depth in systemd's status line."""
        self.settings, self.rest, self.consumer, self.epics = settings, rest, consumer, dict(epics)
        self.writer, self.metrics, self.notifier = writer, metrics, notifier
        self.now_ms, self.stopping = now_ms, stopping
        self.stream: StreamClient | None = None
        self.session: IGSession | None = None
        self.status = StreamState.STOPPED
        self.connected = False  # a login succeeded and a client was started for it
        self.connected_at_ms: int | None = None  # clock time the stream last reported streaming
        self._events: deque[StreamEvent] = deque()
        self._attempt = 0  # reconnects since the stream last streamed: sets the backoff
        self._connect_started = 0.0  # monotonic time of the last connect (or library retry)
        self._ready_sent = False  # systemd READY=1 goes out once, at the first streaming status

    def supervise(self) -> bool:
        """One step: connect when not connected, act on the stream's events and staleness.
        False when it had to back off (the caller's timers wait for the next step)."""
        if not self.connected:
            self.connected = self._connect()
            if not self.connected:
                self._backoff(ReconnectCause.LOGIN_FAILED)
                return False
        cause = self._handle_events()
        if cause is None and self._stale():
            cause = ReconnectCause.STALE
            log.warning(
                "no ticks during market hours; reconnecting", extra={"stale_after_s": self.settings.stale_after_s}
            )
        if (
            cause is None
            and self.status in (StreamState.CONNECTING, StreamState.RETRYING)
            and time.monotonic() - self._connect_started > max(CONNECT_PATIENCE_S, self.settings.stale_after_s)
        ):
            cause = ReconnectCause.STALE  # the library's own retries are not getting anywhere
        if cause is None:
            return True
        self._drop_stream()
        self.connected = False
        self.set_status(StreamState.DISCONNECTED)
        self._backoff(cause)
        return False

    def set_status(self, status: StreamState) -> None:
        self.status = status
        self.metrics.set_stream_state(status)
        self.notifier.status(f"stream {status}; {self.consumer.received} updates; buffer {self.writer.buffer_depth}")

    def on_stream_event(self, e: StreamEvent) -> None:  # library thread: enqueue only
        if e.kind == "status":
            self.consumer.mark(up=e.status in LS_STREAMING)
        self._events.append(e)

    def disconnect(self) -> None:
        """At shutdown: the stream goes, no marker (the consumer is stopping too)."""
        if self.stream is not None:
            with contextlib.suppress(Exception):
                self.stream.disconnect()

    def _backoff(self, cause: ReconnectCause) -> None:
        self._attempt += 1
        cap = min(self.settings.reconnect_max_backoff_s, 0.5 * 2 ** min(self._attempt, 10))
        delay = random.uniform(cap / 2, cap)  # jitter: many collectors never reconnect in step
        self.metrics.reconnects.labels(cause).inc()
        log.info("reconnecting", extra={"cause": cause, "attempt": self._attempt, "delay_s": round(delay, 2)})
        self.stopping.wait(delay)

    def _drop_stream(self) -> None:
        if self.stream is not None:
            with contextlib.suppress(Exception):
                self.stream.disconnect()
            self.stream = None
        self.consumer.mark(up=False)

    def _connect(self) -> bool:
        """Fresh login (new CST/XST) and a new Lightstreamer client."""
        self.set_status(StreamState.LOGGING_IN)
        try:
            self.session = self.rest.login()
            self.metrics.logins.labels(LoginResult.OK).inc()
        except LoginFailed as e:
            self.metrics.logins.labels(LoginResult.REFUSED).inc()
            log.error("IG login refused", extra={"error": str(e)})
            return False
        except (RestError, OSError) as e:
            self.metrics.logins.labels(LoginResult.ERROR).inc()
            log.warning("IG login failed", extra={"error": str(e)})
            return False
        self._events.clear()
        s = self.settings
        self.stream = StreamClient(
            self.session, self.epics, self.consumer.updates, self.on_stream_event, self.now_ms,
            max_queue=s.buffer_max_ticks, on_overflow=self.consumer.overflow,
            scales=self.rest.scales, on_transport=self.metrics.set_stream_transport,  # issue 14's hook
        )  # fmt: skip
        self.set_status(StreamState.CONNECTING)
        self.stream.connect()
        self.connected_at_ms = None
        self._connect_started = time.monotonic()
        return True

    def _handle_events(self) -> ReconnectCause | None:
        """Process queued stream events; returns a reconnect cause or None."""
        while self._events:
            e = self._events.popleft()
            log.debug("stream event", extra={"kind": e.kind, "status": e.status, "code": e.code})
            if e.kind == "status":
                log.info("stream status", extra={"status": e.status})
                if e.status in LS_STREAMING:
                    self.set_status(StreamState.CONNECTED)
                    self._attempt = 0
                    self.connected_at_ms = self.now_ms()
                    if not self._ready_sent:
                        self.notifier.ready("streaming")
                        self._ready_sent = True
                elif e.status == LS_DISCONNECTED:
                    self.set_status(StreamState.DISCONNECTED)
                    return ReconnectCause.SERVER_END
                elif e.status.startswith(LS_DISCONNECTED):
                    self.set_status(StreamState.RETRYING)
                    self._connect_started = time.monotonic()
            elif e.kind == "server_error":
                log.warning("stream server error", extra={"code": e.code, "message": e.message})
                return ReconnectCause.SERVER_ERROR
            elif e.kind == "subscription_error":
                log.error(
                    "subscription refused: check IG_EPIC_SUFFIX for this account type",
                    extra={"code": e.code, "message": e.message},
                )
                return ReconnectCause.SERVER_ERROR
        return None

    def _stale(self) -> bool:
        """Silent stream during market hours (the client never reports STALLED itself)."""
        if self.status != StreamState.CONNECTED:
            return False
        now = self.now_ms()
        if not is_open(now):
            return False
        last = max(self.consumer.last_arrival_ms, self.connected_at_ms or 0)
        return now - last > self.settings.stale_after_s * 1000
