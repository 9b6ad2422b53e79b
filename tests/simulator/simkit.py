"""Helpers for the simulator tests: real IG / Lightstreamer clients pointed at a simulator.

The clients are the real `trading-ig` and `lightstreamer-client-lib`, so these tests prove the
simulator speaks what they expect. Lightstreamer listeners run on the library's event thread;
`StreamProbe` records what they see under a condition variable so tests wait on facts, not sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from collector.models import Tick
from collector.simulator.server import Simulator

KEEPALIVE_MS = 1000


def epic(pair: str, suffix: str = ".CFD.IP") -> str:
    return f"CS.D.{pair}{suffix}"


def tick_item(pair: str) -> str:
    return f"CHART:{epic(pair)}:TICK"


def ig_service(sim: Simulator, version: str = "2", password: str | None = None, api_key: str | None = None) -> Any:
    """A trading-ig IGService pointed at the simulator (IG_API_URL), not yet logged in."""
    from trading_ig import IGService

    svc = IGService(
        sim.username,
        password or sim.password,
        api_key or sim.api_key,
        acc_type="demo",
        acc_number=sim.account_id if version == "3" else None,
    )
    svc.BASE_URL = svc.crud_session.BASE_URL = sim.url
    return svc


@dataclass
class RestLogin:
    """Raw v2 session headers for direct REST calls with `requests`."""

    url: str
    headers: dict[str, str]

    def get(self, path: str, version: str = "3", **params: Any) -> requests.Response:
        return requests.get(self.url + path, params=params, headers={**self.headers, "VERSION": version}, timeout=10)

    @property
    def ls_password(self) -> str:
        return f"CST-{self.headers['CST']}|XST-{self.headers['X-SECURITY-TOKEN']}"


def rest_login(sim: Simulator) -> RestLogin:
    r = requests.post(
        sim.url + "/session",
        json={"identifier": sim.username, "password": sim.password},
        headers={"X-IG-API-KEY": sim.api_key, "VERSION": "2", "Accept": "application/json; charset=UTF-8"},
        timeout=10,
    )
    r.raise_for_status()
    return RestLogin(
        sim.url,
        {"X-IG-API-KEY": sim.api_key, "CST": r.headers["CST"], "X-SECURITY-TOKEN": r.headers["X-SECURITY-TOKEN"]},
    )


@dataclass
class Update:
    item: str
    snapshot: bool
    values: dict[str, str | None]


@dataclass
class StreamProbe:
    """Everything one LightstreamerClient and its subscriptions reported, in arrival order."""

    statuses: list[str] = field(default_factory=list)
    server_errors: list[tuple[int, str]] = field(default_factory=list)
    updates: list[Update] = field(default_factory=list)
    subscribed: int = 0
    sub_errors: list[tuple[int, str]] = field(default_factory=list)
    end_of_snapshot: list[str] = field(default_factory=list)
    session_ids: list[str] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def record(self, fn: Callable[[], None]) -> None:
        with self.cond:
            fn()
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what or predicate}; statuses={self.statuses} "
                    f"errors={self.server_errors} sub_errors={self.sub_errors} updates={len(self.updates)}"
                )

    def count(self, item: str | None = None) -> int:
        with self.cond:
            return sum(1 for u in self.updates if item is None or u.item == item)


class StreamClients:
    """Creates real LightstreamerClients with fast failure detection and disconnects them all."""

    def __init__(self) -> None:
        self.clients: list[Any] = []

    def connect(
        self,
        sim: Simulator,
        password: str,
        items: list[str] | None = None,
        fields: list[str] | None = None,
        mode: str = "DISTINCT",
        snapshot: str = "yes",
        user: str | None = None,
        adapter: str | None = None,
        recovery_timeout_ms: int = 0,
        forced_transport: str | None = None,
    ) -> tuple[Any, StreamProbe]:
        from lightstreamer.client import ClientListener, LightstreamerClient, Subscription, SubscriptionListener

        probe = StreamProbe()
        client = LightstreamerClient(sim.url, None)
        opts = client.connectionOptions
        opts.setSessionRecoveryTimeout(recovery_timeout_ms)
        opts.setStalledTimeout(500)
        opts.setReconnectTimeout(500)
        opts.setRetryDelay(200)
        opts.setFirstRetryMaxDelay(50)
        opts.setForcedTransport(forced_transport)
        client.connectionDetails.setUser(user)
        client.connectionDetails.setPassword(password)

        class Listener(ClientListener):
            def onStatusChange(self, status: str) -> None:
                def rec() -> None:
                    probe.statuses.append(status)
                    if status.startswith("CONNECTED:"):
                        probe.session_ids.append(client.connectionDetails.getSessionId())

                probe.record(rec)

            def onServerError(self, code: int, message: str) -> None:
                probe.record(lambda: probe.server_errors.append((code, message)))

        client.addListener(Listener())
        if items:
            sub = Subscription(mode, items, fields or ["BID", "OFR", "UTM"])
            sub.setRequestedSnapshot(snapshot)
            if adapter:
                sub.setDataAdapter(adapter)

            class SubListener(SubscriptionListener):
                def onSubscription(self) -> None:
                    def rec() -> None:
                        probe.subscribed += 1

                    probe.record(rec)

                def onSubscriptionError(self, code: int, message: str) -> None:
                    probe.record(lambda: probe.sub_errors.append((code, message)))

                def onEndOfSnapshot(self, item: str, pos: int) -> None:
                    probe.record(lambda: probe.end_of_snapshot.append(item))

                def onItemUpdate(self, u: Any) -> None:
                    values = dict(u.getFields())
                    update = Update(u.getItemName(), u.isSnapshot(), values)
                    probe.record(lambda: probe.updates.append(update))

            sub.addListener(SubListener())
            client.subscribe(sub)
        client.connect()
        self.clients.append(client)
        return client, probe

    def close(self) -> None:
        for c in self.clients:
            c.disconnect()


def connected(probe: StreamProbe) -> bool:
    return bool(probe.statuses) and probe.statuses[-1] == "CONNECTED:WS-STREAMING"


def truth_by_key(ticks: list[Tick]) -> dict[tuple[str, int, float, float], int]:
    out: dict[tuple[str, int, float, float], int] = {}
    for t in ticks:
        k = (t.pair, t.time_ms, t.bid, t.ask)
        out[k] = out.get(k, 0) + 1
    return out
