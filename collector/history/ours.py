"""Our own export format, CSV or Parquet: a faithful copy of `candles` rows.

Columns: pair, timeframe, bucket, bid_open .. ask_close, ticks, complete, source. In CSV the
bucket is ISO 8601 in UTC with its offset (`2025-01-15T09:00:00+00:00`) and prices are written
with Python's shortest round-trip repr, so export -> import gives back the same float64 values
bit for bit; in Parquet the bucket is `timestamp[ms, UTC]`. Importing keeps each row's
`source` and `complete` (no `--pair`/`--timeframe` needed, nothing composed).
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .. import timeframes as tfs
from ..models import Candle
from . import model as m

PRICE_COLUMNS = ("bid_open", "bid_high", "bid_low", "bid_close", "ask_open", "ask_high", "ask_low", "ask_close")
COLUMNS = ("pair", "timeframe", "bucket", *PRICE_COLUMNS, "ticks", "complete", "source")
SOURCES = ("stream", "rest", "import")
PARQUET_MAGIC = b"PAR1"


def looks_like(header: list[str]) -> bool:
    return [h.strip().lower() for h in header] == list(COLUMNS)


# --- writing (the exporter) -----------------------------------------------------------------------
def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()


def write_csv(path: Path, candles: Iterable[Candle]) -> int:
    n = 0
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for c in candles:
            prices = (repr(getattr(c, col)) for col in PRICE_COLUMNS)
            w.writerow((c.pair, c.timeframe, _iso(c.bucket_ms), *prices, c.ticks, str(c.complete).lower(), c.source))
            n += 1
    return n


def write_parquet(path: Path, candles: Iterable[Candle]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = list(candles)
    cols: dict[str, Any] = {
        "pair": pa.array([c.pair for c in rows], pa.string()),
        "timeframe": pa.array([c.timeframe for c in rows], pa.string()),
        "bucket": pa.array([c.bucket_ms for c in rows], pa.timestamp("ms", tz="UTC")),
    }
    for col in PRICE_COLUMNS:
        cols[col] = pa.array([getattr(c, col) for c in rows], pa.float64())
    cols["ticks"] = pa.array([c.ticks for c in rows], pa.int64())
    cols["complete"] = pa.array([c.complete for c in rows], pa.bool_())
    cols["source"] = pa.array([c.source for c in rows], pa.string())
    pq.write_table(pa.table(cols), path)
    return len(rows)


# --- reading (the importer) -----------------------------------------------------------------------
def _candle(p: m.Parsed, line: int, r: dict[str, Any], bucket_ms: int) -> Candle | None:
    pair = m.normalize_pair(str(r["pair"]))
    if pair is None:
        p.reject(line, m.UNKNOWN_PAIR, repr(r["pair"]))
        return None
    tf = str(r["timeframe"]).strip()
    source = str(r["source"]).strip().lower()
    complete = str(r["complete"]).strip().lower()
    if source not in SOURCES or complete not in ("true", "false"):
        p.reject(line, m.BAD_ROW, f"source {r['source']!r}, complete {r['complete']!r}")
        return None
    try:
        tfs.minutes(tf)
        prices = [m.number(str(r[col])) for col in PRICE_COLUMNS]
        ticks = int(str(r["ticks"]))
    except ValueError as e:
        p.reject(line, m.BAD_TIMEFRAME if "timeframe" in str(e) else m.NON_NUMERIC, str(e))
        return None
    return Candle(pair, tf, bucket_ms, *prices, ticks, complete == "true", source)


def _bucket_csv(text: str) -> int:
    t = dt.datetime.fromisoformat(text.strip())
    if t.tzinfo is None:
        raise LookupError(text)
    return m.to_ms(t)


def read_csv(path: Path, rows: Iterator[list[str]], p: m.Parsed) -> None:
    """`rows` is the csv reader positioned after the header (line 1)."""
    for line, values in enumerate(rows, start=2):
        if not values:
            continue
        if len(values) != len(COLUMNS):
            p.reject(line, m.BAD_ROW, f"{len(values)} fields, expected {len(COLUMNS)}")
            continue
        r = dict(zip(COLUMNS, values, strict=True))
        try:
            bucket = _bucket_csv(r["bucket"])
        except LookupError:
            p.reject(line, m.NO_ZONE, r["bucket"])
            continue
        except ValueError:
            p.reject(line, m.BAD_TIME, r["bucket"])
            continue
        c = _candle(p, line, r, bucket)
        if c is not None:
            p.rows.append((line, c))


def read_parquet(path: Path, p: m.Parsed) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        p.reject(0, m.BAD_FILE, f"parquet without columns {', '.join(missing)}; expected {', '.join(COLUMNS)}")
        return
    bucket = table.column("bucket")
    if getattr(bucket.type, "tz", None) is None:
        p.reject(0, m.NO_ZONE, "bucket column is a timestamp without a time zone")
        return
    import pyarrow as pa

    buckets = bucket.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_pylist()
    data = {c: table.column(c).to_pylist() for c in COLUMNS if c != "bucket"}
    for i, b in enumerate(buckets):
        r = {c: data[c][i] for c in data}
        r["complete"] = str(r["complete"]).lower()
        line = i + 1
        if b is None or any(r[c] is None for c in COLUMNS if c != "bucket"):
            p.reject(line, m.BAD_ROW, "null value")
            continue
        c = _candle(p, line, r, int(b))
        if c is not None:
            p.rows.append((line, c))
