"""promtool accepts deploy/prometheus: both scrape configs, the alert rules, and the rules' unit tests.

Kept apart from the YAML-reading tests so they run wherever promtool is installed.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from deployfiles import PROMETHEUS_DIR


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`; CI installs it)")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, cwd=PROMETHEUS_DIR)


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.compose.yml"])
def test_promtool_accepts_the_config(config: str) -> None:
    r = promtool("check", "config", config)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_accepts_the_alert_rules() -> None:
    r = promtool("check", "rules", "alerts.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_alert_rule_unit_tests_pass() -> None:
    r = promtool("test", "rules", "alerts.test.yml")
    assert r.returncode == 0, r.stdout + r.stderr
