"""IG's REST answers as the gateway shapes them: JSON bodies and the `errorCode`s it returns."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

JSON_CT = "application/json; charset=UTF-8"

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
