"""The Lightstreamer request endpoints: session create and bind over WebSocket and HTTP, and the
control requests that arrive on each transport, handed to `ControlRequests`.

Kept apart from the session table (`TlcpServer`) because this is where IG's answers to a bad
request live: `CONERR` codes for a refused create or an unknown session, `REQERR,15` for a
malformed number, and the HTTP transports' LOOP rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from .ls_session import Connection, LsSession
from .tlcp_codec import (
    COMMANDS,
    DEFAULT_CONTENT_LENGTH,
    HTTP_POLLING,
    HTTP_STREAMING,
    REQUEST_LIMIT,
    SUBPROTOCOLS,
    TLCP_VERSIONS,
    WS,
    parse_params,
    percent,
)

if TYPE_CHECKING:
    from .tlcp import TlcpServer

log = logging.getLogger("collector.simulator.tlcp")


class TlcpEndpoints:
    """The `/lightstreamer` routes of one `TlcpServer`; sessions and counters live on the server."""

    def __init__(self, server: TlcpServer) -> None:
        self.server = server
        self.core = server.core

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/lightstreamer", self.ws_handler)
        app.router.add_post("/lightstreamer/create_session.txt", self.http_create)
        app.router.add_post("/lightstreamer/bind_session.txt", self.http_bind)
        app.router.add_post("/lightstreamer/control.txt", self.http_control)
        app.router.add_post("/lightstreamer/heartbeat.txt", self.http_heartbeat)

    # --- transport --------------------------------------------------------------------------
    async def ws_handler(self, request: web.Request) -> web.StreamResponse:
        if self.server.refuse_ws != 0:
            self.server.refuse_ws -= 1 if self.server.refuse_ws > 0 else 0
            return web.Response(status=503, text="WebSocket upgrades refused by the simulator")
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        ws = web.WebSocketResponse(protocols=SUBPROTOCOLS, timeout=2.0, autoping=True, max_msg_size=0)
        await ws.prepare(request)
        conn = Connection(request, protocol_ok=any(p in SUBPROTOCOLS for p in offered), ws=ws)
        self.server.connections.add(conn)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_frame(conn, msg.data)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.server.connections.discard(conn)
            if conn.session is not None:
                conn.session.detach(conn)
        return ws

    async def _on_frame(self, conn: Connection, data: str) -> None:
        command: str | None = None
        for line in data.split("\r\n"):
            if line in COMMANDS:
                command = line
                if line == "wsok":
                    await conn.send("WSOK")
                continue
            if not line or command is None:
                continue
            params = parse_params(line)
            try:
                if command == "create_session":
                    await self._ws_create(conn, params)
                elif command == "bind_session":
                    await self._ws_bind(conn, params)
                elif command == "control" and conn.session is not None:
                    self.server.control.control(conn.session, params, conn.session.send)
                # msg / heartbeat: nothing the simulator needs to do
            except ValueError as e:  # a malformed number in a request: refuse it, keep the stream
                log.warning("malformed %s request: %s", command, e)
                if command == "control" and conn.session is not None:
                    conn.session.send(f"REQERR,{params.get('LS_reqId', '0')},15,{percent('Malformed request')}")

    def _check_create(self, params: dict[str, str], protocol_ok: bool) -> tuple[int, str] | str:
        """The CONERR (code, message) for a refused create_session, or the CST it authenticated."""
        if not protocol_ok:
            return 65, "Unsupported protocol version"
        core = self.core
        adapter_set = params.get("LS_adapter_set")
        if adapter_set not in (None, "DEFAULT"):
            return 2, "Requested Adapter Set not available"
        m = re.fullmatch(r"CST-(.*)\|XST-(.*)", params.get("LS_password", ""), re.S)
        s = core.auth.cst_session(m.group(1), m.group(2), touch=False) if m else None
        user = params.get("LS_user")
        if core.faults.refuse_credentials or s is None or (user is not None and user != s.account_id):
            return 1, "Requested authentication failed"
        return s.cst

    def _new_session(self, cst: str, params: dict[str, str]) -> LsSession:
        old = self.server.sessions.get(params.get("LS_old_session", ""))
        if old is not None:
            self.server.close_session(old)
        sid = "S" + secrets.token_hex(8)
        session = LsSession(self.server, sid, cst, self.core.keepalive_ms)
        self.server.sessions[sid] = session
        self.server.sessions_created += 1
        return session

    def _greeting(self, session: LsSession, conn: Connection) -> list[str]:
        peer = conn.request.remote or "127.0.0.1"
        return [session.conok(), "SERVNAME,IG Simulator", f"CLIENTIP,{peer}", "CONS,unlimited"]

    async def _ws_create(self, conn: Connection, params: dict[str, str]) -> None:
        checked = self._check_create(params, conn.protocol_ok)
        if isinstance(checked, tuple):
            await conn.send(f"CONERR,{checked[0]},{percent(checked[1])}")
            return
        session = self._new_session(checked, params)
        session.attach(conn, self._greeting(session, conn))

    async def _ws_bind(self, conn: Connection, params: dict[str, str]) -> None:
        session = self.server.sessions.get(params.get("LS_session", ""))
        if session is None or session.closed or not conn.protocol_ok:
            await conn.send(f"CONERR,20,{percent('Session not found')}")
            return
        self.server.binds += 1
        self.server.binds_by_transport[WS] += 1
        session.attach(conn, self._greeting(session, conn))

    async def http_create(self, request: web.Request) -> web.StreamResponse:
        params = parse_params(await request.text())
        checked = self._check_create(params, request.query.get("LS_protocol") in TLCP_VERSIONS)
        if isinstance(checked, tuple):
            return web.Response(text=f"CONERR,{checked[0]},{percent(checked[1])}\r\n")
        session = self._new_session(checked, params)
        # Polling create: CONOK then LOOP makes the client bind this session on its best transport
        # (WebSocket streaming); the session waits detached until then.
        return web.Response(text=f"CONOK,{session.sid},{REQUEST_LIMIT},0,*\r\nLOOP,0\r\n")

    async def http_bind(self, request: web.Request) -> web.StreamResponse:
        """Bind a session over HTTP streaming or polling; the response lasts until LOOP."""
        params = parse_params(await request.text())
        if "LS_recovery_from" in params:
            return web.Response(text=f"CONERR,20,{percent('Session recovery not supported')}\r\n")
        if request.query.get("LS_protocol") not in TLCP_VERSIONS:
            return web.Response(text=f"CONERR,65,{percent('Unsupported protocol version')}\r\n")
        session = self.server.sessions.get(params.get("LS_session", ""))
        if session is None or session.closed:
            return web.Response(text=f"CONERR,20,{percent('Session not found')}\r\n")
        polling = params.get("LS_polling") == "true"
        length = int(params.get("LS_content_length") or DEFAULT_CONTENT_LENGTH)
        if self.core.http_content_length:
            length = min(length, self.core.http_content_length)
        resp = web.StreamResponse(headers={"Content-Type": "text/enriched; charset=UTF-8", "Cache-Control": "no-store"})
        await resp.prepare(request)
        conn = Connection(
            request, True, resp=resp, transport=HTTP_POLLING if polling else HTTP_STREAMING,
            content_left=length, loop_ms=int(params.get("LS_polling_millis") or 0),
        )  # fmt: skip
        self.server.connections.add(conn)
        self.server.binds += 1
        self.server.binds_by_transport[conn.transport] += 1
        session.attach(conn, self._greeting(session, conn))
        idle_s = min(5.0, max(0.05, int(params.get("LS_idle_millis") or 0) / 1000)) if polling else None
        try:
            try:
                await asyncio.wait_for(conn.done.wait(), idle_s)
            except TimeoutError:  # a poll with nothing to carry: close it with LOOP
                session.request_loop()
                await asyncio.wait_for(conn.done.wait(), 5.0)
        except (ConnectionError, asyncio.CancelledError, TimeoutError):
            pass
        finally:
            self.server.connections.discard(conn)
            if conn.session is not None:
                conn.session.detach(conn)
        with contextlib.suppress(Exception):
            await resp.write_eof()
        return resp

    async def http_control(self, request: web.Request) -> web.StreamResponse:
        """Control requests of HTTP-bound sessions, one per line; acks in this response."""
        out: list[str] = []
        for line in (await request.text()).split("\r\n"):
            if not line:
                continue
            params = parse_params(line)
            # 2.4.0 clients name the session in the query, 2.1.0 (npm 8.x) in each request line.
            session = self.server.sessions.get(params.get("LS_session") or request.query.get("LS_session", ""))
            if session is None or session.closed:
                out.append(f"REQERR,{params.get('LS_reqId', '0')},20,{percent('Session not found')}")
                continue
            try:
                self.server.control.control(session, {**params, "LS_ack": "true"}, out.append)
            except ValueError:
                out.append(f"REQERR,{params.get('LS_reqId', '0')},15,{percent('Malformed request')}")
        return web.Response(text="".join(f"{ln}\r\n" for ln in out))

    async def http_heartbeat(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="")
