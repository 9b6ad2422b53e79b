"""The Lightstreamer edge: one client, one DISTINCT subscription to `CHART:{epic}:TICK`.

The library runs every listener callback on a single thread, so callbacks here only append to
a deque (thread-safe, no lock) and return; the consumer drains it. Status changes and server
errors go to the supervisor through `on_event`, which must be just as quick.

Transports: IG's Lightstreamer serves WebSocket, HTTP streaming and HTTP polling, and proxies
often block WebSocket. The client falls back by itself (WebSocket create fails -> HTTP create ->
the best transport that works); should WebSocket keep failing without a session ever coming up,
HTTP is forced after `FORCE_HTTP_AFTER` failed attempts. The transport in use is logged and
handed to `on_transport` (the daemon's `ig_collector_stream_transport` gauge).

Spread-bet epics stream points (13681.4 for 1.36814): `scales` turns them into FX rates before
anything else sees them, so validation, candles and the database hold the same units for every
account type (collector/ig_convention.py).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import ls_speedups
from .ig_convention import PriceScale
from .ig_rest import IGSession
from .vocabulary import LS_CONNECTED_PREFIX, LS_WILL_RETRY, Transport

log = logging.getLogger(__name__)

FIELDS = ("BID", "OFR", "UTM")
TRANSPORTS: tuple[str, ...] = tuple(map(str, Transport))
FORCE_HTTP_AFTER = 3  # consecutive failed connection attempts before WebSocket is given up


class TransportWatch:
    """Follows the client's status: reports each new transport, and after `force_after`
    consecutive failed attempts without a session asks for HTTP (`force` is then called once)."""

    def __init__(self, on_transport: Callable[[str], None], force: Callable[[str], None], force_after: int) -> None:
        self.on_transport, self.force, self.force_after = on_transport, force, force_after
        self.transport: str | None = None
        self.failures = 0
        self.forced = False

    def status(self, status: str) -> None:
        transport = status.removeprefix(LS_CONNECTED_PREFIX)
        if status.startswith(LS_CONNECTED_PREFIX) and transport in TRANSPORTS:
            self.failures = 0
            if transport != self.transport:
                self.transport = transport
                log.info("stream transport", extra={"transport": transport, "forced": self.forced})
                self.on_transport(transport)
        elif status == LS_WILL_RETRY and self.transport is None:
            self.failures += 1
            if self.failures >= self.force_after and not self.forced:
                self.forced = True
                log.warning(
                    "WebSocket keeps failing; forcing HTTP streaming (a proxy may block WebSocket)",
                    extra={"failed_attempts": self.failures},
                )
                self.force("HTTP")


@dataclass(frozen=True, slots=True)
class RawUpdate:
    pair: str
    bid: str | None
    ofr: str | None
    utm: str | None
    received_ms: int
    snapshot: bool


@dataclass(frozen=True, slots=True)
class LostUpdates:
    """The server dropped `count` updates of this pair (Lightstreamer `OV`): its current
    bucket is short of ticks and must be repaired from REST."""

    pair: str
    count: int
    at_ms: int


@dataclass(frozen=True, slots=True)
class StreamEvent:
    kind: str  # "status" | "server_error" | "subscribed" | "subscription_error"
    status: str = ""
    code: int = 0
    message: str = ""


class StreamClient:
    """Connect, subscribe the pairs' tick items, hand updates and events on. Not reusable:
    the supervisor builds a new one for every (re)login so no stale state survives."""

    def __init__(
        self,
        session: IGSession,
        epics: dict[str, str],  # epic -> pair
        updates: deque[RawUpdate | LostUpdates | object],
        on_event: Callable[[StreamEvent], None],
        now_ms: Callable[[], int],
        *,
        max_queue: int,
        on_overflow: Callable[[RawUpdate], None],
        stalled_timeout_ms: int = 2000,
        reconnect_timeout_ms: int = 3000,
        scales: Mapping[str, PriceScale] | None = None,  # pair -> quote scale (spread bets)
        on_transport: Callable[[str], None] | None = None,
        force_http_after: int = FORCE_HTTP_AFTER,
    ) -> None:
        from lightstreamer.client import (
            ClientListener,
            LightstreamerClient,
            Subscription,
            SubscriptionListener,
        )

        ls_speedups.apply()
        self.session = session
        self._item_pair = {f"CHART:{epic}:TICK": pair for epic, pair in epics.items()}
        client = LightstreamerClient(session.lightstreamer_endpoint, None)
        client.connectionDetails.setUser(session.account_id or None)
        client.connectionDetails.setPassword(session.stream_password)
        client.connectionOptions.setStalledTimeout(stalled_timeout_ms)
        client.connectionOptions.setReconnectTimeout(reconnect_timeout_ms)
        # Recovery replays from the same session; IG's servers answer it unreliably and a fresh
        # session plus our REST repair of the gap is simpler to reason about.
        client.connectionOptions.setSessionRecoveryTimeout(0)
        item_pair = self._item_pair
        item_scale = {
            item: scales[pair] for item, pair in item_pair.items() if scales and pair in scales and scales[pair].scaled
        }
        self.transport = TransportWatch(
            on_transport or (lambda t: None), client.connectionOptions.setForcedTransport, force_http_after
        )
        watch = self.transport

        class _Updates(SubscriptionListener):  # runs on the library's event thread
            def onItemUpdate(self, u: Any) -> None:
                item = u.getItemName()
                bid, ofr = u.getValue("BID"), u.getValue("OFR")
                if item_scale:  # a spread-bet account: points -> FX rates
                    scale = item_scale.get(item)
                    if scale is not None:
                        bid, ofr = scale.rate_text(bid), scale.rate_text(ofr)
                r = RawUpdate(item_pair.get(item, ""), bid, ofr, u.getValue("UTM"), now_ms(), bool(u.isSnapshot()))
                if len(updates) >= max_queue:
                    on_overflow(r)
                else:
                    updates.append(r)

            def onItemLostUpdates(self, item_name: str, item_pos: int, lost: int) -> None:
                updates.append(LostUpdates(item_pair.get(item_name, ""), int(lost), now_ms()))

            def onSubscription(self) -> None:
                on_event(StreamEvent("subscribed"))

            def onSubscriptionError(self, code: int, message: str) -> None:
                on_event(StreamEvent("subscription_error", code=code, message=message or ""))

        class _Status(ClientListener):
            def onStatusChange(self, status: str) -> None:
                watch.status(status)
                on_event(StreamEvent("status", status=status))

            def onServerError(self, code: int, message: str) -> None:
                on_event(StreamEvent("server_error", code=code, message=message or ""))

        sub = Subscription("DISTINCT", list(self._item_pair), list(FIELDS))
        # The snapshot repeats each pair's last tick after every (re)subscription: it gives an
        # immediate price and tick age, and the aggregator's duplicate filter drops repeats.
        sub.setRequestedSnapshot("yes")
        sub.addListener(_Updates())
        client.addListener(_Status())
        client.subscribe(sub)
        self._client, self._sub = client, sub

    def connect(self) -> None:
        self._client.connect()

    def status(self) -> str:
        return str(self._client.getStatus())

    def disconnect(self) -> None:
        try:
            self._client.unsubscribe(self._sub)
        except Exception:  # the session may already be gone
            log.debug("unsubscribe failed", exc_info=True)
        self._client.disconnect()
