"""Routing market events to subscriptions: which (session, subscription, item) receives a pair's
TICK, candle and PRICE updates, and the fan-out that builds each row once per event.

Rows are built only when someone subscribes, and a spread-bet row once per event however many
spread-bet items receive it: the market loop runs this for every tick.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from .ls_session import LsSession, LsSubscription
from .market import StreamCandle, price_digits
from .tlcp_rows import Row, candle_row, price_row, spreadbet_row, tick_row

if TYPE_CHECKING:
    from .server import SimCore

Route = tuple[LsSession, LsSubscription, int]


class Router:
    """(pair index, item kind) -> the items subscribed to it, and the publishing of events."""

    def __init__(self, core: SimCore) -> None:
        self.core = core
        self.routes: dict[tuple[int, str], list[Route]] = {}
        self.ticks_streamed = 0

    def rebuild(self, sessions: Iterable[LsSession]) -> None:
        routes: dict[tuple[int, str], list[Route]] = {}
        for s in sessions:
            for sub in s.subs.values():
                for pos, item in enumerate(sub.items, start=1):
                    routes.setdefault((item.pair_idx, item.kind), []).append((s, sub, pos))
        self.routes = routes

    def fan_out(self, pair_idx: int, kind: str, make_row: Callable[[], Row]) -> int:
        targets = self.routes.get((pair_idx, kind))
        if not targets:
            return 0
        row = make_row()
        quoted: Row | None = None
        sent = 0
        for session, sub, pos in targets:
            if quoted is None and sub.items[pos - 1].spreadbet:
                quoted = spreadbet_row(row, self.core.store.pairs[pair_idx])
            if session.update(sub, pos, row, quoted):
                sent += 1
        return sent

    def publish_tick(
        self,
        pair_idx: int,
        time_ms: int,
        bid: float,
        ask: float,
        closed: list[tuple[str, StreamCandle]],
        changed: list[tuple[str, StreamCandle]],
    ) -> None:
        """Stream one real tick (and the candle items it closed or changed) unless stalled."""
        if self.core.faults.stalled:
            return
        core = self.core
        lose = core.faults.lose_ticks
        if lose.get(pair_idx):
            lose[pair_idx] -= 1
            for _session, sub, pos in self.routes.get((pair_idx, "TICK"), ()):
                sub.lost[pos] = sub.lost.get(pos, 0) + 1  # reported as OV with the next update
            return
        day = core.day_stats[pair_idx]
        digits = price_digits(core.store.pairs[pair_idx])
        if self.fan_out(pair_idx, "TICK", lambda: tick_row(time_ms, bid, ask, day, digits)):
            self.ticks_streamed += 1
        for scale, c in (*closed, *changed):
            self.fan_out(pair_idx, scale, lambda c=c: candle_row(c, day, digits))
        self.fan_out(pair_idx, "PRICE", lambda: price_row(time_ms, bid, ask, day, digits))

    def publish_closed(self, closed: list[tuple[int, str, StreamCandle]]) -> None:
        if self.core.faults.stalled:
            return
        core = self.core
        for pi, scale, c in closed:
            day = core.day_stats[pi]
            digits = price_digits(core.store.pairs[pi])
            self.fan_out(pi, scale, lambda c=c, day=day, digits=digits: candle_row(c, day, digits))

    def send_raw_tick_row(self, pair_idx: int, row: Row) -> int:
        """Send a hand-made TICK row (malformed-value injection) to the pair's TICK subscribers."""
        return self.fan_out(pair_idx, "TICK", lambda: row)
