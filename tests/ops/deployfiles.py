"""Readers for the files under deploy/ that several ops tests check: dashboards, alert rules, compose.

Also a faithful-enough expansion of Grafana's PostgreSQL macros and template variables, so a
dashboard's SQL can be run against a real database as Grafana would send it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD_DIR = DEPLOY / "grafana" / "dashboards"
PROMETHEUS_DIR = DEPLOY / "prometheus"
DATASOURCES_FILE = DEPLOY / "grafana" / "provisioning" / "datasources" / "ig-fx.yml"

POSTGRES_TYPES = {"grafana-postgresql-datasource", "postgres"}


def load_yaml(path: Path) -> Any:
    """PyYAML from the venv, else Debian's python3-yaml through the system Python, else skip."""
    try:
        import yaml
    except ImportError:
        return _load_yaml_with_system_python(path)
    return yaml.safe_load(path.read_text())


def _load_yaml_with_system_python(path: Path) -> Any:
    code = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"
    python = shutil.which("python3", path="/usr/bin:/bin")
    cmd = [python or "python3", "-c", code]
    r = subprocess.run(cmd, input=path.read_text(), capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        pytest.skip("reading deploy/*.yml needs PyYAML (pip install PyYAML, or apt-get install python3-yaml)")
    return json.loads(r.stdout)


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


@dataclass(frozen=True)
class Query:
    where: str  # "dashboard: panel title (refId)", for test ids and messages
    text: str
    datasource: Mapping[str, Any]
    panel_type: str = ""


def _walk(node: Any, panel: Mapping[str, Any] | None = None) -> Iterator[tuple[Mapping[str, Any], Any]]:
    if isinstance(node, dict):
        if "gridPos" in node and "type" in node:
            panel = node
        yield panel or {}, node
        for value in node.values():
            yield from _walk(value, panel)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value, panel)


def _datasource_of(target: Mapping[str, Any], panel: Mapping[str, Any]) -> Mapping[str, Any]:
    return target.get("datasource") or panel.get("datasource") or {}


def sql_queries(name: str, board: Mapping[str, Any]) -> list[Query]:
    """Every SQL text Grafana runs for this dashboard: panel targets, annotations, query variables."""
    out: list[Query] = []
    for panel, node in _walk({k: v for k, v in board.items() if k != "templating"}):
        if isinstance(node.get("rawSql"), str):
            title = panel.get("title") or node.get("name") or "annotation"
            where = f"{name}: {title} ({node.get('refId', '-')})"
            out.append(Query(where, node["rawSql"], _datasource_of(node, panel), panel.get("type", "")))
    for var in board.get("templating", {}).get("list", []):
        ds = var.get("datasource") or {}
        if var.get("type") == "query" and ds.get("type") in POSTGRES_TYPES:
            text = var["query"] if isinstance(var["query"], str) else var["query"]["rawSql"]
            out.append(Query(f"{name}: variable ${var['name']}", text, ds, "variable"))
    return out


def promql_queries(name: str, board: Mapping[str, Any]) -> list[Query]:
    out = []
    for panel, node in _walk(board):
        if isinstance(node.get("expr"), str):
            where = f"{name}: {panel.get('title', '?')} ({node.get('refId', '-')})"
            out.append(Query(where, node["expr"], _datasource_of(node, panel), panel.get("type", "")))
    return out


def alert_rules() -> list[dict[str, Any]]:
    doc = load_yaml(PROMETHEUS_DIR / "alerts.yml")
    return [rule for group in doc["groups"] for rule in group["rules"]]


# --- Grafana's PostgreSQL macros ---------------------------------------------------------------


def _literal(t: dt.datetime) -> str:
    return "'" + t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") + "'"


def _seconds(interval: str) -> int:
    m = re.fullmatch(r"'?(\d+)(s|m|h|d)'?", interval.strip())
    if not m:
        raise ValueError(f"unsupported $__timeGroup interval {interval!r}")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def expand_grafana_sql(
    sql: str,
    time_from: dt.datetime,
    time_to: dt.datetime,
    variables: Mapping[str, str],
) -> str:
    """SQL as Grafana's PostgreSQL data source sends it for this time range and these variable values."""
    frm, to = _literal(time_from), _literal(time_to)

    def group(m: re.Match[str], alias: bool) -> str:
        col, interval = (a.strip() for a in m.group(1).split(",")[:2])
        s = _seconds(interval)
        return f"floor(extract(epoch from {col})/{s})*{s}" + (' AS "time"' if alias else "")

    macros: list[tuple[str, Any]] = [
        (r"\$__timeFilter\(([^)]+)\)", lambda m: f"{m.group(1).strip()} BETWEEN {frm} AND {to}"),
        (r"\$__timeFrom\(\)", lambda m: frm),
        (r"\$__timeTo\(\)", lambda m: to),
        (r"\$__timeGroupAlias\(([^)]+)\)", lambda m: group(m, True)),
        (r"\$__timeGroup\(([^)]+)\)", lambda m: group(m, False)),
        (r"\$__timeEpoch\(([^)]+)\)", lambda m: f'extract(epoch from {m.group(1).strip()}) AS "time"'),
        (r"\$__time\(([^)]+)\)", lambda m: f'{m.group(1).strip()} AS "time"'),
        (
            r"\$__unixEpochFilter\(([^)]+)\)",
            lambda m: (
                f"{m.group(1).strip()} >= {int(time_from.timestamp())}"
                f" AND {m.group(1).strip()} <= {int(time_to.timestamp())}"
            ),
        ),
        (r"\$__unixEpochFrom\(\)", lambda m: str(int(time_from.timestamp()))),
        (r"\$__unixEpochTo\(\)", lambda m: str(int(time_to.timestamp()))),
    ]
    for pattern, repl in macros:
        sql = re.sub(pattern, repl, sql)
    for var, value in variables.items():
        sql = re.sub(r"\$\{" + var + r"(?::\w+)?\}|\[\[" + var + r"\]\]|\$" + var + r"\b", value, sql)
    return sql


def unexpanded(sql: str) -> list[str]:
    """Grafana macros or variables left in expanded SQL (outside comments)."""
    code = re.sub(r"--[^\n]*", "", sql)
    return re.findall(r"\$\{?\w+|\[\[\w+\]\]", code)
