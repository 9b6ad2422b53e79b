"""MetaTrader 4/5 bar exports: mid OHLC with a tick volume, in the broker's server time.

Formats (documented in MetaTrader's help, "History Center" for MT4 and "Export bars" in the
Symbols window for MT5; see tests/fixtures/history/README.md):
* MT4 History Center: `2024.01.15,09:00,1.09500,1.09600,1.09400,1.09550,123`, no header,
  file named like `EURUSD15.csv` (pair then minutes);
* MT5: a header `<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>`,
  tab separated, file named like `EURUSD_M15_202401150000_202401152345.csv`;
* generic `Date,Time,Open,High,Low,Close,Volume` with a header.
Dates as `2024.01.15`, `2024-01-15`, `2024/01/15`, `15.01.2024` or `20240115`; times `09:00`
or `09:00:00`. The file carries no zone (brokers' servers commonly run at UTC+2/+3 with DST),
so `--time-zone` is required. Volume is the tick count (MT5: TICKVOL).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

from ..pairs import PAIRS
from . import model as m

_DATE_STYLES = (
    (re.compile(r"^\d{4}\.\d{2}\.\d{2}$"), "%Y.%m.%d"),
    (re.compile(r"^\d{4}-\d{2}-\d{2}$"), "%Y-%m-%d"),
    (re.compile(r"^\d{4}/\d{2}/\d{2}$"), "%Y/%m/%d"),
    (re.compile(r"^\d{2}\.\d{2}\.\d{4}$"), "%d.%m.%Y"),
    (re.compile(r"^\d{8}$"), "%Y%m%d"),
)


def parse_local(date: str, time: str) -> dt.datetime:
    """Naive date and time in one of the date styles above; ValueError otherwise."""
    d = date.strip()
    fmt = next((f for rx, f in _DATE_STYLES if rx.match(d)), None)
    if fmt is None:
        raise ValueError(date)
    t = time.strip()
    tfmt = "%H:%M:%S" if t.count(":") == 2 else "%H:%M"
    return dt.datetime.strptime(f"{d} {t}", f"{fmt} {tfmt}")


def from_file_name(path: Path) -> tuple[str | None, str | None]:
    """Pair and timeframe as MetaTrader names its exports: `EURUSD15.csv`, `EURUSD_M15_....csv`."""
    name = path.name.upper()
    for pair in PAIRS:
        i = name.find(pair)
        if i < 0:
            continue
        rest = name[i + 6 :]
        tf = re.match(r"^[_\-. ]?(?:M(\d+)|(\d+))(?=\D|$)", rest)
        return pair, (m.normalize_timeframe(f"M{tf.group(1) or tf.group(2)}") if tf else None)
    return None, None


def series_of(path: Path, opts: m.Options, p: m.Parsed, default_tf: str | None = None) -> tuple[str, str] | None:
    """Pair and timeframe from the command line, else from the file name; a file-level
    rejection saying which is missing otherwise."""
    name_pair, name_tf = from_file_name(path)
    pair, tf = opts.pair or name_pair, opts.timeframe or name_tf or default_tf
    if pair is None:
        p.reject(0, m.UNKNOWN_PAIR, "the file does not name its pair: give --pair")
        return None
    if tf is None:
        p.reject(0, m.BAD_TIMEFRAME, "the file does not name its timeframe: give --timeframe")
        return None
    return pair, tf


def read(path: Path, rows: Iterator[tuple[int, list[str]]], opts: m.Options, p: m.Parsed) -> None:
    """`rows`: (line, fields) of every line, the header included if there is one."""
    series = series_of(path, opts, p)
    if opts.zone is None:
        p.reject(0, m.NO_ZONE, "MetaTrader exports are in the broker's server time")
    if series is None or opts.zone is None:
        return
    pair, tf = series
    p.notes.append(f"{path.name}: MetaTrader bars, {pair} {tf}, times read in {opts.zone}; mid prices (spread unknown)")
    for line, f in rows:
        if not f or (line == 1 and not re.match(r"^\d", f[0].strip())):
            continue  # blank, or the header
        if len(f) < 6:
            p.reject(line, m.BAD_ROW, f"{len(f)} fields, expected date, time, open, high, low, close[, volume]")
            continue
        try:
            local = parse_local(f[0], f[1])
        except ValueError:
            p.reject(line, m.BAD_TIME, f"{f[0]} {f[1]}")
            continue
        m.add_mid_bar(p, line, pair, tf, m.local_to_ms(local, opts.zone), f[2:7])
