"""IG REST, used only as a fallback and always within one shared points budget.

Login goes through trading-ig's `IGService` (v2 by default, v3 supported), and prices are read
from `GET /prices/{epic}` v3 through that service's own authenticated session. We call the
endpoint directly rather than `fetch_historical_prices_by_epic`, which drops the resolution
without pandas and indexes rows by UK local time (docs/design.md §5).

The budget lives in the database (`rest_allowance`, `rest_spend`), shared by the collector's
gap backfill and the bot's freshness fallback: every response's allowance is stored, every
spend recorded, and a 403 "allowance exceeded" stops all REST history use until IG's expiry.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from . import logs
from . import timeframes as tfs
from .config import Settings
from .ig_convention import PriceScale, RestTimeConvention, Window, price_scale
from .market_hours import market_buckets
from .models import Candle
from .pairs import pair_from_epic
from .vocabulary import CandleSource, dt_to_ms, ms_to_dt

log = logging.getLogger(__name__)

ALLOWANCE_EXCEEDED = "error.public-api.exceeded-account-historical-data-allowance"
ASSUMED_WEEKLY_ALLOWANCE = 10_000
WEEK_S = 7 * 24 * 3600


class RestError(RuntimeError):
    """A REST call failed; the message says what to do next."""


class AllowanceExhausted(RestError):
    """IG refused: the weekly historical-data allowance is spent until `expires_at`."""

    def __init__(self, expires_at: dt.datetime) -> None:
        super().__init__(
            f"IG historical-data allowance exhausted until {expires_at:%Y-%m-%d %H:%M} UTC; "
            "REST backfill resumes after that"
        )
        self.expires_at = expires_at


class BudgetExceeded(RestError):
    """Our own budget (allowance minus the reserve) cannot cover the request."""


class UnsupportedTimeframe(RestError):
    """IG REST has no resolution for this timeframe: its buckets cannot be fetched at all."""


class LoginFailed(RestError):
    """Credentials or API key refused; retrying will not help until they are fixed."""


class EpicUnavailable(RestError):
    """IG does not offer this epic to the account (a wrong IG_EPIC_SUFFIX for the account
    type): a configuration error no retry fixes."""


# IG's errorCode namespace for refused credentials, API keys and locked accounts
# (error.security.invalid-details, error.security.api-key-invalid, ...): a refusal, never
# a fault that the next login attempt can fix. Rate limits and outages answer with other codes.
SECURITY_ERROR_PREFIX = "error.security."


def _login_refusal(answer: Any) -> str | None:
    """IG's errorCode when its answer to POST /session refused the login, else None."""
    if answer is None or not 400 <= answer.status_code < 500:
        return None
    try:
        code = json.loads(answer.text or "{}").get("errorCode")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, str) and code.startswith(SECURITY_ERROR_PREFIX) else None


@dataclass(frozen=True)
class IGSession:
    cst: str
    xst: str
    account_id: str
    lightstreamer_endpoint: str

    @property
    def stream_password(self) -> str:
        return f"CST-{self.cst}|XST-{self.xst}"


@dataclass(frozen=True)
class Allowance:
    remaining: int
    total: int
    expires_at: dt.datetime
    exhausted: bool


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class RestBudget:
    """The REST points budget shared through the database by every spender."""

    def __init__(self, db_url: str, spender: str, reserve_points: int = 0, now: Callable[[], dt.datetime] = _utcnow):
        self.db_url, self.spender, self.reserve_points, self._now = db_url, spender, reserve_points, now

    def _conn(self) -> psycopg.Connection:
        return psycopg.connect(self.db_url, autocommit=True, application_name=f"{self.spender} rest-budget")

    def state(self) -> Allowance | None:
        with self._conn() as conn:
            row = conn.execute("SELECT remaining, total, expires_at, exhausted FROM rest_allowance").fetchone()
        return Allowance(*row) if row else None

    def available(self) -> int:
        """Points this spender may use now (IG's remaining minus the reserve kept for others)."""
        st = self.state()
        now = self._now()
        if st is None or st.expires_at <= now:
            # Never asked IG, or the period rolled over: IG resets to the full weekly allowance.
            total = st.total if st else ASSUMED_WEEKLY_ALLOWANCE
            return max(0, total - self.reserve_points)
        if st.exhausted:
            return 0
        return max(0, st.remaining - self.reserve_points)

    def check(self, points: int) -> None:
        st = self.state()
        if st and st.exhausted and st.expires_at > self._now():
            raise AllowanceExhausted(st.expires_at)
        have = self.available()
        if points > have:
            raise BudgetExceeded(
                f"{self.spender} needs {points} REST points but the budget allows {have} "
                f"(IG remaining minus a reserve of {self.reserve_points}); "
                "wait for the weekly reset or lower COLLECTOR_REST_RESERVE_POINTS"
            )

    def record(self, allowance: dict[str, Any] | None, *, points: int, pair: str, resolution: str,
               range_from: dt.datetime, range_to: dt.datetime, purpose: str) -> None:  # fmt: skip
        with self._conn() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO rest_spend (spender, pair, resolution, range_from, range_to, points, purpose) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (self.spender, pair, resolution, range_from, range_to, points, purpose),
            )
            if allowance:
                self._store_allowance(conn, allowance, exhausted=False)

    def mark_exhausted(self, allowance: dict[str, Any] | None) -> dt.datetime:
        with self._conn() as conn:
            if allowance:
                self._store_allowance(conn, allowance, exhausted=True)
            else:
                # IG's 403 carries no expiry: keep the last known one, or assume a week.
                conn.execute(
                    "INSERT INTO rest_allowance (remaining, total, expires_at, exhausted, updated_by) "
                    "VALUES (0, %s, %s, true, %s) ON CONFLICT (id) DO UPDATE SET remaining = 0, "
                    "exhausted = true, updated_at = now(), updated_by = EXCLUDED.updated_by, "
                    "expires_at = CASE WHEN rest_allowance.expires_at > %s "
                    "THEN rest_allowance.expires_at ELSE EXCLUDED.expires_at END",
                    (ASSUMED_WEEKLY_ALLOWANCE, self._now() + dt.timedelta(seconds=WEEK_S), self.spender, self._now()),
                )
            return conn.execute("SELECT expires_at FROM rest_allowance").fetchone()[0]

    def _store_allowance(self, conn: psycopg.Connection, a: dict[str, Any], *, exhausted: bool) -> None:
        expires = self._now() + dt.timedelta(seconds=int(a.get("allowanceExpiry", WEEK_S)))
        conn.execute(
            "INSERT INTO rest_allowance (remaining, total, expires_at, exhausted, updated_by) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET remaining = EXCLUDED.remaining, "
            "total = EXCLUDED.total, expires_at = EXCLUDED.expires_at, exhausted = EXCLUDED.exhausted, "
            "updated_at = now(), updated_by = EXCLUDED.updated_by",
            (int(a["remainingAllowance"]), int(a["totalAllowance"]), expires, exhausted, self.spender),
        )


def _parse_utc(s: str) -> int:
    return dt_to_ms(dt.datetime.fromisoformat(s).replace(tzinfo=dt.UTC))


def _bucket_of(p: Any) -> int | None:
    try:
        return _parse_utc(p["snapshotTimeUTC"])
    except (KeyError, TypeError, ValueError):
        return None


def parse_prices(
    pair: str, timeframe: str, prices: list[Any], scale: PriceScale | None = None
) -> tuple[list[Candle], dict[int, str]]:
    """The candles of a `/prices` answer, and the buckets whose entry is unusable (a null price,
    a missing field) with the reason: those are skipped and reported, never retried (IG would
    charge again for the same answer)."""
    candles: list[Candle] = []
    invalid: dict[int, str] = {}
    for p in prices:
        try:
            candles.append(candle_from_ig(pair, timeframe, p, scale))
        except (KeyError, TypeError, ValueError) as e:
            bucket = _bucket_of(p)
            log.warning("IG sent an unusable candle; skipped", extra={"pair": pair, "timeframe": timeframe,
                        "snapshotTimeUTC": p.get("snapshotTimeUTC") if isinstance(p, dict) else None,
                        "error": str(e)})  # fmt: skip
            if bucket is not None:
                invalid[bucket] = f"IG's REST candle is unusable: {e}"
    return candles, invalid


def candle_from_ig(pair: str, timeframe: str, p: dict[str, Any], scale: PriceScale | None = None) -> Candle:
    """One `prices[]` entry of `/prices` v3 as a REST candle keyed by its UTC bucket start, its
    prices as FX rates (a spread bet's points divided by the market's `scale`)."""

    def px(field: str, side: str) -> float:
        v = p[field][side]
        if v is None:
            raise ValueError(f"{pair} {p.get('snapshotTimeUTC')}: {field}.{side} is null")
        return scale.rate(v) if scale is not None and scale.scaled else float(v)

    return Candle(
        pair=pair, timeframe=timeframe, bucket_ms=_parse_utc(p["snapshotTimeUTC"]),
        bid_open=px("openPrice", "bid"), bid_high=px("highPrice", "bid"),
        bid_low=px("lowPrice", "bid"), bid_close=px("closePrice", "bid"),
        ask_open=px("openPrice", "ask"), ask_high=px("highPrice", "ask"),
        ask_low=px("lowPrice", "ask"), ask_close=px("closePrice", "ask"),
        ticks=int(p.get("lastTradedVolume") or 0), complete=True, source=CandleSource.REST,
    )  # fmt: skip


class RestClient:
    """Login, epic checks and budgeted candle fetches. One instance per thread (requests session)."""

    def __init__(
        self,
        settings: Settings,
        spender: str,
        db_url: str | None = None,
        reserve_points: int | None = None,
        now_ms: Callable[[], int] | None = None,
        *,
        budget_on_clock: bool = False,
    ) -> None:
        """`now_ms` is the market clock (which candles have closed); with `budget_on_clock` the
        budget keeps time on it too - the daemon's choice, so that IG's allowance expiry is read
        on the simulator's fast clock in tests - instead of the wall clock."""
        settings.require("ig_username", "ig_password", "ig_api_key")
        self.settings = settings
        self.spender = spender
        self._now_ms = now_ms or (lambda: int(time.time() * 1000))
        url = db_url or settings.database_url
        reserve = settings.rest_reserve_points if reserve_points is None else reserve_points
        now = self._now_dt if budget_on_clock else _utcnow
        self.budget = RestBudget(url, spender, reserve, now=now) if url else None
        self._svc: Any = None
        # Learned from IG's answers, never configured: see collector/ig_convention.py.
        self.convention = RestTimeConvention()
        self.scales: dict[str, PriceScale] = {}  # pair -> how its quotes are scaled
        # Buckets of the last fetch that IG answered (and charged) with an unusable candle.
        self.invalid_buckets: dict[int, str] = {}
        for secret in (settings.ig_password, settings.ig_api_key):
            if secret is not None:
                logs.register_secret(secret.get_secret_value())
        # trading-ig logs "Creating new v2 session for user '...'" at INFO on every login: the
        # username is half of the credential.
        logs.register_secret(settings.ig_username)

    def _now_dt(self) -> dt.datetime:
        return ms_to_dt(self._now_ms())

    # --- session ------------------------------------------------------------------------------
    def login(self) -> IGSession:
        from trading_ig import IGService

        s = self.settings
        svc = IGService(
            s.ig_username, s.ig_password.get_secret_value(), s.ig_api_key.get_secret_value(),
            acc_type=s.ig_acc_type, acc_number=s.ig_account_id, return_dataframe=False, return_munch=False,
        )  # fmt: skip
        svc.BASE_URL = svc.crud_session.BASE_URL = s.rest_url
        # trading-ig raises a bare Exception (or IGException) whatever IG answered: keep the
        # answer to POST /session itself, whose status and errorCode say whether it refused.
        answers: list[Any] = []

        def keep_session_answer(r: Any, *args: Any, **kwargs: Any) -> None:
            if r.request.method == "POST" and r.request.path_url.rstrip("/").endswith("/session"):
                answers.append(r)

        svc.session.hooks["response"].append(keep_session_answer)
        try:
            body = svc.create_session(version=s.ig_api_version)
            if s.ig_api_version == "3":
                svc.read_session(fetch_session_tokens="true")
        except Exception as e:
            code = _login_refusal(answers[-1] if answers else None)
            if code is not None:
                raise LoginFailed(
                    f"IG refused the login ({code}); check IG_USERNAME, IG_PASSWORD, IG_API_KEY"
                ) from None
            raise RestError(f"IG login failed: {e}; will retry") from None
        finally:
            svc.session.hooks["response"].remove(keep_session_answer)
        cst, xst = svc.session.headers.get("CST"), svc.session.headers.get("X-SECURITY-TOKEN")
        if not cst or not xst:
            raise RestError("IG login returned no CST/X-SECURITY-TOKEN; the stream cannot authenticate")
        for slot, token in (("cst", cst), ("xst", xst)):
            logs.register_secret(token, slot=slot)
        self._svc = svc
        account = body.get("currentAccountId") or body.get("accountId") or s.ig_account_id or ""
        return IGSession(cst=cst, xst=xst, account_id=account, lightstreamer_endpoint=body["lightstreamerEndpoint"])

    def _service(self) -> Any:
        if self._svc is None:
            self.login()
        return self._svc

    def _get(self, endpoint: str, params: dict[str, Any], version: str) -> tuple[int, dict[str, Any]]:
        from trading_ig.rest import IGException, TokenInvalidException

        for attempt in (1, 2):
            svc = self._service()
            try:
                r = svc._req("read", endpoint, params, None, version=version)
            except TokenInvalidException:
                if attempt == 2:
                    raise RestError("IG rejected fresh session tokens twice; check the account") from None
                log.info("IG session token expired; logging in again")
                self._svc = None
                continue
            except IGException as e:
                raise RestError(f"IG REST unavailable: {e}; will retry later") from None
            try:
                return r.status_code, json.loads(r.text or "{}")
            except ValueError:
                raise RestError(f"IG REST returned non-JSON (HTTP {r.status_code}); will retry later") from None
        raise AssertionError("unreachable")

    def keepalive(self) -> None:
        """Any authenticated call extends IG's 12 h sliding token window."""
        self._service().read_session()

    def check_epic(self, epic: str) -> dict[str, Any]:
        status, body = self._get(f"/markets/{epic}", {}, version="3")
        if status != 200:
            raise EpicUnavailable(
                f"epic {epic} is not available to this account ({body.get('errorCode', status)}); "
                "check IG_EPIC_SUFFIX (.CFD.IP, .MINI.IP or .TODAY.IP) for your account type"
            )
        pair = pair_from_epic(epic)
        try:
            self.scales[pair] = price_scale(pair, body)
        except ValueError as e:
            raise RestError(str(e)) from None
        return body

    def scale(self, pair: str) -> PriceScale:
        """How IG scales this pair's quotes (asks `/markets` once: no allowance points)."""
        if pair not in self.scales:
            self.check_epic(self.settings.epic(pair))
        return self.scales[pair]

    # --- prices -------------------------------------------------------------------------------
    def estimate_points(self, timeframe: str, start_ms: int, end_ms: int) -> int:
        """Upper bound of candles IG will return: buckets in trading hours in [start, end]."""
        return sum(1 for _ in market_buckets(start_ms, end_ms + 1, tfs.length_ms(timeframe)))

    def fetch_candles(self, pair: str, timeframe: str, start_ms: int, end_ms: int, purpose: str) -> list[Candle]:
        """Closed candles with bucket start in [start_ms, end_ms], within the budget."""
        self.invalid_buckets = {}
        resolution = tfs.IG_RESOLUTIONS.get(timeframe)
        if resolution is None:
            raise UnsupportedTimeframe(
                f"IG REST has no resolution for timeframe {timeframe} (it serves {', '.join(tfs.IG_RESOLUTIONS)})"
            )
        tf_ms = tfs.length_ms(timeframe)
        start_ms -= start_ms % tf_ms
        end_ms = min(end_ms - end_ms % tf_ms, self._now_ms() - tf_ms)  # only closed buckets
        if end_ms < start_ms:
            return []
        points = self.estimate_points(timeframe, start_ms, end_ms)
        if points == 0:
            return []
        if self.budget:
            self.budget.check(points)
        epic, scale = self.settings.epic(pair), self.scale(pair)
        got: dict[int, Candle] = {}
        for window in self.convention.windows(start_ms, end_ms, tf_ms, self._now_ms()):
            # The spend is recorded inside, before any answer is parsed: paid points are never lost.
            prices = self._fetch_window(pair, epic, resolution, window, start_ms, end_ms, purpose)
            self.convention.learn(window, prices)
            candles, invalid = parse_prices(pair, timeframe, prices, scale)
            self.invalid_buckets.update(invalid)
            got.update((c.bucket_ms, c) for c in candles)
        return [got[b] for b in sorted(got) if start_ms <= b <= end_ms]

    def _fetch_window(self, pair: str, epic: str, resolution: str, window: Window, start_ms: int, end_ms: int,
                      purpose: str) -> list[dict[str, Any]]:  # fmt: skip
        """One `/prices` request; every returned price is recorded as spent."""
        params = {"resolution": resolution, "from": window.from_text, "to": window.to_text, "pageSize": 0}
        status, body = self._get(f"/prices/{epic}", params, version="3")
        allowance = (body.get("metadata") or {}).get("allowance")
        if status == 403 and body.get("errorCode") == ALLOWANCE_EXCEEDED:
            expires = self.budget.mark_exhausted(allowance) if self.budget else _utcnow()
            log.error("IG historical-data allowance exhausted; REST use stops", extra={"until": str(expires)})
            raise AllowanceExhausted(expires)
        if status != 200:
            raise RestError(f"IG /prices for {epic} failed: HTTP {status} {body.get('errorCode', '')}; will retry")
        prices = body.get("prices") or []
        if self.budget:
            self.budget.record(
                allowance, points=len(prices), pair=pair, resolution=resolution,
                range_from=ms_to_dt(start_ms),
                range_to=ms_to_dt(end_ms), purpose=purpose,
            )  # fmt: skip
        return prices

    def logout(self) -> None:
        if self._svc is not None:
            try:
                self._svc.logout()
            except Exception:  # best effort at shutdown
                log.debug("logout failed", exc_info=True)
            self._svc = None
