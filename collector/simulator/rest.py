"""IG REST gateway routes of the simulator: session (v1/v2/v3), markets, prices v3, applications.

Shaped after IG's gateway as `trading-ig` 0.0.25 reads it (see ig-streaming.md sections 1 and 3):
every request needs `X-IG-API-KEY`; v2 logins answer with `CST` / `X-SECURITY-TOKEN` headers,
v3 logins with an `oauthToken` body and then `Authorization: Bearer` + `IG-ACCOUNT-ID`.
trading-ig sends DELETE as `POST` with a `_method: DELETE` header, so that is honoured too.

Decisions for behaviour IG does not document (keep the collector's tests honest):
- `from` / `to` must be exactly `yyyy-MM-ddTHH:mm:ss`, as IG documents them; anything else
  (`2020/09/01T00:00:00`, a space for `T`, a zone suffix, month 13) gets 400 with errorCode
  `Unable to parse datetime=<value>`, as IG's v3 answers (trading-ig issue 217). They are read
  in `rest_time_zone` (`--rest-time-zone`): `UTC` by default, or e.g. `Europe/London`, the
  account's time zone, as IG is believed to read them for UK accounts (README "IG specifics").
  A local time that does not exist or repeats at a clock change is taken at its first occurrence.
  `snapshotTime` is always UK local, `snapshotTimeUTC` UTC.
- Spread-bet epics (`.TODAY.IP`) are quoted scaled, as IG quotes them: the rate times the market
  snapshot's `scalingFactor` (10,000; 100 for JPY pairs), with `decimalPlacesFactor` (1) decimals,
  in REST prices, the market snapshot and the stream alike. CFD epics quote the rate.
- A candle is returned when its bucket **start** lies in `[from, to]`, both inclusive (like IG).
  `to` defaults to now, `from` to the beginning of the data. Without `from`/`to`, the last `max`
  (default 10) non-empty buckets are returned.
- The forming bucket (start <= now < end) is returned like IG does, with its values so far, so a
  caller must itself skip buckets that have not closed on `/_sim/clock`. Buckets starting after
  now are never returned. Empty buckets have no candle. DAY buckets start at midnight UK time.
- Each returned candle costs one allowance point. A page needing more points than remain is
  refused with 403 `error.public-api.exceeded-account-historical-data-allowance` and costs nothing;
  responses without candles are free. The allowance resets 7 days (simulator clock) after start.
- `metadata.size` is the number of candles in this response (this page).
- Token lifetimes are wall-clock seconds (trading-ig computes v3 expiry on the wall clock).
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from aiohttp import web

from collector.pairs import PAIRS

from .market import RESOLUTIONS_MS, DayStats, bucket_ceil, bucket_start, price_digits

if TYPE_CHECKING:
    from .server import SimCore

JSON_CT = "application/json; charset=UTF-8"
UK = ZoneInfo("Europe/London")
WEEK_MS = 7 * 86_400_000
EPIC_SUFFIXES = (".CFD.IP", ".MINI.IP", ".TODAY.IP")

ERR_API_KEY_INVALID = "error.security.api-key-invalid"
ERR_API_KEY_MISSING = "error.security.api-key-missing"
ERR_INVALID_DETAILS = "error.security.invalid-details"
ERR_CLIENT_TOKEN_INVALID = "error.security.client-token-invalid"
ERR_CLIENT_TOKEN_MISSING = "error.security.client-token-missing"
ERR_OAUTH_TOKEN_INVALID = "error.security.oauth-token-invalid"
ERR_ALLOWANCE = "error.public-api.exceeded-account-historical-data-allowance"
ERR_EPIC_UNAVAILABLE = "error.service.marketdata.instrument.epic.unavailable"
ERR_UNSUPPORTED_EPIC = "error.unsupported.epic"
ERR_MALFORMED_DATE = "error.malformed.date"
ERR_UNPARSABLE_DATE = "Unable to parse datetime={}"  # v3's errorCode, with the value (trading-ig#217)
ERR_INVALID_DATERANGE = "error.invalid.daterange"
ERR_INVALID_RESOLUTION = "error.invalid.resolution"
ERR_SYSTEM = "system.error"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, headers={"Content-Type": JSON_CT, **(headers or {})})


def error(status: int, code: str) -> web.Response:
    return json_response({"errorCode": code}, status)


def pair_of_epic(epic: str) -> str | None:
    """`CS.D.EURUSD.CFD.IP` (or .MINI.IP / .TODAY.IP) -> `EURUSD`; None for anything else."""
    for suffix in EPIC_SUFFIXES:
        if epic.startswith("CS.D.") and epic.endswith(suffix):
            pair = epic[len("CS.D.") : -len(suffix)]
            if pair in PAIRS:
                return pair
    return None


@dataclass(slots=True)
class RestSession:
    """One logged-in session; v2 uses the CST/XST pair, v3 the OAuth tokens (and CST/XST once
    `GET /session?fetchSessionTokens=true` asked for them, as IG's streaming needs them)."""

    account_id: str
    version: str
    cst: str
    xst: str
    last_used: float
    access_token: str | None = None
    refresh_token: str | None = None
    access_expires: float = 0.0
    refresh_expires: float = 0.0
    revoked: bool = False


@dataclass
class AuthRegistry:
    """Live REST sessions and their tokens. Idle CST/XST expire after `token_ttl_s` (IG: 12 h),
    v3 access tokens after `oauth_ttl_s` (IG: 60 s), refresh tokens after 10 minutes."""

    token_ttl_s: float
    oauth_ttl_s: float
    refresh_ttl_s: float = 600.0
    by_cst: dict[str, RestSession] = field(default_factory=dict)
    by_access: dict[str, RestSession] = field(default_factory=dict)
    by_refresh: dict[str, RestSession] = field(default_factory=dict)

    def create(self, account_id: str, version: str) -> RestSession:
        now = time.monotonic()
        s = RestSession(account_id, version, _token(), _token(), now)
        self.by_cst[s.cst] = s
        if version == "3":
            self._issue_oauth(s, now)
        return s

    def _issue_oauth(self, s: RestSession, now: float) -> None:
        for tok, table in ((s.access_token, self.by_access), (s.refresh_token, self.by_refresh)):
            if tok is not None:
                table.pop(tok, None)
        s.access_token, s.refresh_token = _token(), _token()
        s.access_expires, s.refresh_expires = now + self.oauth_ttl_s, now + self.refresh_ttl_s
        self.by_access[s.access_token] = s
        self.by_refresh[s.refresh_token] = s

    def cst_session(self, cst: str | None, xst: str | None, touch: bool = True) -> RestSession | None:
        """The live session owning this CST/XST pair, or None when unknown, expired or revoked."""
        s = self.by_cst.get(cst or "")
        now = time.monotonic()
        if s is None or s.xst != xst or s.revoked or now - s.last_used > self.token_ttl_s:
            return None
        if touch:
            s.last_used = now
        return s

    def access_session(self, token: str) -> RestSession | None:
        s = self.by_access.get(token)
        now = time.monotonic()
        if s is None or s.revoked or now > s.access_expires:
            return None
        s.last_used = now
        return s

    def refresh(self, refresh_token: str) -> RestSession | None:
        s = self.by_refresh.get(refresh_token)
        now = time.monotonic()
        if s is None or s.revoked or now > s.refresh_expires:
            return None
        self._issue_oauth(s, now)
        s.last_used = now
        return s

    def logout(self, s: RestSession) -> None:
        s.revoked = True
        self.by_cst.pop(s.cst, None)
        for tok, table in ((s.access_token, self.by_access), (s.refresh_token, self.by_refresh)):
            if tok is not None:
                table.pop(tok, None)

    def expire_all(self) -> int:
        """Revoke every token now (IG's weekend invalidation); streams already open keep going."""
        n = 0
        for s in self.by_cst.values():
            if not s.revoked:
                s.revoked = True
                n += 1
        return n

    def live_count(self) -> int:
        now = time.monotonic()
        return sum(1 for s in self.by_cst.values() if not s.revoked and now - s.last_used <= self.token_ttl_s)


def _token() -> str:
    return secrets.token_hex(24)


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


IG_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")


def parse_ig_time(text: str, zone: tzinfo = UTC) -> int:
    """`yyyy-MM-ddTHH:mm:ss` read in `zone` -> epoch ms; ValueError for any other format."""
    if not IG_TIME_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not yyyy-MM-ddTHH:mm:ss")
    dt = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S")
    return int(dt.replace(tzinfo=zone).timestamp() * 1000)


def is_spreadbet(epic: str) -> bool:
    return epic.endswith(".TODAY.IP")


def quote_scale(pair: str, epic: str) -> tuple[int, int]:
    """(scalingFactor, decimalPlacesFactor) of the epic's quotes: a spread bet is quoted in
    points (the rate times 10,000, or 100 for JPY pairs, to one decimal); a CFD quotes the rate."""
    digits = price_digits(pair)
    return (10 ** (digits - 1), 1) if is_spreadbet(epic) else (10 ** (digits - 1), digits)


def scaled(x: float, pair: str, epic: str) -> float:
    """A rate as the epic quotes it (exact in decimal, then the nearest float)."""
    if not is_spreadbet(epic):
        return x
    factor, places = quote_scale(pair, epic)
    return float(round(Decimal(repr(x)) * factor, places))


def utc_text(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def uk_text(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(UK).strftime("%Y/%m/%d %H:%M:%S")


def uk_offset_hours(ms: int) -> int:
    off = datetime.fromtimestamp(ms / 1000, UTC).astimezone(UK).utcoffset()
    return int(off.total_seconds() // 3600) if off else 0


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RestApi:
    """The IG gateway routes; all state lives on the simulator core passed in."""

    def __init__(self, core: SimCore) -> None:
        self.core = core

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/session", self.post_session)
        app.router.add_get("/session", self.get_session)
        app.router.add_delete("/session", self.delete_session)
        app.router.add_post("/session/refresh-token", self.refresh_token)
        app.router.add_get("/markets/{epic}", self.get_market)
        app.router.add_get("/prices/{epic}", self.get_prices)
        app.router.add_get("/operations/application", self.get_applications)

    # --- helpers ----------------------------------------------------------------------------
    def _api_key_error(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("X-IG-API-KEY")
        if not key:
            return error(403, ERR_API_KEY_MISSING)
        if key != self.core.api_key:
            return error(403, ERR_API_KEY_INVALID)
        return None

    def _authenticate(self, request: web.Request) -> RestSession | web.Response:
        """API key, then Bearer + IG-ACCOUNT-ID (v3) or CST + X-SECURITY-TOKEN (v1/v2)."""
        bad = self._api_key_error(request)
        if bad is not None:
            return bad
        auth = self.core.auth
        bearer = request.headers.get("Authorization", "")
        if bearer:
            token = bearer.removeprefix("Bearer ").strip()
            s = auth.access_session(token)
            if s is None or request.headers.get("IG-ACCOUNT-ID") != s.account_id:
                return error(401, ERR_OAUTH_TOKEN_INVALID)
            return s
        cst, xst = request.headers.get("CST"), request.headers.get("X-SECURITY-TOKEN")
        if not cst or not xst:
            return error(401, ERR_CLIENT_TOKEN_MISSING)
        s = auth.cst_session(cst, xst)
        if s is None:
            return error(401, ERR_CLIENT_TOKEN_INVALID)
        return s

    def _session_body(self, s: RestSession) -> dict[str, Any]:
        core = self.core
        return {
            "clientId": core.client_id,
            "accountId": s.account_id,
            "timezoneOffset": uk_offset_hours(core.clock.now_ms()),
            "locale": "en_GB",
            "currency": "GBP",
            "lightstreamerEndpoint": core.url,
        }

    # --- session ----------------------------------------------------------------------------
    async def post_session(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("_method", "").upper() == "DELETE":
            return await self.delete_session(request)
        bad = self._api_key_error(request)
        if bad is not None:
            return bad
        core = self.core
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            return error(400, "validation.null-not-allowed.request")
        if (
            core.faults.refuse_credentials
            or body.get("identifier") != core.username
            or body.get("password") != core.password
        ):
            return error(401, ERR_INVALID_DETAILS)
        version = request.headers.get("VERSION", "1")
        now_ms = core.clock.now_ms()
        if version == "3":
            s = core.auth.create(core.account_id, "3")
            return json_response(
                {
                    "clientId": core.client_id,
                    "accountId": s.account_id,
                    "timezoneOffset": uk_offset_hours(now_ms),
                    "lightstreamerEndpoint": core.url,
                    "oauthToken": {
                        "access_token": s.access_token,
                        "refresh_token": s.refresh_token,
                        "scope": "profile",
                        "token_type": "Bearer",
                        "expires_in": str(int(core.auth.oauth_ttl_s)),
                    },
                }
            )
        s = core.auth.create(core.account_id, version)
        return json_response(
            {
                "accountType": "CFD",
                "accountInfo": {"balance": 10000.0, "deposit": 0.0, "profitLoss": 0.0, "available": 10000.0},
                "currencyIsoCode": "GBP",
                "currencySymbol": "£",
                "currentAccountId": s.account_id,
                "lightstreamerEndpoint": core.url,
                "accounts": [
                    {
                        "accountId": s.account_id,
                        "accountName": "Simulator CFD",
                        "preferred": True,
                        "accountType": "CFD",
                    }
                ],
                "clientId": core.client_id,
                "timezoneOffset": uk_offset_hours(now_ms),
                "hasActiveDemoAccounts": True,
                "hasActiveLiveAccounts": False,
                "trailingStopsEnabled": False,
                "reroutingEnvironment": None,
                "dealingEnabled": True,
            },
            headers={"CST": s.cst, "X-SECURITY-TOKEN": s.xst},
        )

    async def get_session(self, request: web.Request) -> web.StreamResponse:
        s = self._authenticate(request)
        if isinstance(s, web.Response):
            return s
        headers = {}
        if request.query.get("fetchSessionTokens", "false").lower() == "true":
            headers = {"CST": s.cst, "X-SECURITY-TOKEN": s.xst}
        return json_response(self._session_body(s), headers=headers)

    async def delete_session(self, request: web.Request) -> web.StreamResponse:
        s = self._authenticate(request)
        if isinstance(s, web.Response):
            return s
        self.core.auth.logout(s)
        return web.Response(status=204)

    async def refresh_token(self, request: web.Request) -> web.StreamResponse:
        bad = self._api_key_error(request)
        if bad is not None:
            return bad
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = {}
        s = self.core.auth.refresh(str((body or {}).get("refresh_token", "")))
        if s is None:
            return error(401, ERR_OAUTH_TOKEN_INVALID)
        return json_response(
            {
                "access_token": s.access_token,
                "refresh_token": s.refresh_token,
                "scope": "profile",
                "token_type": "Bearer",
                "expires_in": str(int(self.core.auth.oauth_ttl_s)),
            }
        )

    # --- markets ----------------------------------------------------------------------------
    async def get_market(self, request: web.Request) -> web.StreamResponse:
        s = self._authenticate(request)
        if isinstance(s, web.Response):
            return s
        epic = request.match_info["epic"]
        pair = pair_of_epic(epic)
        if pair is None:
            return error(404, ERR_EPIC_UNAVAILABLE)
        core = self.core
        core.advance()
        day = core.day_stats[core.store.index[pair]] if pair in core.store.index else None
        return json_response(market_details(epic, pair, core.quote(pair), core.clock.now_ms(), day))

    async def get_applications(self, request: web.Request) -> web.StreamResponse:
        s = self._authenticate(request)
        if isinstance(s, web.Response):
            return s
        return json_response(
            [
                {
                    "clientId": self.core.client_id,
                    "name": "ig-simulator",
                    "apiKey": self.core.api_key,
                    "status": "ENABLED",
                    "allowanceApplicationOverall": 60,
                    "allowanceAccountTrading": 100,
                    "allowanceAccountOverall": 30,
                    "allowanceAccountHistoricalData": self.core.allowance.total,
                    "concurrentSubscriptionsLimit": 40,
                    "allowEquities": False,
                    "allowQuoteOrders": False,
                }
            ]
        )

    # --- prices -----------------------------------------------------------------------------
    async def get_prices(self, request: web.Request) -> web.StreamResponse:
        core = self.core
        if core.faults.rest_errors_left > 0:
            core.faults.rest_errors_left -= 1
            return error(core.faults.rest_error_status, ERR_SYSTEM)
        s = self._authenticate(request)
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


def market_details(
    epic: str, pair: str, quote: tuple[float, float], now_ms: int, day: DayStats | None
) -> dict[str, Any]:
    """`GET /markets/{epic}` v3 body in IG's shape (instrument, dealingRules, snapshot); the day's
    change, high and low are mid prices of the UK day, as in the stream's DAY_* fields; a spread
    bet's prices are quoted scaled (`quote_scale`)."""
    base, ccy = pair[:3], pair[3:]
    pip = "0.01" if ccy == "JPY" else "0.0001"
    spreadbet = epic.endswith(".TODAY.IP")
    mini = epic.endswith(".MINI.IP")
    factor, places = quote_scale(pair, epic)
    bid, offer = scaled(quote[0], pair, epic), scaled(quote[1], pair, epic)
    live_day = day is not None and day.day_ms >= 0
    mult = factor if spreadbet else 1
    change = round((day.last_mid - day.open_mid) * mult, places + 1) if live_day else 0.0
    pct = round(100 * (day.last_mid - day.open_mid) / day.open_mid, 3) if live_day else 0.0

    def dist(unit: str, value: float) -> dict[str, Any]:
        return {"unit": unit, "value": value}

    return {
        "instrument": {
            "epic": epic,
            "expiry": "DFB" if spreadbet else "-",
            "name": f"{base}/{ccy}" + (" Mini" if mini else ""),
            "forceOpenAllowed": True,
            "stopsLimitsAllowed": True,
            "lotSize": 1.0,
            "unit": "AMOUNT" if spreadbet else "CONTRACTS",
            "type": "CURRENCIES",
            "controlledRiskAllowed": True,
            "streamingPricesAvailable": True,
            "marketId": pair,
            "currencies": [
                {"code": ccy, "symbol": ccy, "baseExchangeRate": 1.0, "exchangeRate": 1.0, "isDefault": True}
            ],
            "marginDepositBands": [{"min": 0, "max": None, "margin": 3.33, "currency": ccy}],
            "marginFactor": 3.33,
            "marginFactorUnit": "PERCENTAGE",
            "openingHours": None,
            "expiryDetails": None,
            "rolloverDetails": None,
            "newsCode": f"{base}=",
            "chartCode": pair,
            "country": None,
            "valueOfOnePip": "1.00" if spreadbet else ("1.00" if mini else "10.00"),
            "onePipMeans": f"{pip} {ccy}/{base}",
            "contractSize": "1" if spreadbet else ("10000" if mini else "100000"),
            "specialInfo": ["DEFAULT KNOCK OUT LEVEL DISTANCE"],
        },
        "dealingRules": {
            "minStepDistance": dist("POINTS", 1.0),
            "minDealSize": dist("POINTS", 0.5 if spreadbet else 1.0),
            "minControlledRiskStopDistance": dist("POINTS", 10.0),
            "minNormalStopOrLimitDistance": dist("POINTS", 2.0),
            "maxStopOrLimitDistance": dist("PERCENTAGE", 75.0),
            "controlledRiskSpacing": dist("POINTS", 10.0),
            "marketOrderPreference": "AVAILABLE_DEFAULT_OFF",
            "trailingStopsPreference": "AVAILABLE",
        },
        "snapshot": {
            "marketStatus": "TRADEABLE",
            "netChange": change,
            "percentageChange": pct,
            "updateTime": datetime.fromtimestamp(now_ms / 1000, UTC).astimezone(UK).strftime("%H:%M:%S"),
            "updateTimeUTC": datetime.fromtimestamp(now_ms / 1000, UTC).strftime("%H:%M:%S"),
            "delayTime": 0,
            "bid": bid,
            "offer": offer,
            "high": round(day.high * mult, places + 1) if live_day else offer,
            "low": round(day.low * mult, places + 1) if live_day else bid,
            "binaryOdds": None,
            "decimalPlacesFactor": places,
            "scalingFactor": factor,
            "controlledRiskExtraSpread": 1,
        },
    }
