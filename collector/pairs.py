"""The 28 FX pairs of EUR, USD, GBP, JPY, CHF, AUD, NZD and CAD, and how IG names them.

Kept as plain data so the simulator, the collector, the migrations' seed and the tests agree
on one list.
"""

from __future__ import annotations

CURRENCIES = ("EUR", "USD", "GBP", "JPY", "CHF", "AUD", "NZD", "CAD")

# Market convention order (base/quote) as IG quotes them.
PAIRS: tuple[str, ...] = (
    "EURUSD", "GBPUSD", "USDJPY", "USDCHF", "AUDUSD", "NZDUSD", "USDCAD",
    "EURGBP", "EURJPY", "EURCHF", "EURAUD", "EURNZD", "EURCAD",
    "GBPJPY", "GBPCHF", "GBPAUD", "GBPNZD", "GBPCAD",
    "AUDJPY", "NZDJPY", "CADJPY", "CHFJPY",
    "AUDCHF", "NZDCHF", "CADCHF", "AUDNZD", "AUDCAD", "NZDCAD",
)  # fmt: skip

# IG epic suffix by account product: CFD standard, CFD mini, spread bet (daily funded bet).
EPIC_SUFFIXES = {"CFD": ".CFD.IP", "MINI": ".MINI.IP", "SPREADBET": ".TODAY.IP"}
DEFAULT_EPIC_SUFFIX = EPIC_SUFFIXES["CFD"]


def pip_size(pair: str) -> float:
    """JPY-quoted pairs move in 0.01, all others in 0.0001."""
    return 0.01 if pair.endswith("JPY") else 0.0001


def epic_for(pair: str, suffix: str = DEFAULT_EPIC_SUFFIX) -> str:
    return f"CS.D.{pair}{suffix}"


def pair_from_epic(epic: str) -> str:
    """`CS.D.EURUSD.CFD.IP` -> `EURUSD`; raises ValueError for anything else."""
    parts = epic.split(".")
    if len(parts) < 3 or parts[0] != "CS" or parts[1] != "D" or parts[2] not in PAIRS:
        raise ValueError(f"not an FX epic of the 28 pairs: {epic!r}")
    return parts[2]


def validate_pair(pair: str) -> str:
    p = pair.strip().upper()
    if p not in PAIRS:
        raise ValueError(f"unknown pair {pair!r}; expected one of the 28: {', '.join(PAIRS)}")
    return p
