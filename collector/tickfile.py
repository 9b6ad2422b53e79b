"""The tick file format shared by `replay`, the simulator's `/_sim/ticks.csv` and the tests.

CSV with header `time,pair,bid,ask`; `time` is epoch milliseconds UTC, `pair` six letters.
Prices are written with `repr` so a float read back is bit-identical to the one written.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from .models import Tick

HEADER = ("time", "pair", "bid", "ask")


def format_row(t: Tick) -> str:
    return f"{t.time_ms},{t.pair},{t.bid!r},{t.ask!r}\n"


def write(ticks: Iterable[Tick], out: TextIO) -> None:
    out.write(",".join(HEADER) + "\n")
    for t in ticks:
        out.write(format_row(t))


def dumps(ticks: Iterable[Tick]) -> str:
    buf = io.StringIO()
    write(ticks, buf)
    return buf.getvalue()


class TickFileError(ValueError):
    """A tick file whose header is wrong; row-level problems are left to validation."""


def read_rows(src: TextIO) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, raw fields) after checking the header; values are not parsed here so
    that replay can send bad rows through the same validation (and counters) as the live path."""
    reader = csv.reader(src)
    header = next(reader, None)
    if header is None or tuple(h.strip().lower() for h in header) != HEADER:
        raise TickFileError(f"tick file header must be {','.join(HEADER)!r}, got {header!r}")
    for lineno, row in enumerate(reader, start=2):
        if row:
            yield lineno, row


def parse(src: TextIO) -> list[Tick]:
    """Strict parse for trusted files (ground truth from the simulator)."""
    return [Tick(row[1], int(row[0]), float(row[2]), float(row[3])) for _, row in read_rows(src)]


def loads(text: str) -> list[Tick]:
    return parse(io.StringIO(text))


def load(path: str | Path) -> list[Tick]:
    with open(path, newline="") as f:
        return parse(f)
