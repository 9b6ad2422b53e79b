"""IG's epics and how they quote: which epic names which pair, and the spread-bet scaling that
REST prices, the market snapshot and the stream all apply alike (so they cannot disagree)."""

from __future__ import annotations

from decimal import Decimal

from collector.pairs import PAIRS

from .market import price_digits

EPIC_SUFFIXES = (".CFD.IP", ".MINI.IP", ".TODAY.IP")


def pair_of_epic(epic: str) -> str | None:
    """`CS.D.EURUSD.CFD.IP` (or .MINI.IP / .TODAY.IP) -> `EURUSD`; None for anything else."""
    for suffix in EPIC_SUFFIXES:
        if epic.startswith("CS.D.") and epic.endswith(suffix):
            pair = epic[len("CS.D.") : -len(suffix)]
            if pair in PAIRS:
                return pair
    return None


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
