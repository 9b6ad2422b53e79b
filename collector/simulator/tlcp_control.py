"""Lightstreamer control requests: subscribe (`add`), unsubscribe (`delete`) and `destroy`, with
IG's refusals (`REQERR` 17 unknown adapter, 21 invalid group, 24 mode not allowed) and the
snapshot a new subscription gets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .ls_session import Item, LsSession, LsSubscription
from .market import STREAM_SCALES_MS, price_digits
from .quotes import is_spreadbet, pair_of_epic
from .tlcp_codec import percent
from .tlcp_rows import candle_row, price_row, tick_row

if TYPE_CHECKING:
    from .tlcp import TlcpServer


class ControlRequests:
    """The control requests of every session of one `TlcpServer`."""

    def __init__(self, server: TlcpServer) -> None:
        self.server = server
        self.core = server.core

    def control(self, session: LsSession, p: dict[str, str], reply: Callable[[str], None]) -> None:
        """One control request; `reply` takes REQOK/REQERR (the stream over WS, the control
        response over HTTP)."""
        op = p.get("LS_op", "")
        req_id = p.get("LS_reqId", "0")
        ack = p.get("LS_ack", "true") != "false"
        if op == "add":
            self._subscribe(session, p, req_id, ack, reply)
        elif op == "delete":
            sub = session.subs.pop(int(p.get("LS_subId", "0") or 0), None)
            if ack:
                reply(f"REQOK,{req_id}")
            if sub is not None:
                self.server.rebuild_routes()
                session.send(f"UNSUB,{sub.sub_id}")
        elif op == "destroy":
            if ack:
                reply(f"REQOK,{req_id}")
            self.server.close_session(session, close_ws=p.get("LS_close_socket") == "true")
        else:
            reply(f"REQOK,{req_id}")

    def _parse_items(self, group: str, adapter: str | None) -> tuple[list[Item], str] | tuple[int, str]:
        """Items and their family mode, or a REQERR (code, message)."""
        if adapter not in (None, "DEFAULT", "Pricing"):
            return 17, "Data Adapter not found"
        items: list[Item] = []
        families = set()
        pair_index = self.core.store.index
        for name in group.split(" "):
            parts = name.split(":")
            kind: str | None = None
            pair: str | None = None
            epic = parts[2] if parts[0] == "PRICE" and len(parts) == 3 else parts[1] if len(parts) > 1 else ""
            if len(parts) == 3 and parts[0] == "CHART" and adapter != "Pricing":
                pair = pair_of_epic(parts[1])
                kind = parts[2] if parts[2] == "TICK" or parts[2] in STREAM_SCALES_MS else None
            elif len(parts) == 3 and parts[0] == "PRICE" and adapter == "Pricing":
                pair = pair_of_epic(parts[2]) if parts[1] == self.core.account_id else None
                kind = "PRICE"
            if kind is None or pair is None or pair not in pair_index:
                return 21, "Invalid group"
            families.add("TICK" if kind == "TICK" else "PRICE" if kind == "PRICE" else "CANDLE")
            items.append(Item(name, kind, pair_index[pair], is_spreadbet(epic)))
        if len(families) != 1:
            return 21, "Invalid group"
        return items, "DISTINCT" if families == {"TICK"} else "MERGE"

    def _subscribe(
        self, session: LsSession, p: dict[str, str], req_id: str, ack: bool, reply: Callable[[str], None]
    ) -> None:
        parsed = self._parse_items(p.get("LS_group", ""), p.get("LS_data_adapter"))
        if isinstance(parsed[0], int):
            reply(f"REQERR,{req_id},{parsed[0]},{percent(str(parsed[1]))}")
            return
        items, mode = parsed
        if p.get("LS_mode") != mode:
            reply(f"REQERR,{req_id},24,{percent('Subscription mode not allowed for an Item')}")
            return
        sub_id = int(p.get("LS_subId", "0") or 0)
        fields = [f for f in p.get("LS_schema", "").split(" ") if f]
        sub = LsSubscription(sub_id, mode, list(items), fields)
        session.subs[sub_id] = sub
        if ack:
            reply(f"REQOK,{req_id}")
        session.send(f"SUBOK,{sub_id},{len(items)},{len(fields)}")
        snap = p.get("LS_snapshot", "false")
        if snap != "false":
            depth = 1 if snap == "true" else max(0, min(16, int(snap) if snap.isdigit() else 1))
            self._snapshot(session, sub, depth)
        self.server.rebuild_routes()

    def _snapshot(self, session: LsSession, sub: LsSubscription, depth: int) -> None:
        core = self.core
        for pos, item in enumerate(sub.items, start=1):
            pi = item.pair_idx
            digits = price_digits(core.store.pairs[pi])
            day = core.day_stats[pi]
            if item.kind == "TICK":
                for t, b, a in core.store.last(pi, depth):
                    session.update(sub, pos, tick_row(t, b, a, day, digits))
                session.send(f"EOS,{sub.sub_id},{pos}")
            elif item.kind == "PRICE":
                last = core.store.last(pi, 1)
                if last:
                    session.update(sub, pos, price_row(*last[0], day, digits))
            else:
                c = core.stream_candles.current.get((pi, item.kind))
                if c is not None:
                    session.update(sub, pos, candle_row(c, day, digits))
