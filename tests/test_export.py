"""`ig-collector export`: our own format, CSV or Parquet, is a faithful copy: exporting and then
importing into an empty database gives the same rows, source and complete included."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.cli import main as cli
from collector.history.ours import COLUMNS

ROW = ", ".join(c for c in COLUMNS)


def stored(db: psycopg.Connection) -> list[tuple]:
    return db.execute(f"SELECT {ROW} FROM candles ORDER BY pair, timeframe, bucket").fetchall()


def seed(db: psycopg.Connection, prices: list[float]) -> None:
    """A 5m series with every source and an incomplete row, prices with awkward float digits."""
    base = dt.datetime(2025, 1, 15, 9, 0, tzinfo=dt.UTC)
    for i, p in enumerate(prices):
        source = ("stream", "rest", "import")[i % 3]
        db.execute(
            "INSERT INTO candles (pair, timeframe, bucket, bid_open, bid_high, bid_low, bid_close, ask_open, ask_high, "
            "ask_low, ask_close, ticks, complete, source) VALUES ('EURUSD', '5m', %s, %s, %s, %s, %s, %s, %s, %s, %s, "
            "%s, %s, %s)",
            (base + dt.timedelta(minutes=5 * i), p, p * 1.001, p * 0.999, p, p + 1e-5, p * 1.001 + 1e-5,
             p * 0.999 + 1e-5, p + 1e-5, i, i != len(prices) - 1, source),
        )  # fmt: skip


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prices=st.lists(st.floats(0.5, 200.0), min_size=1, max_size=12))
def test_export_then_import_into_an_empty_database_gives_the_same_rows(
    db: psycopg.Connection, db_url: str, tmp_path: Path, fmt: str, prices: list[float]
) -> None:
    db.execute("TRUNCATE candles")
    seed(db, prices)
    before = stored(db)
    out = tmp_path / f"eurusd.{fmt}"
    args = ["--pair", "EURUSD", "--timeframe", "5m", "--format", fmt, str(out)]
    assert cli(["export", "--database-url", db_url, *args]) == 0
    db.execute("TRUNCATE candles")

    assert cli(["import", "--database-url", db_url, str(out)]) == 0
    assert stored(db) == before


def test_export_keeps_to_the_pair_timeframe_and_range(db: psycopg.Connection, db_url: str, tmp_path: Path) -> None:
    seed(db, [1.1, 1.2, 1.3, 1.4])
    out = tmp_path / "part.csv"
    args = ["--pair", "EURUSD", "--timeframe", "5m", "--since", "2025-01-15T09:05", "--until", "2025-01-15T09:15"]
    assert cli(["export", "--database-url", db_url, *args, "--format", "csv", str(out)]) == 0

    lines = out.read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS)
    assert [line.split(",")[2] for line in lines[1:]] == ["2025-01-15T09:05:00+00:00", "2025-01-15T09:10:00+00:00"]
    assert lines[1].endswith(",1,true,rest")
