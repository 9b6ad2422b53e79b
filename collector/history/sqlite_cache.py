"""A SQLite candle cache, such as the REST-polling bot kept: one table of pair, timeframe,
timestamp, open, high, low, close (and maybe volume).

Caches differ in naming, so the table is found by its columns, not its name: the first table
with a time column and open/high/low/close (or bid_/ask_ variants), plus pair and timeframe
columns unless `--pair`/`--timeframe` supply them. The summary says which table and columns
were used. Times may be epoch seconds or milliseconds (UTC by definition) or ISO text; ISO
text without an offset needs `--time-zone`. Pairs may be `EURUSD`, `EUR/USD` or IG epics;
timeframes `5m`, `MINUTE_5`, `M5`, `5min` or minutes.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

from ..models import Candle
from . import model as m

SQLITE_MAGIC = b"SQLite format 3\x00"

ROLES: dict[str, tuple[str, ...]] = {
    "pair": ("pair", "symbol", "instrument", "epic", "ticker", "market"),
    "timeframe": ("timeframe", "resolution", "interval", "tf", "granularity", "period"),
    "time": ("timestamp", "bucket", "time", "datetime", "date", "ts", "open_time", "snapshot_time", "start"),
    "open": ("open", "open_price", "mid_open", "o"),
    "high": ("high", "high_price", "mid_high", "h"),
    "low": ("low", "low_price", "mid_low", "l"),
    "close": ("close", "close_price", "mid_close", "c"),
    "volume": ("volume", "ticks", "tick_volume", "last_traded_volume", "vol", "v"),
}
BIDASK = tuple(f"{s}_{f}" for s in ("bid", "ask") for f in ("open", "high", "low", "close"))


def _match(columns: list[str], opts: m.Options) -> dict[str, str] | None:
    lower = {c.lower(): c for c in columns}
    found = {role: next((lower[n] for n in names if n in lower), None) for role, names in ROLES.items()}
    bidask = all(n in lower for n in BIDASK)
    if found["time"] is None or not (bidask or all(found[r] for r in ("open", "high", "low", "close"))):
        return None
    if (found["pair"] is None and opts.pair is None) or (found["timeframe"] is None and opts.timeframe is None):
        return None
    out = {r: c for r, c in found.items() if c is not None}
    if bidask:
        out.update({n: lower[n] for n in BIDASK})
    return out


def _epoch_or_iso(v: Any, zone: dt.tzinfo | None) -> int:
    """Epoch ms from epoch s/ms or ISO text; LookupError for ISO without a zone and none given."""
    if isinstance(v, int | float) or (isinstance(v, str) and v.strip().lstrip("-").isdigit()):
        x = float(v)
        return round(x if abs(x) > 1e11 else x * 1000)
    t = dt.datetime.fromisoformat(str(v).strip().replace("Z", "+00:00"))
    if t.tzinfo is None:
        if zone is None:
            raise LookupError(v)
        t = t.replace(tzinfo=zone)
    return m.to_ms(t)


def read(path: Path, opts: m.Options, p: m.Parsed) -> None:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        chosen = None
        for t in tables:
            cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{t}")')]
            found = _match(cols, opts)
            if found:
                chosen = (t, found)
                break
        if chosen is None:
            p.reject(0, m.BAD_FILE, f"no table with time, open, high, low, close, pair and timeframe columns "
                     f"(tables: {', '.join(tables) or 'none'})")  # fmt: skip
            return
        table, cols = chosen
        p.notes.append(
            f"{path.name}: SQLite table {table!r}, columns "
            + ", ".join(f"{role}={col}" for role, col in cols.items())
            + ("" if any(k in cols for k in BIDASK) else "; mid prices (spread unknown)")
        )
        names = list(cols.values())
        query = f'SELECT rowid, {", ".join(chr(34) + n + chr(34) for n in names)} FROM "{table}" ORDER BY rowid'
        for row in conn.execute(query):
            _row(p, row[0], dict(zip(cols, row[1:], strict=True)), opts)
    except sqlite3.DatabaseError as e:
        p.reject(0, m.BAD_FILE, str(e))
    finally:
        conn.close()


def _row(p: m.Parsed, line: int, r: dict[str, Any], opts: m.Options) -> None:
    pair = opts.pair or m.normalize_pair(str(r.get("pair", "")))
    if pair is None:
        p.reject(line, m.UNKNOWN_PAIR, repr(r.get("pair")))
        return
    tf = opts.timeframe or m.normalize_timeframe(str(r.get("timeframe", "")))
    if tf is None:
        p.reject(line, m.BAD_TIMEFRAME, repr(r.get("timeframe")))
        return
    try:
        bucket = _epoch_or_iso(r["time"], opts.zone)
    except LookupError:
        p.reject(line, m.NO_ZONE, repr(r["time"]))
        return
    except (ValueError, TypeError, OverflowError):
        p.reject(line, m.BAD_TIME, repr(r["time"]))
        return
    try:
        vol = r.get("volume")
        ticks = int(float(vol)) if vol not in (None, "") else 0
        if "bid_open" in r:
            prices = [m.number(str(r[n])) for n in BIDASK]
            p.rows.append((line, Candle(pair, tf, bucket, *prices, ticks, True, "import")))
        else:
            o, h, lo, c = (m.number(str(r[k])) for k in ("open", "high", "low", "close"))
            p.rows.append((line, m.mid_candle(pair, tf, bucket, o, h, lo, c, ticks)))
    except (ValueError, TypeError) as e:
        p.reject(line, m.NON_NUMERIC, str(e))
