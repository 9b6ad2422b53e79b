"""The systemd units in deploy/systemd: valid for systemd, notify + watchdog, restart limits, hardened."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT_DIR = ROOT / "deploy" / "systemd"
UNITS = {"ig-collector.service": "ig-collector run", "trading-bot.service": "trading-bot run"}
VENV_BIN = "/opt/ig-fx/.venv/bin/"
ENV_FILE = "/etc/ig-collector/ig-collector.env"


def parse_unit(path: Path) -> dict[str, list[str]]:
    """`Section.Key` -> every value in file order (systemd keys may repeat)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def one(unit: dict[str, list[str]], key: str) -> str:
    values = unit.get(key)
    assert values, f"{key} is not set"
    return values[-1]


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian package `systemd`; CI installs it)")
    return tool


@pytest.fixture
def testable_units(tmp_path: Path) -> Path:
    """The units as shipped, with ExecStart pointing at stub executables that exist on this machine."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in UNITS:
        text = (UNIT_DIR / name).read_text()
        for exe in re.findall(re.escape(VENV_BIN) + r"([\w.-]+)", text):
            stub = bin_dir / exe
            stub.write_text("#!/bin/sh\nexit 0\n")
            stub.chmod(0o755)
        (tmp_path / name).write_text(text.replace(VENV_BIN, f"{bin_dir}/"))
    return tmp_path


@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemd_analyze_verify_accepts_the_unit_without_a_warning(name: str, testable_units: Path) -> None:
    r = subprocess.run(
        [systemd_analyze(), "verify", "--man=no", str(testable_units / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", f"systemd-analyze warned:\n{r.stderr}"


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_exposure_level_is_low(name: str, testable_units: Path) -> None:
    """`systemd-analyze security` rates the sandbox; 2.0 and below is its 'OK' band with margin."""
    r = subprocess.run(
        [systemd_analyze(), "security", "--offline=yes", str(testable_units / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    level = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout)
    assert level, r.stdout + r.stderr
    assert float(level.group(1)) <= 2.0, r.stdout


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_starts_the_packaged_command_from_the_venv(name: str) -> None:
    assert one(parse_unit(UNIT_DIR / name), "Service.ExecStart") == VENV_BIN + UNITS[name]


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_is_notify_type_with_a_watchdog(name: str) -> None:
    unit = parse_unit(UNIT_DIR / name)
    assert one(unit, "Service.Type") == "notify"
    assert one(unit, "Service.WatchdogSec") == "60s"


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_restarts_always_within_start_limits(name: str) -> None:
    unit = parse_unit(UNIT_DIR / name)
    assert one(unit, "Service.Restart") == "always"
    assert one(unit, "Service.RestartSec")
    assert int(one(unit, "Unit.StartLimitBurst")) > 1
    assert one(unit, "Unit.StartLimitIntervalSec")
    assert one(unit, "Service.TimeoutStopSec")


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_runs_as_the_dedicated_user(name: str) -> None:
    unit = parse_unit(UNIT_DIR / name)
    assert (one(unit, "Service.User"), one(unit, "Service.Group")) == ("igfx", "igfx")


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_reads_settings_from_the_root_only_env_file(name: str) -> None:
    assert parse_unit(UNIT_DIR / name)["Service.EnvironmentFile"][0] == ENV_FILE


def test_bot_env_file_overrides_the_shared_one_so_it_connects_as_trading_bot() -> None:
    files = parse_unit(UNIT_DIR / "trading-bot.service")["Service.EnvironmentFile"]
    assert files == [ENV_FILE, "/etc/ig-collector/trading-bot.env"]


HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "CapabilityBoundingSet": "",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "RestrictNamespaces": "yes",
    "SystemCallFilter": "@system-service",
}


@pytest.mark.parametrize("name", sorted(UNITS))
@pytest.mark.parametrize("key", sorted(HARDENING))
def test_unit_is_hardened(name: str, key: str) -> None:
    assert HARDENING[key] in parse_unit(UNIT_DIR / name).get(f"Service.{key}", [])


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_writes_only_to_its_state_directory(name: str) -> None:
    unit = parse_unit(UNIT_DIR / name)
    assert one(unit, "Service.StateDirectory") == name.removesuffix(".service")
    assert "Service.ReadWritePaths" not in unit


MDWE_PROBE = textwrap.dedent(
    """
    import ctypes, io, mmap, sys
    PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        print("unsupported"); sys.exit(0)
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        sys.exit("W+X mapping was allowed: the probe proves nothing")
    except PermissionError:
        pass
    import numpy as np, pandas as pd
    ticks = pd.Series(np.random.default_rng(1).random(10_000),
                      index=pd.date_range("2024-01-01", periods=10_000, freq="s"))
    assert ticks.resample("5min").ohlc().shape == (34, 4)
    import aiohttp, prometheus_client, pydantic_settings, psycopg, psycopg_pool, ssl
    import lightstreamer.client, trading_ig
    ssl.create_default_context()
    with psycopg.connect(sys.argv[1]) as conn:
        assert conn.execute("SELECT count(*) FROM instruments").fetchone()[0] == 28
    import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
    fig, ax = plt.subplots(); ax.plot([1, 2, 3]); fig.savefig(io.BytesIO(), format="png")
    assert ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)(41) == 42
    print("ok")
    """
)


def test_python_stack_runs_under_memory_deny_write_execute(db_url: str, tmp_path: Path) -> None:
    """MemoryDenyWriteExecute=yes is safe: the same kernel rule (PR_SET_MDWE) applied to the stack we ship."""
    r = subprocess.run(
        [sys.executable, "-c", MDWE_PROBE, db_url],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "MPLCONFIGDIR": str(tmp_path), "HOME": str(tmp_path)},
    )
    if r.stdout.strip() == "unsupported":
        pytest.skip("this kernel has no PR_SET_MDWE (Linux >= 6.3) to emulate MemoryDenyWriteExecute")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("ok")
