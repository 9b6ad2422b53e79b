"""IG REST gateway routes of the simulator: session (v1/v2/v3), markets, prices v3, applications.

Shaped after IG's gateway as `trading-ig` 0.0.25 reads it (docs/design.md §5):
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

from typing import TYPE_CHECKING

from aiohttp import web

from .quotes import EPIC_SUFFIXES, is_spreadbet, pair_of_epic, quote_scale, scaled
from .rest_auth import AuthRegistry, RestAuth, RestSession, SessionRoutes
from .rest_http import JSON_CT, error, json_response
from .rest_markets import MarketRoutes, market_details
from .rest_prices import WEEK_MS, Allowance, PriceRoutes
from .rest_time import parse_ig_time, uk_text, utc_text

if TYPE_CHECKING:
    from .server import SimCore

__all__ = [
    "EPIC_SUFFIXES", "JSON_CT", "WEEK_MS", "Allowance", "AuthRegistry", "RestApi", "RestSession", "error",
    "is_spreadbet", "json_response", "market_details", "pair_of_epic", "parse_ig_time", "quote_scale", "scaled",
    "uk_text", "utc_text",
]  # fmt: skip


class RestApi:
    """The IG gateway routes, by job: sessions (`rest_auth`), markets and the account
    (`rest_markets`), prices (`rest_prices`); all state lives on the simulator core passed in."""

    def __init__(self, core: SimCore) -> None:
        self.core = core
        auth = RestAuth(core)
        self.groups = (SessionRoutes(core, auth), MarketRoutes(core, auth), PriceRoutes(core, auth))

    def add_routes(self, app: web.Application) -> None:
        for group in self.groups:
            group.add_routes(app)
