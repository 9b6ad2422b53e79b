"""One Lightstreamer session and the connection it streams on: the writer of TLCP frames.

Each session has its own output buffer and sender task, so a slow client only delays itself: the
market loop appends lines and never awaits a socket. A buffer beyond `MAX_BUFFERED_LINES` drops
updates and reports them with `OV` (lost updates) like a Lightstreamer server does. HTTP binds
end with `LOOP` (streaming once its content length is used, polling once it carried data), so
the client rebinds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from .tlcp_codec import (
    DEFAULT_CONTENT_LENGTH,
    HTTP_POLLING,
    HTTP_STREAMING,
    MAX_BUFFERED_LINES,
    REQUEST_LIMIT,
    WS,
    encode_values,
)
from .tlcp_rows import Row, spreadbet_row

if TYPE_CHECKING:
    from .tlcp import TlcpServer


@dataclass(frozen=True, slots=True)
class Item:
    name: str
    kind: str  # "TICK", a STREAM_SCALES_MS key, or "PRICE"
    pair_idx: int
    spreadbet: bool = False  # a `.TODAY.IP` epic: prices quoted scaled, as IG quotes them


@dataclass(slots=True)
class LsSubscription:
    sub_id: int
    mode: str
    items: list[Item]
    fields: list[str]
    last_sent: dict[int, list[str | None]] = field(default_factory=dict)
    lost: dict[int, int] = field(default_factory=dict)


@dataclass(eq=False)
class Connection:
    """One stream connection, a WebSocket or an HTTP bind response; bound to at most one session."""

    request: web.Request
    protocol_ok: bool
    ws: web.WebSocketResponse | None = None
    resp: web.StreamResponse | None = None
    transport: str = WS
    content_left: int = DEFAULT_CONTENT_LENGTH  # HTTP streaming: bytes before a rebind
    loop_ms: int = 0  # HTTP polling: the client's LS_polling_millis, sent back in LOOP
    greeting_lines: int = 0
    batches: int = 0
    session: LsSession | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, text: str) -> None:
        if self.ws is not None:
            await self.ws.send_str(text)
            return
        assert self.resp is not None
        data = text.encode()
        await self.resp.write(data)
        self.content_left -= len(data)

    def wants_loop(self, lines: list[str]) -> bool:
        """HTTP binds end with LOOP: streaming once its content length is used up, polling as
        soon as it carried something beyond the greeting (else it waits for data or idles out)."""
        self.batches += 1
        if self.transport == HTTP_STREAMING:
            return self.content_left <= 0
        if self.transport == HTTP_POLLING:
            return self.batches > 1 or len(lines) > self.greeting_lines
        return False

    def finish(self) -> None:
        self.done.set()

    async def close(self) -> None:
        self.done.set()
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 2.0)


class LsSession:
    """A Lightstreamer session: subscriptions, an output buffer and its sender/keepalive tasks."""

    def __init__(self, server: TlcpServer, sid: str, cst: str, keepalive_ms: int) -> None:
        self.server = server
        self.sid = sid
        self.cst = cst
        self.keepalive_ms = keepalive_ms
        self.subs: dict[int, LsSubscription] = {}
        self.conn: Connection | None = None
        self.out: list[str] = []
        self.wake = asyncio.Event()
        self.closed = False
        self.detached_at: float | None = time.monotonic()
        self.loop_pending = False
        self.last_send = time.monotonic()
        self.sent_updates = 0
        self._tasks = [
            asyncio.get_running_loop().create_task(self._sender(), name=f"ls-send-{sid}"),
            asyncio.get_running_loop().create_task(self._keepalive(), name=f"ls-ka-{sid}"),
        ]

    def conok(self) -> str:
        return f"CONOK,{self.sid},{REQUEST_LIMIT},{self.keepalive_ms},*"

    def attach(self, conn: Connection, first_lines: list[str]) -> None:
        old = self.conn
        if old is not None and old is not conn:
            old.session = None
            self.server.spawn(old.close())
        self.conn = conn
        conn.session = self
        conn.greeting_lines = len(first_lines)
        self.detached_at = None
        self.loop_pending = False
        self.out[:0] = first_lines
        self.wake.set()

    def detach(self, conn: Connection) -> None:
        if self.conn is conn:
            self.conn = None
            conn.session = None
            self.detached_at = time.monotonic()
        conn.finish()

    def send(self, line: str) -> None:
        if not self.closed:
            self.out.append(line)
            self.wake.set()

    def update(self, sub: LsSubscription, pos: int, row: Row, quoted: Row | None = None) -> bool:
        """Queue `U` for item `pos` (1-based) of `sub` with its fields taken from `row` (or, for
        a spread-bet item, from `quoted`, the row as that epic quotes it; made here if None)."""
        item = sub.items[pos - 1]
        if item.spreadbet:
            row = quoted if quoted is not None else spreadbet_row(row, self.server.core.store.pairs[item.pair_idx])
        if len(self.out) >= MAX_BUFFERED_LINES:
            sub.lost[pos] = sub.lost.get(pos, 0) + 1
            return False
        lost = sub.lost.pop(pos, 0)
        if lost:
            self.out.append(f"OV,{sub.sub_id},{pos},{lost}")
        values = [row.get(f) for f in sub.fields]
        last = sub.last_sent.get(pos)
        self.out.append(f"U,{sub.sub_id},{pos},{encode_values(values, last)}")
        sub.last_sent[pos] = values
        self.wake.set()
        return True

    def request_loop(self) -> None:
        """Ask the client to rebind on a new WebSocket (`LOOP,0`), as a server does on rotation."""
        self.loop_pending = True
        self.wake.set()

    async def _sender(self) -> None:
        while not self.closed:
            await self.wake.wait()
            self.wake.clear()
            conn = self.conn
            if conn is None or not (self.out or self.loop_pending):
                continue
            lines, self.out = self.out, []
            looping = self.loop_pending  # a LOOP requested during the send goes out next turn
            if looping:
                lines.append(f"LOOP,{conn.loop_ms}")
            try:
                await conn.send("\r\n".join(lines) + "\r\n")
            except Exception:  # the socket went away; the client will bind or re-create
                self.detach(conn)
                continue
            if not looping and conn.wants_loop(lines):
                self.loop_pending = True
                self.wake.set()
            self.last_send = time.monotonic()
            n = sum(1 for ln in lines if ln.startswith("U,"))
            self.sent_updates += n
            self.server.updates_sent += n
            if looping:
                self.loop_pending = False
                if conn.resp is not None:
                    self.server.http_rebinds += 1
                self.detach(conn)  # the client closes this socket and binds a new one

    async def _keepalive(self) -> None:
        """PROBE more often than the keepalive; end a session left without a stream too long."""
        interval = max(0.05, self.keepalive_ms / 2000)
        linger = max(5.0, 3 * self.keepalive_ms / 1000)
        while not self.closed:
            await asyncio.sleep(interval)
            now = time.monotonic()
            if self.conn is not None:
                if now - self.last_send >= interval * 0.9:
                    self.send("PROBE")
            elif self.detached_at is not None and now - self.detached_at > linger:
                self.server.close_session(self)

    def close(self) -> None:
        self.closed = True
        self.wake.set()
        for t in self._tasks:
            t.cancel()
