"""docs/operations.md stays in step with what deploy/ ships."""

from __future__ import annotations

import re

import pytest
from deployfiles import DEPLOY, ROOT, alert_rules

DOC = (ROOT / "docs" / "operations.md").read_text()


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_every_alert_has_a_row_with_its_severity_and_what_to_do(rule: dict) -> None:
    row = re.search(rf"^\| {rule['alert']} \({rule['labels']['severity']}\) \|(.+)\|(.+)\|$", DOC, re.M)
    assert row and row.group(2).strip()


def test_alert_table_has_no_alert_the_rules_lack() -> None:
    documented = set(re.findall(r"^\| (Ig\w+) \(", DOC, re.M))
    assert documented == {r["alert"] for r in alert_rules()}


@pytest.mark.parametrize("path", sorted(p.name for p in DEPLOY.glob("*.example")))
def test_every_env_example_is_part_of_the_install(path: str) -> None:
    assert path in DOC


@pytest.mark.parametrize("unit", ["ig-collector.service", "trading-bot.service"])
def test_units_are_installed_by_the_guide(unit: str) -> None:
    assert f"deploy/systemd/{unit}" in DOC
