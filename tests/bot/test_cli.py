"""The `trading-bot` command: plot writes a PNG, signals and warmup print tables, every
subcommand explains itself, and bad settings exit 2 naming the setting."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from trading_bot.cli import main

from .botkit import insert_candles, market_series

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich wraps tables to the terminal; a wide one keeps headers on one line for the asserts."""
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def history(db: psycopg.Connection) -> None:
    insert_candles(db, "EURUSD", "15m", market_series(15, 400, seed=4))


def test_plot_writes_a_png_of_candles_ma200_and_the_cloud(history: None, db_url: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "charts" / "chart.png"

    code = main(
        ["--database-url", db_url, "plot", "--pair", "EURUSD", "--timeframe", "15m", "--bars", "300", "-o", str(out)]
    )

    assert code == 0
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 20_000
    assert "300 bars of EURUSD 15m" in capsys.readouterr().out


def test_plot_without_bars_says_so(db: psycopg.Connection, db_url: str, tmp_path: Path, capsys) -> None:
    code = main(["--database-url", db_url, "plot", "--pair", "GBPUSD", "-o", str(tmp_path / "x.png")])

    assert code == 1
    assert "no 15m bars for GBPUSD yet" in capsys.readouterr().err


def test_signals_prints_the_latest_indicators_and_signals(
    history: None, db: psycopg.Connection, db_url: str, capsys
) -> None:
    db.execute(
        "INSERT INTO signals (pair, timeframe, bucket, strategy, side, price, reason) "
        "VALUES ('EURUSD', '15m', %s, 'ichimoku_ma200', 'sell', 1.08765, 'Tenkan crossed below Kijun')",
        (dt.datetime(2025, 1, 10, 9, 0, tzinfo=dt.UTC),),
    )

    code = main(["--database-url", db_url, "signals", "--pair", "EURUSD", "--timeframe", "15m"])

    out = capsys.readouterr().out
    assert code == 0
    assert "Latest complete bars" in out and "EURUSD" in out
    assert "Latest signals (1)" in out and "1.08765" in out and "dry run" in out


def test_warmup_plan_prints_points_budget_and_stream_time(history: None, db_url: str, capsys) -> None:
    code = main(["--database-url", db_url, "warmup", "--plan", "--pair", "EURUSD,GBPUSD", "--target", "450"])

    out = capsys.readouterr().out
    assert code == 0
    assert "REST points" in out and "stream alone reaches it" in out
    # 5m: 450 + 450; 15m: the 450 newest 5m of GBPUSD compose 150 whole 15m buckets (149 when the
    # wall clock is mid-quarter), so 300 (301) to buy; EURUSD's 400 stored + 50 composed need none.
    assert re.search(r"total 120[01] points", out), out


@pytest.mark.parametrize("command", ["signals", "run", "warmup", "plot"])
def test_every_subcommand_explains_itself(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])

    assert e.value.code == 0
    assert f"usage: trading-bot {command}" in capsys.readouterr().out


def test_bad_settings_exit_2_naming_the_setting(db_url: str, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("TRADING_BOT_MAX_OPEN_POSITIONS", "-1")

    assert main(["--database-url", db_url, "signals"]) == 2
    assert "TRADING_BOT_MAX_OPEN_POSITIONS" in capsys.readouterr().err


def test_run_stops_cleanly_on_sigterm(db: psycopg.Connection, db_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": db_url, "COLLECTOR_LOG_FORMAT": "json", "TRADING_BOT_REST_FALLBACK": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trading_bot.cli", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # wait until it listens
            if "listening on candle_closed" in line:
                break
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
