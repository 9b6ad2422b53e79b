"""The IG simulator: REST + Lightstreamer + fault controls in one aiohttp app on loopback.

`Simulator` runs its own asyncio loop in a daemon thread so tests, the demo and benchmarks can
start it in-process (`with Simulator(...) as sim:`) and point the real `trading-ig` and
`lightstreamer-client-lib` at `sim.url`. Every public method is thread-safe: it runs on the
simulator's loop and waits for the result.

Clock contract: `sim_ms = start_ms + (wall_ms - wall_start_ms) * speed`, with `wall_ms` the
Unix wall clock in ms. `GET /_sim/clock` returns those numbers so a collector can follow the
same clock; tick times (IG's `UTM`) and candle buckets are on this clock. Token lifetimes and
`ticks_per_second` are wall-clock.

`history_ms` / `history_ticks` pre-generate that many ticks evenly over the `history_ms` before
`start_ms`, so REST warm-up and backfill have history from the first second (with `tick_file`,
ticks of the file before `start_ms` are the history instead).

The market keeps moving with or without clients (ticks generated while nobody listens are what
REST backfill recovers); every generated tick is ground truth in `GET /_sim/ticks.csv`.

Control API (JSON bodies; each has a Python method of the same meaning on `Simulator`):

| HTTP                                                  | Python                                  |
|-------------------------------------------------------|-----------------------------------------|
| GET  /_sim/clock                                      | clock()                                 |
| GET  /_sim/stats                                      | stats()                                 |
| GET  /_sim/ticks.csv?pair=EURUSD&from_ms=&to_ms=      | ticks(pair, from_ms, to_ms)             |
| POST /_sim/drop        {"mode": "close" or "abort"}   | drop_connections(mode)                  |
| POST /_sim/end         {"code": 48, "message": "..."} | end_sessions(code, message)             |
| POST /_sim/loop        {}                             | loop_sessions()                         |
| POST /_sim/refuse-websockets {"count": 1}             | refuse_websockets(count)  (-1: for good) |
| POST /_sim/credentials {"refuse": true}               | refuse_credentials(refuse)              |
| POST /_sim/expire-tokens {}                           | expire_tokens()                         |
| POST /_sim/pause, /_sim/resume {}                     | pause_market(), resume_market()         |
| POST /_sim/stall, /_sim/unstall {}                    | stall_stream(), unstall_stream()        |
| POST /_sim/inject {"kind": K, "pair": P, "ahead_ms"}  | inject(kind, pair, ahead_ms)            |
| POST /_sim/late-tick {"pair": P, "age_ms": 90000}     | inject_late_tick(pair, age_ms)          |
| POST /_sim/allowance {"remaining": 0, "total": null}  | set_allowance(remaining, total)         |
| POST /_sim/rest-errors {"count": 3, "status": 500}    | fail_rest(count, status)                |
| POST /_sim/lose-updates {"pair": P, "count": 5}       | lose_updates(pair, count)               |

- drop: `close` sends a WebSocket close frame, `abort` resets the TCP connection; Lightstreamer
  sessions stay on the server (as after a network cut) and the client re-creates them.
- end: `END,<code>` on every stream; 41/48 make the client retry with a new session, 31/32 (any
  other code) are terminal (`onServerError`).
- loop: `LOOP,0` on every stream; the client rebinds the same session on a new WebSocket.
- refuse-websockets: the next `count` WebSocket upgrades get HTTP 503 (`-1`: all of them, for
  good; `0` stops refusing), so the client falls back to `create_session.txt` over HTTP and binds
  over WebSocket again, or, while WebSockets stay refused, streams over HTTP (streaming or
  polling), as behind a proxy that blocks WebSocket.
- credentials refused: logins get 401 `error.security.invalid-details`, create_session `CONERR,1`.
- expire-tokens: every CST/XST and OAuth token becomes invalid (REST 401, create_session CONERR,1);
  open streams keep flowing, as on IG.
- lose-updates: the next `count` ticks of the pair are generated and recorded but not sent; the
  next update sent carries `OV` (lost updates), as a Lightstreamer server under load does.
- pause: no ticks are generated (the clock runs on). stall: ticks are generated and recorded
  but nothing reaches stream clients; PROBEs continue (a silently dead feed).
- inject kinds: `empty`, `null`, `non_numeric`, `crossed`, `far_future` (UTM now + ahead_ms,
  default 1 day), `negative`, `zero`, `duplicate` (the last real tick again). Sent to the pair's
  `CHART:*:TICK` subscribers only and never recorded; returns the values as sent.
- late-tick: a real tick stamped `age_ms` in the past: recorded (REST and ticks.csv have it) and
  streamed; streamed candles that already ended ignore it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from collector import tickfile
from collector.clock import LinearClock
from collector.models import Tick
from collector.pairs import PAIRS, pip_size, validate_pair

from .clock import as_json, start_clock
from .controls import ControlApi
from .market import BASE_MID, DayStats, FileFeed, PriceModel, StreamCandles, TickStore, format_price, price_digits
from .rest import Allowance, AuthRegistry, RestApi
from .tlcp import TICK_FIELDS, TlcpServer, tick_row

T = TypeVar("T")
STEP_S = 0.01  # market loop period (wall); ticks inside a step are spread evenly over its time
INJECT_KINDS = ("empty", "null", "non_numeric", "crossed", "far_future", "negative", "zero", "duplicate")


@dataclass
class Faults:
    paused: bool = False
    stalled: bool = False
    refuse_credentials: bool = False
    rest_errors_left: int = 0
    rest_error_status: int = 500
    lose_ticks: dict[int, int] = field(default_factory=dict)  # pair index -> ticks still to drop


class SimCore:
    """All simulator state; lives on (and is only touched from) the simulator's event loop."""

    def __init__(
        self,
        *,
        seed: int,
        ticks_per_second: float,
        pairs: Sequence[str],
        start_ms: int | None,
        speed: float,
        tick_file: str | Path | None,
        token_ttl_s: float,
        oauth_ttl_s: float,
        allowance: int,
        keepalive_ms: int,
        api_key: str,
        username: str,
        password: str,
        account_id: str,
        history_ms: int = 0,
        history_ticks: int = 0,
        rest_time_zone: str = "UTC",
        http_content_length: int | None = None,
    ) -> None:
        self.pairs = tuple(validate_pair(p) for p in pairs)
        try:
            self.rest_time_zone = ZoneInfo(rest_time_zone)
        except (ValueError, ZoneInfoNotFoundError):
            raise ValueError(f"unknown time zone {rest_time_zone!r}; use an IANA name like Europe/London") from None
        self.http_content_length = http_content_length
        if not self.pairs or speed <= 0 or ticks_per_second < 0 or keepalive_ms <= 0:
            raise ValueError("need at least one pair, speed > 0, ticks_per_second >= 0, keepalive_ms > 0")
        self.api_key, self.username, self.password = api_key, username, password
        self.account_id = account_id
        self.client_id = "100000001"
        self.keepalive_ms = keepalive_ms
        self.ticks_per_second = ticks_per_second
        self.url = ""
        self.feed = FileFeed(tickfile.load(tick_file), self.pairs) if tick_file else None
        if start_ms is None:
            first = self.feed.first_ms if self.feed else None
            start_ms = first if first is not None else time.time_ns() // 1_000_000
        self.clock = start_clock(start_ms, speed)
        self.store = TickStore(self.pairs)
        self.model = PriceModel(self.pairs, seed)
        self.stream_candles = StreamCandles()
        self.day_stats = [DayStats() for _ in self.pairs]
        self.auth = AuthRegistry(token_ttl_s=token_ttl_s, oauth_ttl_s=oauth_ttl_s)
        self.allowance = Allowance(allowance, allowance, start_ms)
        self.faults = Faults()
        self.tlcp = TlcpServer(self)
        self.stats_rest_candles = 0
        self._gen_ms = start_ms
        self._wall_base = time.monotonic()
        self._generated = 0
        if history_ticks > 0 and history_ms > 0 and self.feed is None:
            # History before start, evenly spread, so REST warm-up and backfill have data at once.
            for i in range(history_ticks):
                pi, bid, ask = self.model.next()
                self._record(pi, start_ms - history_ms + history_ms * i // history_ticks, bid, ask)

    # --- market -----------------------------------------------------------------------------
    def advance(self) -> None:
        """Generate every tick due up to now; called by the market loop and before any read so
        a REST answer or ticks.csv never misses a tick whose time has passed."""
        now = max(self._gen_ms, self.clock.now_ms())
        if self.faults.paused:
            self._gen_ms = now
            return
        prev = self._gen_ms
        if self.feed is not None:
            for t in self.feed.due(now):
                self._record(self.store.index[t.pair], t.time_ms, t.bid, t.ask)
        else:
            target = int((time.monotonic() - self._wall_base) * self.ticks_per_second)
            n = target - self._generated
            for i in range(n):
                pi, bid, ask = self.model.next()
                self._record(pi, prev + (now - prev) * (i + 1) // n, bid, ask)
            self._generated = max(self._generated, target)
        self._gen_ms = now
        closed = self.stream_candles.close_due(now)
        if closed:
            self.tlcp.publish_closed(closed)

    def _record(self, pi: int, time_ms: int, bid: float, ask: float) -> None:
        self.store.append(pi, time_ms, bid, ask)
        self.day_stats[pi].add(time_ms, bid, ask)
        closed, changed = self.stream_candles.add(pi, time_ms, bid, ask)
        self.tlcp.publish_tick(pi, time_ms, bid, ask, closed, changed)

    def quote(self, pair: str) -> tuple[float, float]:
        """The pair's current (bid, ask); a static 1-pip quote for a pair that is not simulated."""
        if pair not in self.store.index:
            mid, pip, d = BASE_MID[pair], pip_size(pair), price_digits(pair)
            return round(mid - pip / 2, d), round(mid + pip / 2, d)
        pi = self.store.index[pair]
        last = self.store.last(pi, 1)
        return (last[0][1], last[0][2]) if last else self.model.quote(pi)

    async def run_market(self) -> None:
        while True:
            self.advance()
            await asyncio.sleep(STEP_S)

    # --- controls ---------------------------------------------------------------------------
    def pause(self, paused: bool) -> dict[str, Any]:
        if self.faults.paused and not paused:
            # Resume without a burst: the generator's budget restarts now.
            self._wall_base, self._generated = time.monotonic(), 0
            if self.feed is not None:
                self.feed.due(self.clock.now_ms())  # ticks due while paused never happened
        self.advance()
        self.faults.paused = paused
        return {"paused": paused}

    def stall(self, stalled: bool) -> dict[str, Any]:
        self.advance()
        self.faults.stalled = stalled
        return {"stalled": stalled}

    def refuse(self, refuse: bool) -> dict[str, Any]:
        self.faults.refuse_credentials = refuse
        return {"refuse_credentials": refuse}

    def expire_tokens(self) -> dict[str, Any]:
        return {"expired": self.auth.expire_all()}

    def lose_updates(self, pair: str, count: int) -> dict[str, Any]:
        pi = self.store.pairs.index(validate_pair(pair))
        self.faults.lose_ticks[pi] = self.faults.lose_ticks.get(pi, 0) + count
        return {"pair": pair, "losing": self.faults.lose_ticks[pi]}

    def set_allowance(self, remaining: int, total: int | None = None) -> dict[str, Any]:
        if total is not None:
            self.allowance.total = int(total)
        self.allowance.remaining = int(remaining)
        return self.allowance.as_json(self.clock.now_ms())

    def fail_rest(self, count: int, status: int = 500) -> dict[str, Any]:
        if status < 500 or status > 599:
            raise ValueError("status must be a 5xx code")
        self.faults.rest_errors_left, self.faults.rest_error_status = int(count), int(status)
        return {"rest_errors_pending": count, "status": status}

    def drop(self, mode: str = "close") -> dict[str, Any]:
        if mode not in ("close", "abort"):
            raise ValueError("mode must be 'close' or 'abort'")
        return {"dropped": self.tlcp.drop(mode)}

    def end_sessions(self, code: int, message: str = "Session closed by the simulator") -> dict[str, Any]:
        return {"ended": self.tlcp.end_all(int(code), message)}

    def loop_sessions(self) -> dict[str, Any]:
        return {"looped": self.tlcp.loop_all()}

    def refuse_websockets(self, count: int) -> dict[str, Any]:
        if int(count) < -1:
            raise ValueError("count must be -1 (for good), 0 (stop refusing) or a positive number")
        self.tlcp.refuse_ws = int(count)
        return {"websockets_refused": int(count)}

    def inject(self, kind: str, pair: str | None = None, ahead_ms: int = 86_400_000) -> dict[str, Any]:
        """Send one malformed (or duplicate) TICK update; it is not recorded as ground truth."""
        if kind not in INJECT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(INJECT_KINDS)}")
        pair = validate_pair(pair) if pair else self.pairs[0]
        if pair not in self.store.index:
            raise ValueError(f"{pair} is not simulated")
        self.advance()
        pi = self.store.index[pair]
        digits = price_digits(pair)
        day = self.day_stats[pi]
        if kind == "duplicate":
            last = self.store.last(pi, 1)
            if not last:
                raise ValueError(f"no {pair} tick to duplicate yet")
            row = tick_row(*last[0], day, digits)
        else:
            now = self.clock.now_ms()
            bid, ask = self.quote(pair)
            row = tick_row(now, bid, ask, day, digits)
            if kind == "empty":
                row["BID"] = row["OFR"] = ""
            elif kind == "null":
                row["BID"] = row["OFR"] = None
            elif kind == "non_numeric":
                row["BID"], row["OFR"] = "abc", "1.2.3"
            elif kind == "crossed":
                row["BID"], row["OFR"] = format_price(round(ask + pip_size(pair), digits)), format_price(bid)
            elif kind == "far_future":
                row["UTM"] = str(now + int(ahead_ms))
            elif kind == "negative":
                row["BID"] = format_price(-bid)
            elif kind == "zero":
                row["BID"] = row["OFR"] = "0"
        sent = 0 if self.faults.stalled else self.tlcp.send_raw_tick_row(pi, row)
        return {"kind": kind, "pair": pair, "values": {f: row[f] for f in TICK_FIELDS}, "recipients": sent}

    def inject_late_tick(self, pair: str, age_ms: int) -> Tick:
        pair = validate_pair(pair)
        if pair not in self.store.index:
            raise ValueError(f"{pair} is not simulated")
        self.advance()
        bid, ask = self.quote(pair)
        t = self.clock.now_ms() - int(age_ms)
        self._record(self.store.index[pair], t, bid, ask)
        return Tick(pair, t, bid, ask)

    def stats(self) -> dict[str, Any]:
        self.advance()
        tl = self.tlcp
        now = self.clock.now_ms()
        return {
            "now_ms": now,
            "connections": len(tl.connections),
            "sessions": len(tl.sessions),
            "sessions_created": tl.sessions_created,
            "binds": tl.binds,
            "binds_by_transport": dict(tl.binds_by_transport),
            "http_rebinds": tl.http_rebinds,
            "rest_time_zone": str(self.rest_time_zone),
            "subscriptions": sum(len(s.subs) for s in tl.sessions.values()),
            "rest_sessions": self.auth.live_count(),
            "ticks_generated": len(self.store),
            "ticks_streamed": tl.ticks_streamed,
            "updates_sent": tl.updates_sent,
            "rest_candles_served": self.stats_rest_candles,
            "allowance": self.allowance.as_json(now),
            "paused": self.faults.paused,
            "stalled": self.faults.stalled,
            "refuse_credentials": self.faults.refuse_credentials,
            "rest_errors_pending": self.faults.rest_errors_left,
        }


class Simulator:
    """A loopback IG (REST + Lightstreamer) on its own event-loop thread; see the module doc."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 1,
        ticks_per_second: float = 50.0,
        pairs: Sequence[str] = PAIRS,
        start_ms: int | None = None,
        speed: float = 1.0,
        tick_file: str | Path | None = None,
        token_ttl_s: float = 12 * 3600.0,
        allowance: int = 10_000,
        keepalive_ms: int = 5000,
        api_key: str = "sim-key",
        username: str = "sim-user",
        password: str = "sim-pass",
        account_id: str = "SIMACC1",
        oauth_ttl_s: float = 60.0,
        history_ms: int = 0,
        history_ticks: int = 0,
        rest_time_zone: str = "UTC",
        http_content_length: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._core_args: dict[str, Any] = dict(
            seed=seed,
            ticks_per_second=ticks_per_second,
            pairs=pairs,
            start_ms=start_ms,
            speed=speed,
            tick_file=tick_file,
            token_ttl_s=token_ttl_s,
            oauth_ttl_s=oauth_ttl_s,
            allowance=allowance,
            keepalive_ms=keepalive_ms,
            api_key=api_key,
            username=username,
            password=password,
            account_id=account_id,
            history_ms=history_ms,
            history_ticks=history_ticks,
            rest_time_zone=rest_time_zone,
            http_content_length=http_content_length,
        )
        self.api_key, self.username, self.password, self.account_id = api_key, username, password, account_id
        self.core: SimCore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._market: asyncio.Task[None] | None = None

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> Simulator:
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._startup())
            except BaseException as e:  # reported to start()'s caller
                failure.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="ig-simulator", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("simulator did not start within 30 s")
        if failure:
            self._thread.join(5)
            self._thread = None
            raise failure[0]
        return self

    async def _startup(self) -> None:
        core = SimCore(**self._core_args)
        app = web.Application()
        RestApi(core).add_routes(app)
        core.tlcp.add_routes(app)
        ControlApi(core).add_routes(app)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = runner.addresses[0][1]
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        if ":" in shown:
            shown = f"[{shown}]"
        core.url = f"http://{shown}:{self.port}"
        self._runner = runner
        self.core = core
        core.advance()
        self._market = asyncio.get_running_loop().create_task(core.run_market(), name="sim-market")

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            try:
                fut.result(15)
            finally:
                loop.call_soon_threadsafe(loop.stop)
        thread.join(15)
        self._thread = None
        self._loop = None

    async def _shutdown(self) -> None:
        if self._market is not None:
            self._market.cancel()
        if self.core is not None:
            await self.core.tlcp.close()
        if self._runner is not None:
            await self._runner.cleanup()
        current = asyncio.current_task()
        rest = [t for t in asyncio.all_tasks() if t is not current]
        for t in rest:
            t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def __enter__(self) -> Simulator:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- plumbing ---------------------------------------------------------------------------
    def _call(self, fn: Callable[[SimCore], T]) -> T:
        loop, core = self._loop, self.core
        if loop is None or core is None:
            raise RuntimeError("simulator is not running")

        async def run() -> T:
            return fn(core)

        return asyncio.run_coroutine_threadsafe(run(), loop).result(30)

    @property
    def url(self) -> str:
        if self.core is None:
            raise RuntimeError("simulator is not running")
        return self.core.url

    # --- clock and ground truth -------------------------------------------------------------
    def now_ms(self) -> int:
        if self.core is None:
            raise RuntimeError("simulator is not running")
        return self.core.clock.now_ms()

    def clock(self) -> dict[str, Any]:
        return self._call(lambda c: as_json(c.clock))

    def market_clock(self) -> LinearClock:
        """The market's clock, for a collector to run on (`LinearClock.spec()` for a child process)."""
        if self.core is None:
            raise RuntimeError("simulator is not running")
        return self.core.clock

    def ticks(self, pair: str | None = None, from_ms: int | None = None, to_ms: int | None = None) -> list[Tick]:
        """Every tick generated so far (ground truth), in generation order."""

        def read(c: SimCore) -> list[Tick]:
            c.advance()
            return c.store.ticks(validate_pair(pair) if pair else None, from_ms, to_ms)

        return self._call(read)

    def stats(self) -> dict[str, Any]:
        return self._call(lambda c: c.stats())

    def issued_tokens(self) -> list[str]:
        """Every session token handed out so far: tests prove none of them reaches a log."""

        def read(c: SimCore) -> list[str]:
            out = []
            for sess in c.auth.by_cst.values():
                out += [t for t in (sess.cst, sess.xst, sess.access_token, sess.refresh_token) if t]
            return out

        return self._call(read)

    # --- faults -----------------------------------------------------------------------------
    def drop_connections(self, mode: str = "close") -> dict[str, Any]:
        return self._call(lambda c: c.drop(mode))

    def end_sessions(self, code: int = 48, message: str = "Closed by simulator") -> dict[str, Any]:
        return self._call(lambda c: c.end_sessions(code, message))

    def loop_sessions(self) -> dict[str, Any]:
        return self._call(lambda c: c.loop_sessions())

    def refuse_websockets(self, count: int = 1) -> dict[str, Any]:
        return self._call(lambda c: c.refuse_websockets(count))

    def refuse_credentials(self, refuse: bool = True) -> dict[str, Any]:
        return self._call(lambda c: c.refuse(refuse))

    def expire_tokens(self) -> dict[str, Any]:
        return self._call(lambda c: c.expire_tokens())

    def pause_market(self) -> dict[str, Any]:
        return self._call(lambda c: c.pause(True))

    def resume_market(self) -> dict[str, Any]:
        return self._call(lambda c: c.pause(False))

    def stall_stream(self) -> dict[str, Any]:
        return self._call(lambda c: c.stall(True))

    def lose_updates(self, pair: str, count: int) -> dict[str, Any]:
        return self._call(lambda c: c.lose_updates(pair, count))

    def unstall_stream(self) -> dict[str, Any]:
        return self._call(lambda c: c.stall(False))

    def inject(self, kind: str, pair: str | None = None, ahead_ms: int = 86_400_000) -> dict[str, Any]:
        return self._call(lambda c: c.inject(kind, pair, ahead_ms))

    def inject_late_tick(self, pair: str, age_ms: int) -> Tick:
        return self._call(lambda c: c.inject_late_tick(pair, age_ms))

    def set_allowance(self, remaining: int, total: int | None = None) -> dict[str, Any]:
        return self._call(lambda c: c.set_allowance(remaining, total))

    def fail_rest(self, count: int, status: int = 500) -> dict[str, Any]:
        return self._call(lambda c: c.fail_rest(count, status))
