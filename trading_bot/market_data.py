"""Market data as pandas DataFrames: one SQL query per call over a pooled connection.

Everything goes through the SQL functions of `sql/007_indicators.sql` (`last_candles`,
`indicators`) and `sql/010_technicals.sql` (`technicals`, `volume_profile`), so the bot, the
chart and Grafana agree on what a bar, a forming bar and an indicator value are. Frames carry
a UTC DatetimeIndex named `bucket` (bar start), oldest first, and `frame.attrs` names the series
(pair, timeframe, displacement) so a strategy needs nothing else to decide. `get_candles` is the
exception on purpose: the proposal's plain frame, for bots written against a REST fetcher.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg_pool import ConnectionPool

CANDLE_COLUMNS = ("open", "high", "low", "close", "ticks")
INDICATOR_COLUMNS = (
    "open", "high", "low", "close", "ma_200", "tenkan", "kijun", "senkou_a", "senkou_b", "chikou_ref",
)  # fmt: skip
TECHNICAL_COLUMNS = (
    "open", "high", "low", "close", "ticks", "ma_21", "ma_50", "ma_200", "adx_14", "plus_di_14", "minus_di_14",
    "aroon_up_25", "aroon_down_25", "ultosc", "obv_z_50", "tenkan", "kijun", "senkou_a", "senkou_b", "chikou_ref",
)  # fmt: skip
PROFILE_COLUMNS = ("row", "price_low", "price_high", "ticks", "poc", "in_value_area")
# The proposal's candle frame (its ForexDataFetcher's shape): tick count is FX's volume.
GET_CANDLES_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")


def _configure(conn: psycopg.Connection) -> None:
    # Timestamps come back in UTC whatever the server's TimeZone is.
    conn.execute("SET TIME ZONE 'UTC'")


def open_pool(url: str, max_size: int = 4, application_name: str = "trading-bot") -> ConnectionPool:
    """A small autocommit pool: the bot's reads are single statements, its writes one row each."""
    return ConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        kwargs={"autocommit": True, "application_name": application_name, "connect_timeout": 10},
        configure=_configure,
        open=True,
        name=application_name,
    )


def _frame(rows: list[tuple[Any, ...]], columns: Sequence[str], attrs: dict[str, Any]) -> pd.DataFrame:
    """Rows of (bucket, *columns) to a float frame with a UTC DatetimeIndex; NULL becomes NaN."""
    index = pd.DatetimeIndex([r[0] for r in rows], name="bucket")
    index = index.tz_convert("UTC") if len(index) else pd.DatetimeIndex([], tz="UTC", name="bucket")
    values = np.array([r[1:] for r in rows], dtype=float).reshape(len(rows), len(columns))
    frame = pd.DataFrame(values, index=index, columns=list(columns))
    frame.attrs.update(attrs)
    return frame


@dataclass(frozen=True)
class SeriesState:
    """How much history a series has, as the warm-up planner and the freshness check see it."""

    pair: str
    timeframe: str
    bars: int  # complete bars, counted up to the limit asked for
    oldest: dt.datetime | None  # oldest of those bars
    newest: dt.datetime | None  # newest complete bar


class MarketData:
    """Read access to candles, indicators and series state; safe to share between threads."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        with self.pool.connection() as conn:
            yield conn

    def candles(self, pair: str, timeframe: str, n: int, include_forming: bool = False) -> pd.DataFrame:
        """The last `n` mid candles (open, high, low, close, ticks), oldest first."""
        with self.connection() as conn, conn.cursor(binary=True) as cur:
            rows = cur.execute(
                "SELECT bucket, open, high, low, close, ticks FROM last_candles(%s, %s, %s, %s) ORDER BY bucket",
                (pair, timeframe, n, include_forming),
            ).fetchall()
        return _frame(rows, CANDLE_COLUMNS, {"pair": pair, "timeframe": timeframe})

    def indicators(
        self, pair: str, timeframe: str, n: int, include_forming: bool = False, displacement: int = 26
    ) -> pd.DataFrame:
        """The last `n` bars with MA-200 and Ichimoku, oldest first (see indicators() in SQL)."""
        with self.connection() as conn, conn.cursor(binary=True) as cur:
            rows = cur.execute(
                "SELECT bucket, " + ", ".join(INDICATOR_COLUMNS) + " FROM indicators(%s, %s, %s, %s, %s)",
                (pair, timeframe, n, include_forming, displacement),
            ).fetchall()
        attrs = {"pair": pair, "timeframe": timeframe, "displacement": displacement}
        return _frame(rows, INDICATOR_COLUMNS, attrs)

    def technicals(self, pair: str, timeframe: str, n: int, include_forming: bool = False) -> pd.DataFrame:
        """The last `n` bars with the bot's whole indicator set, oldest first (technicals() in SQL):
        MA-21/50/200, ADX/+DI/-DI 14, Aroon 25, Ultimate Oscillator, OBV z-score 50, Ichimoku."""
        with self.connection() as conn, conn.cursor(binary=True) as cur:
            rows = cur.execute(
                "SELECT bucket, " + ", ".join(TECHNICAL_COLUMNS) + " FROM technicals(%s, %s, %s, %s)",
                (pair, timeframe, n, include_forming),
            ).fetchall()
        return _frame(rows, TECHNICAL_COLUMNS, {"pair": pair, "timeframe": timeframe, "displacement": 26})

    def volume_profile(
        self, pair: str, timeframe: str, bars: int = 90, rows: int = 24, value_area: float = 0.70
    ) -> pd.DataFrame:
        """The volume profile of the last `bars` complete candles: one row per price bin, lowest
        first, with `poc` and `in_value_area` flags (volume_profile() in SQL)."""
        with self.connection() as conn, conn.cursor(binary=True) as cur:
            got = cur.execute(
                'SELECT "row", price_low, price_high, ticks, poc, in_value_area'
                " FROM volume_profile(%s, %s, %s, %s, %s)",
                (pair, timeframe, bars, rows, value_area),
            ).fetchall()
        frame = pd.DataFrame(got, columns=list(PROFILE_COLUMNS)).astype(
            {"row": int, "price_low": float, "price_high": float, "ticks": float, "poc": bool, "in_value_area": bool}
        )
        frame.attrs.update({"pair": pair, "timeframe": timeframe, "bars": bars, "value_area": value_area})
        return frame

    def series_state(self, pairs: Sequence[str], timeframes: Sequence[str], limit: int) -> list[SeriesState]:
        """For every pair and timeframe: complete bars (up to `limit`), oldest and newest of them.
        One query; each series is a bounded backward index scan, not a count of its history."""
        with self.connection() as conn:
            rows = conn.execute(
                """SELECT p, tf, count(c.bucket), min(c.bucket), max(c.bucket)
                   FROM unnest(%s::text[]) WITH ORDINALITY AS ps(p, i)
                   CROSS JOIN unnest(%s::text[]) WITH ORDINALITY AS ts(tf, j)
                   LEFT JOIN LATERAL last_candles(p, tf, %s) c ON true
                   GROUP BY p, i, tf, j ORDER BY i, j""",
                (list(pairs), list(timeframes), limit),
            ).fetchall()
        return [SeriesState(*r) for r in rows]

    def newest_complete(self, pairs: Sequence[str], timeframes: Sequence[str]) -> dict[tuple[str, str], dt.datetime]:
        """Newest complete bar per (pair, timeframe) that has any; one query."""
        with self.connection() as conn:
            rows = conn.execute(
                """SELECT p, tf, c.bucket
                   FROM unnest(%s::text[]) AS p CROSS JOIN unnest(%s::text[]) AS tf
                   CROSS JOIN LATERAL last_candles(p, tf, 1) c""",
                (list(pairs), list(timeframes)),
            ).fetchall()
        return {(p, tf): b for p, tf, b in rows}


def get_candles(
    pair: str, timeframe: str, count: int = 200, include_forming: bool = False, *, database_url: str | None = None
) -> pd.DataFrame:
    """The last `count` mid candles as a plain frame: `timestamp` (UTC, bar start), open, high,
    low, close, volume (the tick count), oldest first, with a RangeIndex.

    The proposal's data layer: an existing bot replaces its REST `ForexDataFetcher` with
    `from trading_bot import get_candles`; no API calls, no points spent, just one query. The
    database is `database_url`, else the bot's settings (DATABASE_URL, TRADING_BOT_CONFIG). One
    short connection per call keeps it free of global state; a long-running bot that calls it
    often should hold a `MarketData` (a pool) instead."""
    if database_url is None:
        from .config import load_bot_settings

        settings = load_bot_settings()
        settings.require("database_url")
        database_url = settings.database_url or ""
    with psycopg.connect(database_url, autocommit=True, application_name="trading-bot get_candles") as conn:
        _configure(conn)
        with conn.cursor(binary=True) as cur:
            rows = cur.execute(
                "SELECT bucket, open, high, low, close, ticks FROM last_candles(%s, %s, %s, %s) ORDER BY bucket",
                (pair, timeframe, count, include_forming),
            ).fetchall()
    frame = _frame(rows, CANDLE_COLUMNS, {"pair": pair, "timeframe": timeframe}).rename(columns={"ticks": "volume"})
    frame = frame.rename_axis("timestamp").reset_index()
    frame["volume"] = frame["volume"].astype("int64")
    return frame[list(GET_CANDLES_COLUMNS)]
