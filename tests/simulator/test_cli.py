"""`ig-collector simulator`: prints where it listens and stops cleanly on SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from collector.simulator import cli

ROOT = Path(__file__).resolve().parents[2]


def test_parser_defaults_bind_loopback_and_parse_start_and_pairs() -> None:
    p = argparse.ArgumentParser()
    cli.configure_parser(p)
    args = p.parse_args(["--start", "2024-07-01T12:00:00Z", "--pairs", "eurusd,GBPJPY", "--speed", "60"])
    assert args.host == "127.0.0.1"
    assert args.start == 1_719_835_200_000
    assert args.pairs == ("EURUSD", "GBPJPY")
    assert args.speed == 60.0
    with pytest.raises(SystemExit):
        p.parse_args(["--pairs", "EURXXX"])


def test_command_prints_the_url_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector.cli", "simulator", "--ticks-per-second", "20", "--speed", "60"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("IG simulator listening on http://127.0.0.1:")
        url = first.split()[4]
        assert proc.stdout.readline().strip() == f"export IG_API_URL={url}"
        assert "IG_PASSWORD=sim-pass" in proc.stdout.readline()
        clock = proc.stdout.readline().strip()
        assert clock.startswith("export COLLECTOR_CLOCK=linear:origin_ms=")
        assert clock.endswith(",speed=60.0")
        assert requests.get(url + "/_sim/clock", timeout=5).json()["speed"] == 60.0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
