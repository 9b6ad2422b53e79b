"""IG's REST sessions: logins (v1/v2 CST + X-SECURITY-TOKEN, v3 OAuth), token lifetimes, logout
and refresh, and the authentication every other route performs first."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .rest_http import (
    ERR_API_KEY_INVALID,
    ERR_API_KEY_MISSING,
    ERR_CLIENT_TOKEN_INVALID,
    ERR_CLIENT_TOKEN_MISSING,
    ERR_INVALID_DETAILS,
    ERR_OAUTH_TOKEN_INVALID,
    error,
    json_response,
)
from .rest_time import uk_offset_hours

if TYPE_CHECKING:
    from .server import SimCore


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


class RestAuth:
    """The checks in front of every authenticated route: API key, then the session's tokens."""

    def __init__(self, core: SimCore) -> None:
        self.core = core

    def api_key_error(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("X-IG-API-KEY")
        if not key:
            return error(403, ERR_API_KEY_MISSING)
        if key != self.core.api_key:
            return error(403, ERR_API_KEY_INVALID)
        return None

    def authenticate(self, request: web.Request) -> RestSession | web.Response:
        """API key, then Bearer + IG-ACCOUNT-ID (v3) or CST + X-SECURITY-TOKEN (v1/v2)."""
        bad = self.api_key_error(request)
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


class SessionRoutes:
    """`/session` (login, read, logout) and `/session/refresh-token`."""

    def __init__(self, core: SimCore, auth: RestAuth) -> None:
        self.core = core
        self.auth = auth

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/session", self.post_session)
        app.router.add_get("/session", self.get_session)
        app.router.add_delete("/session", self.delete_session)
        app.router.add_post("/session/refresh-token", self.refresh_token)

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

    async def post_session(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("_method", "").upper() == "DELETE":
            return await self.delete_session(request)
        bad = self.auth.api_key_error(request)
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
        s = self.auth.authenticate(request)
        if isinstance(s, web.Response):
            return s
        headers = {}
        if request.query.get("fetchSessionTokens", "false").lower() == "true":
            headers = {"CST": s.cst, "X-SECURITY-TOKEN": s.xst}
        return json_response(self._session_body(s), headers=headers)

    async def delete_session(self, request: web.Request) -> web.StreamResponse:
        s = self.auth.authenticate(request)
        if isinstance(s, web.Response):
            return s
        self.core.auth.logout(s)
        return web.Response(status=204)

    async def refresh_token(self, request: web.Request) -> web.StreamResponse:
        bad = self.auth.api_key_error(request)
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
