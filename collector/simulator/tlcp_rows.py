"""The field rows the simulator streams: TICK, candle (SECOND ... HOUR) and PRICE items, each a
dict of IG field name -> TLCP value text, and the spread-bet quoting of their prices.

A subscription picks its fields from a row in its own schema order, so a row carries every field
an item has and the client's schema decides what is sent.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from .market import DayStats, StreamCandle, format_price
from .quotes import quote_scale

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
