"""`ig-collector import`: each format into candles marked 'import', composition of coarser
timeframes only from complete finer bars, every bad-input reason refused with file and line and
nothing half-applied, and the precedence stream/REST over import in both directions."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import sqlite3
from pathlib import Path

import psycopg
import pytest

from collector.cli import main as cli
from collector.models import Candle
from collector.store import Writer

FIX = Path(__file__).parent / "fixtures" / "history"
UTC = dt.UTC


def at(*a: int) -> dt.datetime:
    return dt.datetime(*a, tzinfo=UTC)


def run_import(db_url: str, *args: str | Path) -> int:
    return cli(["import", "--database-url", db_url, *map(str, args)])


def rows(db: psycopg.Connection, where: str = "true") -> list[tuple]:
    return db.execute(
        "SELECT pair, timeframe, bucket, bid_open, bid_high, bid_low, bid_close, ask_open, ask_close, ticks, "
        f"complete, source FROM candles WHERE {where} ORDER BY pair, timeframe, bucket"
    ).fetchall()


def bot_cache(tmp_path: Path) -> Path:
    """The seed bot's SQLite cache, built from the fixture's SQL script."""
    cache = tmp_path / "cache.sqlite"
    with sqlite3.connect(cache) as lite:
        lite.executescript((FIX / "bot_cache.sql").read_text())
    return cache


def test_mt4_bars_are_read_in_the_given_zone_as_mid_prices_and_fill_15m(db: psycopg.Connection, db_url: str) -> None:
    assert run_import(db_url, FIX / "EURUSD5.csv", "--time-zone", "Europe/Athens") == 0

    fives = rows(db, "timeframe = '5m'")
    assert len(fives) == 6
    assert fives[0] == ("EURUSD", "5m", at(2024, 1, 15, 9, 0), 1.095, 1.0956, 1.0948, 1.0955, 1.095, 1.0955, 41,
                        True, "import")  # fmt: skip
    quarters = rows(db, "timeframe = '15m'")
    assert [(r[2], r[3], r[4], r[5], r[6], r[9]) for r in quarters] == [
        (at(2024, 1, 15, 9, 0), 1.095, 1.0961, 1.0948, 1.0952, 130),
        (at(2024, 1, 15, 9, 15), 1.0952, 1.0971, 1.0945, 1.0966, 121),
    ]


def test_mt5_export_names_its_pair_and_timeframe_in_the_file_name(db: psycopg.Connection, db_url: str) -> None:
    assert run_import(db_url, FIX / "USDJPY_M15_202401150000_202401151200.csv", "--time-zone", "+02:00") == 0
    got = rows(db)
    assert [(r[0], r[1], r[2], r[3], r[6], r[9]) for r in got] == [
        ("USDJPY", "15m", at(2024, 1, 15, 8, 0), 147.25, 147.3, 210),
        ("USDJPY", "15m", at(2024, 1, 15, 8, 15), 147.3, 147.4, 198),
        ("USDJPY", "15m", at(2024, 1, 15, 8, 30), 147.4, 147.18, 305),
    ]


def test_a_generic_csv_takes_pair_and_timeframe_from_the_command_line(db: psycopg.Connection, db_url: str) -> None:
    args = ("--pair", "AUDUSD", "--timeframe", "5m", "--time-zone", "UTC")
    assert run_import(db_url, FIX / "generic_mid.csv", *args) == 0
    assert [(r[0], r[1], r[2]) for r in rows(db)] == [
        ("AUDUSD", "15m", at(2024, 1, 16, 8, 0)),
        ("AUDUSD", "5m", at(2024, 1, 16, 8, 0)),
        ("AUDUSD", "5m", at(2024, 1, 16, 8, 5)),
        ("AUDUSD", "5m", at(2024, 1, 16, 8, 10)),
    ]


def test_histdata_minutes_are_fixed_est_and_compose_5m_and_15m_without_storing_1m(
    db: psycopg.Connection, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_import(db_url, FIX / "DAT_ASCII_GBPUSD_M1_202401.csv") == 0

    got = {tf: n for tf, n in db.execute("SELECT timeframe, count(*) FROM candles GROUP BY 1").fetchall()}
    assert got == {"5m": 3, "15m": 1}  # the 16th minute starts a quarter it does not complete
    first = db.execute("SELECT min(bucket) FROM candles").fetchone()[0]
    assert first == at(2024, 1, 15, 9, 0)  # 04:00 EST is 09:00 UTC, in January and in July alike
    (o, c) = db.execute("SELECT bid_open, bid_close FROM candles WHERE timeframe = '15m'").fetchone()
    lines = (FIX / "DAT_ASCII_GBPUSD_M1_202401.csv").read_text().splitlines()
    assert (o, c) == (float(lines[0].split(";")[1]), float(lines[14].split(";")[4]))
    assert "16 1m bars used only to compose" in capsys.readouterr().err


def test_a_sqlite_cache_is_found_by_its_columns_and_says_which_were_used(
    db: psycopg.Connection, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = bot_cache(tmp_path)
    assert run_import(db_url, cache) == 0

    assert [(r[0], r[1], r[2], r[6], r[9]) for r in rows(db)] == [
        ("EURUSD", "15m", at(2024, 1, 15, 9, 0), 1.0952, 120),
        ("EURUSD", "15m", at(2024, 1, 15, 9, 15), 1.0966, 133),
        ("EURUSD", "5m", at(2024, 1, 15, 9, 0), 1.0955, 41),
        ("GBPUSD", "5m", at(2024, 1, 15, 9, 5), 1.2705, 38),
    ]
    err = capsys.readouterr().err
    assert "SQLite table 'price_cache'" in err and "pair=epic" in err and "timeframe=resolution" in err


GOOD = "2024.01.15,11:00,1.09500,1.09560,1.09480,1.09550,41"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("2024.01.15,11:05,1.09500,1.09560,1.09520,1.09550,41", "OHLC not ordered"),  # low above open
        ("2024.01.15,11:05,1.09500,1.09540,1.09480,1.09550,41", "OHLC not ordered"),  # high below close
        ("2024.01.15,11:05,0,1.09560,1.09480,1.09550,41", "non-positive price"),
        ("2024.01.15,11:05,1.09500,abc,1.09480,1.09550,41", "non-numeric price or volume"),
        ("2024.01.15,11:00,1.09500,1.09560,1.09480,1.09551,41", "duplicate with different values"),
        ("2024.01.15,11:07,1.09500,1.09560,1.09480,1.09550,41", "bucket not aligned to the timeframe"),
        ("2024.13.15,11:05,1.09500,1.09560,1.09480,1.09550,41", "unreadable time"),
        ("2024.01.15,11:05,1.09500", "malformed row"),
    ],
)
def test_a_bad_row_is_refused_with_file_line_and_reason_and_nothing_is_stored(
    db: psycopg.Connection, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, reason: str
) -> None:
    f = tmp_path / "EURUSD5.csv"
    f.write_text(f"{GOOD}\n{line}\n2024.01.15,11:10,1.09590,1.09610,1.09500,1.09520,52\n")

    assert run_import(db_url, f, "--time-zone", "UTC") == 1
    err = capsys.readouterr().err
    assert f"{f}:2: {reason}" in err and "nothing stored" in err
    assert db.execute("SELECT count(*) FROM candles").fetchone()[0] == 0


def test_times_without_a_zone_need_time_zone(
    db: psycopg.Connection, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_import(db_url, FIX / "EURUSD5.csv") == 1
    assert "time without a zone (give --time-zone)" in capsys.readouterr().err
    assert db.execute("SELECT count(*) FROM candles").fetchone()[0] == 0


def test_a_file_that_names_no_known_pair_is_refused(
    db: psycopg.Connection, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "XAUUSD5.csv"
    shutil.copy(FIX / "EURUSD5.csv", f)
    assert run_import(db_url, f, "--time-zone", "UTC") == 1
    assert "unknown pair" in capsys.readouterr().err


def test_an_unknown_pair_in_a_cache_row_is_counted_by_reason(
    db: psycopg.Connection, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = bot_cache(tmp_path)
    with sqlite3.connect(cache) as lite:
        lite.execute("INSERT INTO price_cache VALUES ('IX.D.FTSE.DAILY.IP', 'MINUTE_5', 1705309200, 1, 1, 1, 1, 0)")
        lite.execute("INSERT INTO price_cache VALUES ('XAU/USD', 'MINUTE_5', 1705309200, 1, 1, 1, 1, 0)")
    assert run_import(db_url, cache) == 1
    err = capsys.readouterr().err
    assert "rejected by reason" in err and re.search(r"unknown pair\s*│\s*2 │", err)


def test_one_bad_file_keeps_every_other_file_out_too(db: psycopg.Connection, db_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "GBPUSD5.csv"
    bad.write_text("2024.01.15,11:00,1.2,1.1,1.3,1.2,1\n")
    assert run_import(db_url, FIX / "EURUSD5.csv", bad, "--time-zone", "UTC") == 1
    assert db.execute("SELECT count(*) FROM candles").fetchone()[0] == 0


def test_dry_run_reports_what_would_be_stored_and_stores_nothing(
    db: psycopg.Connection, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_import(db_url, FIX / "EURUSD5.csv", "--time-zone", "Europe/Athens", "--dry-run") == 0
    err = capsys.readouterr().err
    assert "would store" in err and "dry run, nothing written" in err
    assert "│ 5m        │   6 │" in err and "│ 15m       │   2 │" in err
    assert db.execute("SELECT count(*) FROM candles").fetchone()[0] == 0


def stream_candle(bucket: dt.datetime, tf: str = "5m", complete: bool = True) -> Candle:
    ms = int(bucket.timestamp() * 1000)
    return Candle("EURUSD", tf, ms, 2.0, 2.1, 1.9, 2.05, 2.0001, 2.1001, 1.9001, 2.0501, 7, complete, "stream", ms, ms)


def stream_and_rest(db: psycopg.Connection, db_url: str, *, stream_complete: bool) -> None:
    """EURUSD 5m 09:00 from the stream (through the writer) and 09:05 from REST (through
    store_rest_candles), the two paths that write candles besides the importer."""
    w = Writer(db_url, ["EURUSD"])
    w.submit_candles([stream_candle(at(2024, 1, 15, 9, 0), complete=stream_complete)],
                     "closed" if stream_complete else "forming")  # fmt: skip
    w.flush()
    w.close()
    db.execute(
        "SELECT store_rest_candles(%s::jsonb)",
        ('[{"pair": "EURUSD", "timeframe": "5m", "bucket": "2024-01-15T09:05:00Z", "bid_open": 3, "bid_high": 3,'
         ' "bid_low": 3, "bid_close": 3, "ask_open": 3, "ask_high": 3, "ask_low": 3, "ask_close": 3, "ticks": 9}]',),
    )  # fmt: skip


def test_an_import_never_overwrites_a_stream_or_rest_candle(db: psycopg.Connection, db_url: str) -> None:
    stream_and_rest(db, db_url, stream_complete=True)

    assert run_import(db_url, FIX / "EURUSD5.csv", "--time-zone", "Europe/Athens") == 0
    got = {(r[2].minute, r[1]): (r[3], r[11]) for r in rows(db, "timeframe = '5m'")}
    assert got[(0, "5m")] == (2.0, "stream") and got[(5, "5m")] == (3.0, "rest")
    assert got[(10, "5m")] == (1.0959, "import")


def test_a_later_stream_or_rest_candle_replaces_an_imported_one(db: psycopg.Connection, db_url: str) -> None:
    assert run_import(db_url, FIX / "EURUSD5.csv", "--time-zone", "Europe/Athens") == 0
    stream_and_rest(db, db_url, stream_complete=False)

    got = {r[2].minute: (r[3], r[10], r[11]) for r in rows(db, "timeframe = '5m'")}
    assert got[0] == (2.0, False, "stream") and got[5] == (3.0, True, "rest") and got[10] == (1.0959, True, "import")


def test_importing_the_same_file_twice_replaces_its_own_rows(db: psycopg.Connection, db_url: str) -> None:
    for _ in range(2):
        assert run_import(db_url, FIX / "EURUSD5.csv", "--time-zone", "Europe/Athens") == 0
    assert db.execute("SELECT count(*) FROM candles").fetchone()[0] == 8
