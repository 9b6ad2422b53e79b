"""HistData.com "Generic ASCII" 1-minute bars: `20240115 090000;1.095000;1.096000;1.094000;1.095500;0`.

Documented at histdata.com/f-a-q/data-files-detailed-specification/ (see
tests/fixtures/history/README.md): semicolon separated, no header, bar start in EST *without*
daylight saving (fixed UTC-05:00) all year, mid prices, the last field a volume that is always 0.
Files are named like `DAT_ASCII_EURUSD_M1_2024.csv`, which gives the pair; `--time-zone`
overrides the fixed EST only for files re-stamped by another tool.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

from . import model as m
from .metatrader import series_of

EST_FIXED = dt.timezone(dt.timedelta(hours=-5), "EST")
LINE = re.compile(r"^\d{8} \d{6};")


def read(path: Path, rows: Iterator[tuple[int, list[str]]], opts: m.Options, p: m.Parsed) -> None:
    series = series_of(path, opts, p, default_tf="1m")
    if series is None:
        return
    pair, tf = series
    zone = opts.zone or EST_FIXED
    p.notes.append(f"{path.name}: HistData ASCII bars, {pair} {tf}, times read in {zone}; mid prices (spread unknown)")
    for line, f in rows:
        if not f:
            continue
        if len(f) < 5:
            p.reject(line, m.BAD_ROW, f"{len(f)} fields, expected 'YYYYMMDD HHMMSS;O;H;L;C;V'")
            continue
        try:
            local = dt.datetime.strptime(f[0].strip(), "%Y%m%d %H%M%S")
        except ValueError:
            p.reject(line, m.BAD_TIME, f[0])
            continue
        m.add_mid_bar(p, line, pair, tf, m.local_to_ms(local, zone), f[1:6])
