"""`trading-bot plot` and `signals` show the whole indicator set and the volume profile."""

from __future__ import annotations

import struct
from pathlib import Path

import psycopg
import pytest

from trading_bot.cli import main

from .botkit import insert_candles
from .techkit import shaped_series
from .test_cli import wide_terminal  # noqa: F401  (autouse: rich keeps the wide tables on one line)


@pytest.fixture
def history(db: psycopg.Connection) -> None:
    insert_candles(db, "EURUSD", "15m", shaped_series(15, 600, seed=50))


def png_size(path: Path) -> tuple[int, int]:
    width, height = struct.unpack(">II", path.read_bytes()[16:24])
    return width, height


def test_plot_draws_oscillator_panels_under_the_price_and_the_profile_beside_it(
    history: None, db_url: str, tmp_path: Path
) -> None:
    full, plain = tmp_path / "full.png", tmp_path / "plain.png"
    args = ["--database-url", db_url, "plot", "--pair", "EURUSD", "--bars", "300"]

    assert main([*args, "-o", str(full)]) == 0
    assert main([*args, "--profile-bars", "0", "-o", str(plain)]) == 0

    (w_full, h_full), (w_plain, h_plain) = png_size(full), png_size(plain)
    assert h_full == h_plain > 1000, "three oscillator panels under the price, profile or not"
    assert w_full > w_plain, "the profile is drawn beside the price panel"


def test_plot_rejects_a_negative_profile_length(history: None, db_url: str, tmp_path: Path, capsys) -> None:
    code = main(
        ["--database-url", db_url, "plot", "--pair", "EURUSD", "--profile-bars", "-1", "-o", str(tmp_path / "x")]
    )

    assert code == 2 and "--profile-bars must be 0" in capsys.readouterr().err


def test_signals_shows_the_technicals_and_the_profile_of_the_newest_bar(history: None, db_url: str, capsys) -> None:
    code = main(["--database-url", db_url, "signals", "--pair", "EURUSD,GBPUSD", "--timeframe", "15m"])

    out = capsys.readouterr().out
    assert code == 0
    assert "Technicals of the latest complete bars" in out
    for header in ("ADX", "+DI", "Aroon up", "UltOsc", "OBV z", "MA-21", "POC", "value area"):
        assert header in out
    section = out.split("Technicals of the latest complete bars")[1]
    eur = next(line for line in section.splitlines() if "EURUSD" in line)
    gbp = next(line for line in section.splitlines() if "GBPUSD" in line)
    assert "-" not in [cell.strip() for cell in eur.split("│")], "every value exists on a 600-bar history"
    assert [cell.strip() for cell in gbp.split("│")].count("-") == 11, "no bars: every value is -"
