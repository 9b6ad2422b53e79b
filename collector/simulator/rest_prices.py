"""`GET /prices/{epic}` v3: historical candles, paged, each costing one point of the weekly
allowance (rules in `collector.simulator.rest`'s docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from .market import RESOLUTIONS_MS, bucket_ceil, bucket_start
from .quotes import pair_of_epic, scaled
from .rest_auth import RestAuth
from .rest_http import (
    ERR_ALLOWANCE,
    ERR_INVALID_DATERANGE,
    ERR_INVALID_RESOLUTION,
    ERR_MALFORMED_DATE,
    ERR_SYSTEM,
    ERR_UNPARSABLE_DATE,
    ERR_UNSUPPORTED_EPIC,
    error,
    json_response,
)
from .rest_time import parse_ig_time, uk_text, utc_text

if TYPE_CHECKING:
    from .server import SimCore

WEEK_MS = 7 * 86_400_000


@dataclass
class Allowance:
    """The account's weekly historical-data allowance, one point per returned candle."""

    total: int
    remaining: int
    period_start_ms: int

    def roll(self, now_ms: int) -> None:
        while now_ms >= self.period_start_ms + WEEK_MS:
            self.period_start_ms += WEEK_MS
            self.remaining = self.total

    def expiry_s(self, now_ms: int) -> int:
        return max(0, (self.period_start_ms + WEEK_MS - now_ms) // 1000)

    def as_json(self, now_ms: int) -> dict[str, int]:
        self.roll(now_ms)
        return {
            "remainingAllowance": self.remaining,
            "totalAllowance": self.total,
            "allowanceExpiry": self.expiry_s(now_ms),
        }


class PriceRoutes:
    """`/prices/{epic}`; the allowance it spends lives on the core (the controls set it too)."""

    def __init__(self, core: SimCore, auth: RestAuth) -> None:
        self.core = core
        self.auth = auth

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/prices/{epic}", self.get_prices)

    async def get_prices(self, request: web.Request) -> web.StreamResponse:
        core = self.core
        if core.faults.rest_errors_left > 0:
            core.faults.rest_errors_left -= 1
            return error(core.faults.rest_error_status, ERR_SYSTEM)
        s = self.auth.authenticate(request)
        if isinstance(s, web.Response):
            return s
        epic = request.match_info["epic"]
        pair = pair_of_epic(epic)
        if pair is None:
            return error(400, ERR_UNSUPPORTED_EPIC)
        q = request.query
        resolution = q.get("resolution", "MINUTE").upper()
        tf_ms = RESOLUTIONS_MS.get(resolution)
        if tf_ms is None:
            return error(400, ERR_INVALID_RESOLUTION)
        zone = core.rest_time_zone
        times: dict[str, int | None] = {}
        for name in ("from", "to"):
            try:
                times[name] = parse_ig_time(q[name], zone) if q.get(name) else None
            except ValueError:
                return error(400, ERR_UNPARSABLE_DATE.format(q[name]))
        from_ms, to_ms = times["from"], times["to"]
        try:
            max_points = int(q.get("max", "10"))
            page_size = int(q.get("pageSize", "20"))
            page_number = max(1, int(q.get("pageNumber", "1")))
        except ValueError:
            return error(400, ERR_MALFORMED_DATE)
        if from_ms is not None and to_ms is not None and from_ms > to_ms:
            return error(400, ERR_INVALID_DATERANGE)

        core.advance()
        now_ms = core.clock.now_ms()
        now_bucket = bucket_start(now_ms, tf_ms)
        if from_ms is None and to_ms is None:
            first = core.store.last_buckets(pair, tf_ms, now_bucket, max_points)
            lo, hi = (first, now_bucket) if first is not None else (now_bucket + 1, now_bucket)
        else:
            # Buckets whose start is in [from, to]; `to` never reaches past the forming bucket.
            lo = None if from_ms is None else bucket_ceil(from_ms, tf_ms)
            hi = now_bucket if to_ms is None else min(bucket_start(to_ms, tf_ms), now_bucket)
        candles = core.store.candles(pair, tf_ms, lo, hi) if lo is None or lo <= hi else []

        total = len(candles)
        if page_size > 0:
            total_pages = -(-total // page_size)
            page = candles[(page_number - 1) * page_size : page_number * page_size]
        else:
            total_pages = 1 if total else 0
            page = candles
        allowance = core.allowance
        allowance.roll(now_ms)
        if page and (allowance.remaining <= 0 or len(page) > allowance.remaining):
            return error(403, ERR_ALLOWANCE)
        allowance.remaining -= len(page)

        def px(bid: float, ask: float) -> dict[str, float | None]:
            return {"bid": scaled(bid, pair, epic), "ask": scaled(ask, pair, epic), "lastTraded": None}

        prices = [
            {
                "snapshotTime": uk_text(c.bucket_ms),
                "snapshotTimeUTC": utc_text(c.bucket_ms),
                "openPrice": px(c.bid_open, c.ask_open),
                "closePrice": px(c.bid_close, c.ask_close),
                "highPrice": px(c.bid_high, c.ask_high),
                "lowPrice": px(c.bid_low, c.ask_low),
                "lastTradedVolume": c.ticks,
            }
            for c in page
        ]
        core.stats_rest_candles += len(page)
        return json_response(
            {
                "prices": prices,
                "instrumentType": "CURRENCIES",
                "metadata": {
                    "allowance": allowance.as_json(now_ms),
                    "size": len(prices),
                    "pageData": {"pageSize": page_size, "pageNumber": page_number, "totalPages": total_pages},
                },
            }
        )
