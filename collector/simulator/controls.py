"""The `/_sim/` HTTP control API: thin JSON wrappers over `SimCore`'s control methods (the table
of routes is in `collector.simulator.server`'s docstring). A bad body is a 400 with the reason,
never a crash of the simulator's loop.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from collector import tickfile
from collector.models import Tick
from collector.pairs import validate_pair

from .clock import as_json
from .rest_http import json_response

if TYPE_CHECKING:
    from .server import SimCore


class ControlApi:
    """`/_sim/*` routes: thin JSON wrappers over `SimCore`'s control methods."""

    def __init__(self, core: SimCore) -> None:
        self.core = core

    def add_routes(self, app: web.Application) -> None:
        c = self.core
        r = app.router
        r.add_get("/_sim/clock", self._get(lambda q: as_json(c.clock)))
        r.add_get("/_sim/stats", self._get(lambda q: c.stats()))
        r.add_get("/_sim/ticks.csv", self.ticks_csv)
        posts: dict[str, Callable[[dict[str, Any]], Any]] = {
            "drop": lambda b: c.drop(b.get("mode", "close")),
            "end": lambda b: c.end_sessions(int(b.get("code", 48)), b.get("message") or "Closed by simulator"),
            "loop": lambda b: c.loop_sessions(),
            "refuse-websockets": lambda b: c.refuse_websockets(int(b.get("count", 1))),
            "credentials": lambda b: c.refuse(bool(b.get("refuse", True))),
            "expire-tokens": lambda b: c.expire_tokens(),
            "pause": lambda b: c.pause(True),
            "resume": lambda b: c.pause(False),
            "stall": lambda b: c.stall(True),
            "unstall": lambda b: c.stall(False),
            "inject": lambda b: c.inject(b["kind"], b.get("pair"), int(b.get("ahead_ms", 86_400_000))),
            "late-tick": lambda b: _tick_json(c.inject_late_tick(b["pair"], int(b.get("age_ms", 60_000)))),
            "allowance": lambda b: c.set_allowance(int(b["remaining"]), b.get("total")),
            "rest-errors": lambda b: c.fail_rest(int(b.get("count", 1)), int(b.get("status", 500))),
            "lose-updates": lambda b: c.lose_updates(b["pair"], int(b.get("count", 1))),
        }
        for name, fn in posts.items():
            r.add_post(f"/_sim/{name}", self._post(fn))

    @staticmethod
    def _get(fn: Callable[[Any], Any]) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.Response:
            return json_response(fn(request.query))

        return handler

    @staticmethod
    def _post(fn: Callable[[dict[str, Any]], Any]) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.Response:
            try:
                text = await request.text()
                body = json.loads(text) if text.strip() else {}
                if not isinstance(body, dict):
                    raise ValueError("body must be a JSON object")
                return json_response(fn(body))
            except (ValueError, KeyError, TypeError) as e:
                return json_response({"error": str(e) or type(e).__name__}, 400)

        return handler

    async def ticks_csv(self, request: web.Request) -> web.StreamResponse:
        core = self.core
        q = request.query
        try:
            pair = validate_pair(q["pair"]) if q.get("pair") else None
            lo = int(q["from_ms"]) if q.get("from_ms") else None
            hi = int(q["to_ms"]) if q.get("to_ms") else None
        except ValueError as e:
            return json_response({"error": str(e)}, 400)
        core.advance()
        idx = core.store.select(pair, lo, hi) if pair is None or pair in core.store.index else []
        resp = web.StreamResponse(headers={"Content-Type": "text/csv; charset=utf-8"})
        await resp.prepare(request)
        await resp.write((",".join(tickfile.HEADER) + "\n").encode())
        chunk = 10_000  # rows formatted per loop turn, so streaming keeps flowing meanwhile
        for i in range(0, len(idx), chunk):
            rows = core.store.ticks_at(idx[i : i + chunk])
            await resp.write("".join(tickfile.format_row(t) for t in rows).encode())
        await resp.write_eof()
        return resp


def _tick_json(t: Tick) -> dict[str, Any]:
    return {"pair": t.pair, "time": t.time_ms, "bid": t.bid, "ask": t.ask}
