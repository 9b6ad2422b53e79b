"""`GET /markets/{epic}` (instrument, dealing rules, snapshot) and `GET /operations/application`
(the API key's allowances): what the collector reads about markets and the account."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .market import DayStats
from .quotes import pair_of_epic, quote_scale, scaled
from .rest_auth import RestAuth
from .rest_http import ERR_EPIC_UNAVAILABLE, error, json_response
from .rest_time import UK

if TYPE_CHECKING:
    from .server import SimCore


class MarketRoutes:
    """`/markets/{epic}` and `/operations/application`."""

    def __init__(self, core: SimCore, auth: RestAuth) -> None:
        self.core = core
        self.auth = auth

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/markets/{epic}", self.get_market)
        app.router.add_get("/operations/application", self.get_applications)

    async def get_market(self, request: web.Request) -> web.StreamResponse:
        s = self.auth.authenticate(request)
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
        s = self.auth.authenticate(request)
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
