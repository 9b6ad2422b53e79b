"""Lightstreamer TLCP server (2.1.0-2.4.0) at `/lightstreamer`, as IG's streaming.

Written from ig-streaming.md section 6 (the wire protocol as lightstreamer-client-lib 1.0.3
speaks it) so the real client cannot tell it from IG for what the collector uses:

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

Each session has its own output buffer and sender task, so a slow client only delays itself:
the market loop appends lines and never awaits a socket. A buffer beyond `MAX_BUFFERED_LINES`
drops updates and reports them with `OV` (lost updates) like a Lightstreamer server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from aiohttp import WSMsgType, web

from .market import STREAM_SCALES_MS, DayStats, StreamCandle, format_price, price_digits
from .rest import is_spreadbet, pair_of_epic, quote_scale

if TYPE_CHECKING:
    from .server import SimCore

log = logging.getLogger(__name__)

TLCP_VERSION = "TLCP-2.4.0"
SUBPROTOCOL = f"{TLCP_VERSION}.lightstreamer.com"
TLCP_VERSIONS = ("TLCP-2.4.0", "TLCP-2.3.0", "TLCP-2.2.0", "TLCP-2.1.0")  # as IG accepts them
SUBPROTOCOLS = tuple(f"{v}.lightstreamer.com" for v in TLCP_VERSIONS)
WS, HTTP_STREAMING, HTTP_POLLING = "WS-STREAMING", "HTTP-STREAMING", "HTTP-POLLING"
DEFAULT_CONTENT_LENGTH = 50_000_000
REQUEST_LIMIT = 50_000
MAX_BUFFERED_LINES = 200_000
COMMANDS = frozenset({"wsok", "create_session", "bind_session", "control", "msg", "heartbeat"})

TICK_FIELDS = (
    "BID", "OFR", "LTP", "LTV", "TTV", "UTM",
    "DAY_OPEN_MID", "DAY_NET_CHG_MID", "DAY_PERC_CHG_MID", "DAY_HIGH", "DAY_LOW",
)  # fmt: skip
CANDLE_FIELDS = (
    "LTV", "TTV", "UTM", "DAY_OPEN_MID", "DAY_NET_CHG_MID", "DAY_PERC_CHG_MID", "DAY_HIGH", "DAY_LOW",
    "OFR_OPEN", "OFR_HIGH", "OFR_LOW", "OFR_CLOSE", "BID_OPEN", "BID_HIGH", "BID_LOW", "BID_CLOSE",
    "LTP_OPEN", "LTP_HIGH", "LTP_LOW", "LTP_CLOSE", "CONS_END", "CONS_TICK_COUNT",
)  # fmt: skip

Row = dict[str, str | None]


def encode_value(v: str | None) -> str:
    """One field in TLCP's value syntax (the client percent-decodes anything else it gets)."""
    if v is None:
        return "#"
    if v == "":
        return "$"
    out = v.replace("%", "%25").replace("|", "%7C").replace("\r", "%0D").replace("\n", "%0A")
    if out[0] in "#$^":
        out = quote(out[0], safe="") + out[1:]
    return out


def encode_values(values: Sequence[str | None], last: Sequence[str | None] | None) -> str:
    """The value part of a `U` line: unchanged fields (vs `last`) become empty or `^n`."""
    parts: list[str] = []
    run = 0
    for i, v in enumerate(values):
        if last is not None and last[i] == v:
            run += 1
            continue
        if run:
            parts.extend([""] * run if run < 3 else [f"^{run}"])
            run = 0
        parts.append(encode_value(v))
    if run:
        parts.extend([""] * run if run < 3 else [f"^{run}"])
    return "|".join(parts)


def percent(msg: str) -> str:
    """Messages in CONERR/END/REQERR are split on commas before decoding: encode commas."""
    return quote(msg, safe=" .:/-_()'")


def parse_params(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split("&"):
        if part:
            k, _, v = part.partition("=")
            out[unquote(k)] = unquote(v)
    return out


def _mid_text(x: float, digits: int) -> str | None:
    return None if x != x else repr(round(x, digits + 1))


def day_fields(day: DayStats, digits: int) -> Row:
    if day.day_ms < 0:
        return dict.fromkeys(("DAY_OPEN_MID", "DAY_NET_CHG_MID", "DAY_PERC_CHG_MID", "DAY_HIGH", "DAY_LOW"))
    chg = day.last_mid - day.open_mid
    return {
        "DAY_OPEN_MID": _mid_text(day.open_mid, digits),
        "DAY_NET_CHG_MID": _mid_text(chg, digits),
        "DAY_PERC_CHG_MID": repr(round(100 * chg / day.open_mid, 3)),
        "DAY_HIGH": _mid_text(day.high, digits),
        "DAY_LOW": _mid_text(day.low, digits),
    }


def tick_row(time_ms: int, bid: float, ask: float, day: DayStats, digits: int) -> Row:
    row: Row = {
        "BID": format_price(bid),
        "OFR": format_price(ask),
        "LTP": None,
        "LTV": None,
        "TTV": None,
        "UTM": str(time_ms),
    }
    row.update(day_fields(day, digits))
    return row


def candle_row(c: StreamCandle, day: DayStats, digits: int) -> Row:
    row: Row = {
        "LTV": None,
        "TTV": None,
        "UTM": str(c.bucket_ms),
        "OFR_OPEN": format_price(c.ask_open),
        "OFR_HIGH": format_price(c.ask_high),
        "OFR_LOW": format_price(c.ask_low),
        "OFR_CLOSE": format_price(c.ask_close),
        "BID_OPEN": format_price(c.bid_open),
        "BID_HIGH": format_price(c.bid_high),
        "BID_LOW": format_price(c.bid_low),
        "BID_CLOSE": format_price(c.bid_close),
        "LTP_OPEN": None,
        "LTP_HIGH": None,
        "LTP_LOW": None,
        "LTP_CLOSE": None,
        "CONS_END": "1" if c.ended else "0",
        "CONS_TICK_COUNT": str(c.ticks),
    }
    row.update(day_fields(day, digits))
    return row


def price_row(time_ms: int, bid: float, ask: float, day: DayStats, digits: int) -> Row:
    d = day_fields(day, digits)
    return {
        "BIDPRICE1": format_price(bid),
        "ASKPRICE1": format_price(ask),
        "BIDSIZE1": "1000000",
        "ASKSIZE1": "1000000",
        "CURRENCY0": None,
        "TIMESTAMP": str(time_ms),
        "DLG_FLAG": "DEAL",
        "MID_OPEN": d["DAY_OPEN_MID"],
        "HIGH": d["DAY_HIGH"],
        "LOW": d["DAY_LOW"],
        "NET_CHG": d["DAY_NET_CHG_MID"],
        "NET_CHG_PCT": d["DAY_PERC_CHG_MID"],
        "DELAY": "0",
    }


@dataclass(frozen=True, slots=True)
class Item:
    name: str
    kind: str  # "TICK", a STREAM_SCALES_MS key, or "PRICE"
    pair_idx: int
    spreadbet: bool = False  # a `.TODAY.IP` epic: prices quoted scaled, as IG quotes them


# Fields that carry a price (scaled for spread bets); the rest are times, counts and flags.
PRICE_FIELDS = frozenset({
    "BID", "OFR", "DAY_OPEN_MID", "DAY_NET_CHG_MID", "DAY_HIGH", "DAY_LOW",
    "OFR_OPEN", "OFR_HIGH", "OFR_LOW", "OFR_CLOSE", "BID_OPEN", "BID_HIGH", "BID_LOW", "BID_CLOSE",
    "BIDPRICE1", "ASKPRICE1", "MID_OPEN", "HIGH", "LOW", "NET_CHG",
})  # fmt: skip


def spreadbet_row(row: Row, pair: str) -> Row:
    """A row as a spread-bet epic streams it: every price times the market's scalingFactor, to
    the quote's decimals (anything that is not a number, as injected faults, passes unchanged)."""
    factor, places = quote_scale(pair, f"CS.D.{pair}.TODAY.IP")
    out = dict(row)
    for f in PRICE_FIELDS.intersection(row):
        v = row[f]
        try:
            d = Decimal(v) if v else None
        except InvalidOperation:
            d = None
        if d is not None and d.is_finite():
            out[f] = format_price(float(round(d * factor, places + (1 if "MID" in f or f == "NET_CHG" else 0))))
    return out


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


class TlcpServer:
    """All Lightstreamer sessions and the routing of market events to their subscriptions."""

    def __init__(self, core: SimCore) -> None:
        self.core = core
        self.sessions: dict[str, LsSession] = {}
        self.connections: set[Connection] = set()
        # (pair index, item kind) -> [(session, subscription, item position)]
        self.routes: dict[tuple[int, str], list[tuple[LsSession, LsSubscription, int]]] = {}
        self.ticks_streamed = 0
        self.updates_sent = 0
        self.sessions_created = 0
        self.binds = 0
        self.binds_by_transport: dict[str, int] = dict.fromkeys((WS, HTTP_STREAMING, HTTP_POLLING), 0)
        self.http_rebinds = 0
        self.refuse_ws = 0  # fault: answer this many WebSocket upgrades with HTTP 503; -1: all
        self._bg: set[asyncio.Task[Any]] = set()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/lightstreamer", self.ws_handler)
        app.router.add_post("/lightstreamer/create_session.txt", self.http_create)
        app.router.add_post("/lightstreamer/bind_session.txt", self.http_bind)
        app.router.add_post("/lightstreamer/control.txt", self.http_control)
        app.router.add_post("/lightstreamer/heartbeat.txt", self.http_heartbeat)

    def spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    # --- transport --------------------------------------------------------------------------
    async def ws_handler(self, request: web.Request) -> web.StreamResponse:
        if self.refuse_ws != 0:
            self.refuse_ws -= 1 if self.refuse_ws > 0 else 0
            return web.Response(status=503, text="WebSocket upgrades refused by the simulator")
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        ws = web.WebSocketResponse(protocols=SUBPROTOCOLS, timeout=2.0, autoping=True, max_msg_size=0)
        await ws.prepare(request)
        conn = Connection(request, protocol_ok=any(p in SUBPROTOCOLS for p in offered), ws=ws)
        self.connections.add(conn)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_frame(conn, msg.data)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.connections.discard(conn)
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
                    self._control(conn.session, params, conn.session.send)
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
        old = self.sessions.get(params.get("LS_old_session", ""))
        if old is not None:
            self.close_session(old)
        sid = "S" + secrets.token_hex(8)
        session = LsSession(self, sid, cst, self.core.keepalive_ms)
        self.sessions[sid] = session
        self.sessions_created += 1
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
        session = self.sessions.get(params.get("LS_session", ""))
        if session is None or session.closed or not conn.protocol_ok:
            await conn.send(f"CONERR,20,{percent('Session not found')}")
            return
        self.binds += 1
        self.binds_by_transport[WS] += 1
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
        session = self.sessions.get(params.get("LS_session", ""))
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
        self.connections.add(conn)
        self.binds += 1
        self.binds_by_transport[conn.transport] += 1
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
            self.connections.discard(conn)
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
            session = self.sessions.get(params.get("LS_session") or request.query.get("LS_session", ""))
            if session is None or session.closed:
                out.append(f"REQERR,{params.get('LS_reqId', '0')},20,{percent('Session not found')}")
                continue
            try:
                self._control(session, {**params, "LS_ack": "true"}, out.append)
            except ValueError:
                out.append(f"REQERR,{params.get('LS_reqId', '0')},15,{percent('Malformed request')}")
        return web.Response(text="".join(f"{ln}\r\n" for ln in out))

    async def http_heartbeat(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="")

    # --- control requests -------------------------------------------------------------------
    def _control(self, session: LsSession, p: dict[str, str], reply: Callable[[str], None]) -> None:
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
                self._rebuild_routes()
                session.send(f"UNSUB,{sub.sub_id}")
        elif op == "destroy":
            if ack:
                reply(f"REQOK,{req_id}")
            self.close_session(session, close_ws=p.get("LS_close_socket") == "true")
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
        self._rebuild_routes()

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

    def _rebuild_routes(self) -> None:
        routes: dict[tuple[int, str], list[tuple[LsSession, LsSubscription, int]]] = {}
        for s in self.sessions.values():
            for sub in s.subs.values():
                for pos, item in enumerate(sub.items, start=1):
                    routes.setdefault((item.pair_idx, item.kind), []).append((s, sub, pos))
        self.routes = routes

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
        self._rebuild_routes()

    # --- market events ----------------------------------------------------------------------
    def _fan_out(self, pair_idx: int, kind: str, make_row: Callable[[], Row]) -> int:
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
        if self._fan_out(pair_idx, "TICK", lambda: tick_row(time_ms, bid, ask, day, digits)):
            self.ticks_streamed += 1
        for scale, c in (*closed, *changed):
            self._fan_out(pair_idx, scale, lambda c=c: candle_row(c, day, digits))
        self._fan_out(pair_idx, "PRICE", lambda: price_row(time_ms, bid, ask, day, digits))

    def publish_closed(self, closed: list[tuple[int, str, StreamCandle]]) -> None:
        if self.core.faults.stalled:
            return
        core = self.core
        for pi, scale, c in closed:
            day = core.day_stats[pi]
            digits = price_digits(core.store.pairs[pi])
            self._fan_out(pi, scale, lambda c=c, day=day, digits=digits: candle_row(c, day, digits))

    def send_raw_tick_row(self, pair_idx: int, row: Row) -> int:
        """Send a hand-made TICK row (malformed-value injection) to the pair's TICK subscribers."""
        return self._fan_out(pair_idx, "TICK", lambda: row)

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
        self._rebuild_routes()
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
