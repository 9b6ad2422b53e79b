"""Lightstreamer TLCP server (2.1.0-2.4.0) at `/lightstreamer`, as IG's streaming.

Written from the wire protocol as lightstreamer-client-lib 1.0.3 speaks it (docs/design.md §5)
so the real client cannot tell it from IG for what the collector uses:

- WS `wsok` -> `WSOK`; `create_session` (LS_password = `CST-..|XST-..` of a live REST session,
  LS_user = account id if given) -> `CONOK,<sid>,50000,<keepalive>,*`, else `CONERR,1,...`;
  TLCP 2.1.0 to 2.4.0 are accepted (IG accepts the npm client 8.0.5's 2.1.0); any other version,
  such as lightstreamer-client-lib 2.x's 2.5.0 -> `CONERR,65`, as IG answers 2.5.0 clients.
- `bind_session` on a new WS re-attaches a session (after `LOOP`); unknown session -> `CONERR,20`.
- `control` add/delete/destroy; `LS_ack=false` means no `REQOK`. `SUBOK,<sub>,<items>,<fields>`,
  updates `U,<sub>,<item>,<values>` in the client's LS_schema order with TLCP value encoding
  (empty = unchanged, `^n` = n unchanged, `#` null, `$` empty string, percent-encoding of `%`,
  `|`, CR, LF and a leading `#`, `$` or `^`). `delete` answers `UNSUB,<sub>`.
- Snapshot: DISTINCT with LS_snapshot=true gets the item's last tick (LS_snapshot=<n>: the last
  n, at most 16) flagged as snapshot, then `EOS`; MERGE gets the current state, no `EOS`.
- Invalid items (a bad epic, the retired `MARKET:` / `L1:` groups, mixed item families) ->
  `REQERR,<req>,21,Invalid group`; a mode the item does not support -> `REQERR,<req>,24,...`;
  an unknown data adapter -> `REQERR,<req>,17,...`. Unknown field names are sent as null.
- HTTP transports, as IG's Lightstreamer serves them (a proxy that blocks WebSocket leaves only
  these): `POST /lightstreamer/create_session.txt` (the client's fallback when a WS create fails)
  creates the session and answers `CONOK` + `LOOP,0`, so the client binds it on its best
  transport. `bind_session.txt` binds it over HTTP: streaming (one long response, `LOOP,0` once
  `LS_content_length` bytes - capped by `http_content_length` - are sent, and the client rebinds)
  or polling (`LS_polling=true`: what is queued, or whatever comes within `LS_idle_millis`, then
  `LOOP,<LS_polling_millis>`). `control.txt` carries subscriptions for HTTP sessions and answers
  `REQOK`/`REQERR` in its own response. Session recovery (`LS_recovery_from`) answers
  `CONERR,20`: the client then creates a new session and re-subscribes.

Items: `CHART:{epic}:TICK` (DISTINCT), `CHART:{epic}:{SECOND|1MINUTE|5MINUTE|HOUR}` (MERGE,
CONS_END=1 sent when the bucket ends on the clock; UTM = bucket start) and
`PRICE:{accountId}:{epic}` (MERGE, data adapter `Pricing`).

The parts, one job each: `tlcp_codec` (the text syntax), `tlcp_rows` (the field rows),
`ls_session` (a session and its connection: the writer of frames), `tlcp_endpoints` (create and
bind over each transport), `tlcp_control` (subscriptions), `tlcp_routes` (market events to
subscribers); `TlcpServer` here is the table of sessions they share and the fault controls.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .ls_session import Connection, LsSession
from .market import StreamCandle
from .tlcp_codec import HTTP_POLLING, HTTP_STREAMING, SUBPROTOCOL, WS, encode_values, percent
from .tlcp_control import ControlRequests
from .tlcp_endpoints import TlcpEndpoints
from .tlcp_routes import Router
from .tlcp_rows import TICK_FIELDS, Row, tick_row

if TYPE_CHECKING:
    from .server import SimCore

__all__ = ["SUBPROTOCOL", "TICK_FIELDS", "TlcpServer", "encode_values", "tick_row"]


class TlcpServer:
    """All Lightstreamer sessions of the simulator, what they share, and the faults on them."""

    def __init__(self, core: SimCore) -> None:
        self.core = core
        self.sessions: dict[str, LsSession] = {}
        self.connections: set[Connection] = set()
        self.updates_sent = 0
        self.sessions_created = 0
        self.binds = 0
        self.binds_by_transport: dict[str, int] = dict.fromkeys((WS, HTTP_STREAMING, HTTP_POLLING), 0)
        self.http_rebinds = 0
        self.refuse_ws = 0  # fault: answer this many WebSocket upgrades with HTTP 503; -1: all
        self._bg: set[asyncio.Task[Any]] = set()
        self.router = Router(core)
        self.control = ControlRequests(self)
        self.endpoints = TlcpEndpoints(self)

    def add_routes(self, app: web.Application) -> None:
        self.endpoints.add_routes(app)

    def spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    @property
    def ticks_streamed(self) -> int:
        return self.router.ticks_streamed

    def rebuild_routes(self) -> None:
        self.router.rebuild(self.sessions.values())

    def close_session(self, session: LsSession, close_ws: bool = True) -> None:
        if self.sessions.pop(session.sid, None) is None:
            return
        conn = session.conn
        session.close()
        if conn is not None:
            conn.session = None
            if close_ws:
                self.spawn(conn.close())
            elif conn.resp is not None:
                conn.finish()  # an HTTP bind has no socket of its own to keep: end the response
        self.rebuild_routes()

    # --- market events ----------------------------------------------------------------------
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
        self.router.publish_tick(pair_idx, time_ms, bid, ask, closed, changed)

    def publish_closed(self, closed: list[tuple[int, str, StreamCandle]]) -> None:
        self.router.publish_closed(closed)

    def send_raw_tick_row(self, pair_idx: int, row: Row) -> int:
        """Send a hand-made TICK row (malformed-value injection) to the pair's TICK subscribers."""
        return self.router.send_raw_tick_row(pair_idx, row)

    # --- faults -----------------------------------------------------------------------------
    def drop(self, mode: str) -> int:
        """Cut every stream connection: `close` sends a WebSocket close, `abort` resets the TCP
        connection. Sessions stay on the server (as after a network failure) until they linger out."""
        conns = list(self.connections)
        for conn in conns:
            if conn.session is not None:
                conn.session.detach(conn)
            if mode == "abort":
                transport = conn.request.transport
                if transport is not None:
                    transport.abort()
            else:
                self.spawn(conn.close())
        return len(conns)

    def end_all(self, code: int, message: str) -> int:
        """Send `END,<code>,<message>` on every session's stream and close the sessions."""
        sessions = list(self.sessions.values())
        for s in sessions:
            conn = s.conn
            self.sessions.pop(s.sid, None)
            if conn is not None:
                self.spawn(self._end_on(s, conn, f"END,{code},{percent(message)}"))
            else:
                s.close()
        self.rebuild_routes()
        return len(sessions)

    async def _end_on(self, session: LsSession, conn: Connection, line: str) -> None:
        lines, session.out = session.out, []
        session.close()
        with contextlib.suppress(Exception):
            await conn.send("\r\n".join([*lines, line]) + "\r\n")
        await conn.close()

    def loop_all(self) -> int:
        for s in self.sessions.values():
            if s.conn is not None:
                s.request_loop()
        return len(self.sessions)

    async def close(self) -> None:
        for s in list(self.sessions.values()):
            self.close_session(s, close_ws=False)
        await asyncio.gather(*(c.close() for c in list(self.connections)), return_exceptions=True)
        for t in list(self._bg):
            t.cancel()
