"""Prometheus scrape config and alert rules in deploy/prometheus: promtool-checked, on real metric names."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator

import pytest
from deployfiles import PROMETHEUS_DIR, alert_rules, dashboards, load_yaml, promql_queries
from prometheus_client.parser import text_string_to_metric_families

from collector import metrics as collector_metrics
from collector.config import Settings

OUR_METRIC = re.compile(r"\b(?:ig_collector|process)_[a-z0-9_]+\b")
SELECTOR = re.compile(r"\b((?:ig_collector|process)_[a-z0-9_]+)\{([^}]*)\}")
# Every sample name a metric family of each type can expose.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "summary": ("", "_sum", "_count", "_created"),
}
VOCABULARY = {
    "reason": set(collector_metrics.REJECT_REASONS),
    "state": set(collector_metrics.STREAM_STATES),
    "cause": set(collector_metrics.RECONNECT_CAUSES),
    "kind": set(collector_metrics.CANDLE_KINDS),
    "outcome": {"rest", "empty", "unrecoverable", "corrected", "dropped"},
}


def test_server_config_scrapes_the_collector_default_metrics_address() -> None:
    settings = Settings()
    job = scrape_job("prometheus.yml")
    assert job["static_configs"][0]["targets"] == [f"{settings.metrics_host}:{settings.metrics_port}"]


def test_compose_config_scrapes_the_collector_by_service_name() -> None:
    compose = load_yaml(PROMETHEUS_DIR.parent / "compose.yaml")
    host, _, port = scrape_job("prometheus.compose.yml")["static_configs"][0]["targets"][0].partition(":")
    assert host in compose["services"]
    assert int(port) == Settings().metrics_port


def scrape_job(config: str) -> dict:
    jobs = load_yaml(PROMETHEUS_DIR / config)["scrape_configs"]
    return next(j for j in jobs if j["job_name"] == "ig-collector")


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.compose.yml"])
def test_config_loads_the_alert_rules(config: str) -> None:
    assert load_yaml(PROMETHEUS_DIR / config)["rule_files"] == ["alerts.yml"]


def test_the_issue_s_alerts_are_all_there() -> None:
    names = {r["alert"] for r in alert_rules()}
    assert {
        "IgCollectorDown",
        "IgStreamDisconnected",
        "IgPairStale",
        "IgDatabaseWriteErrors",
        "IgDatabaseDown",
        "IgWriteBufferFilling",
        "IgRestAllowanceLow",
        "IgRestAllowanceExhausted",
        "IgCandleCloseLate",
        "IgTicksRejected",
        "IgRepairsPendingGrowing",
        "IgRepairsUnrecoverable",
    } <= names


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_says_what_happened_and_what_to_do(rule: dict) -> None:
    assert rule["labels"]["severity"] in {"critical", "warning"}
    assert rule["annotations"]["summary"].strip()
    assert len(rule["annotations"]["description"]) > 80


@pytest.fixture(scope="module")
def exposition() -> Iterator[dict[str, tuple[str, set[str]]]]:
    """The collector's registry served over HTTP on a free loopback port, parsed as Prometheus would."""
    m = collector_metrics.Metrics()
    server, thread = m.serve("127.0.0.1", 0)
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    families = {}
    for family in text_string_to_metric_families(text):
        names = {family.name + s for s in SUFFIXES[family.type]} | {s.name for s in family.samples}
        families[family.name] = (family.type, names)
    yield families


def referenced_queries() -> list[tuple[str, str]]:
    out = [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()]
    for name, board in dashboards().items():
        out += [(q.where, q.text) for q in promql_queries(name, board)]
    return out


def test_alerts_and_dashboards_reference_collector_metrics() -> None:
    assert len({m for _, expr in referenced_queries() for m in OUR_METRIC.findall(expr)}) >= 20


@pytest.mark.parametrize("where,expr", referenced_queries(), ids=[w for w, _ in referenced_queries()])
def test_every_referenced_metric_is_in_the_collector_exposition(exposition, where: str, expr: str) -> None:
    exposed = set().union(*(names for _, names in exposition.values()))
    missing = sorted(set(OUR_METRIC.findall(expr)) - exposed)
    assert missing == [], f"{where} uses metrics the collector does not expose"


def labels_of() -> dict[str, set[str]]:
    """Declared label names of every collector metric, by each sample name it can expose."""
    m = collector_metrics.Metrics()
    out: dict[str, set[str]] = {}
    for attr in vars(m).values():
        name, labels = getattr(attr, "_name", None), getattr(attr, "_labelnames", None)
        if name is None or labels is None:
            continue
        for suffix in ("", "_total", "_bucket", "_sum", "_count", "_info"):
            out[name + suffix] = set(labels) | ({"le"} if suffix == "_bucket" else set())
    return out


@pytest.mark.parametrize("where,expr", referenced_queries(), ids=[w for w, _ in referenced_queries()])
def test_label_matchers_use_the_metric_s_labels_and_values(where: str, expr: str) -> None:
    declared = labels_of()
    for metric, matchers in SELECTOR.findall(expr):
        for label, _, value in re.findall(r'(\w+)\s*(=~|!=|!~|=)\s*"([^"]*)"', matchers):
            if label in {"job", "instance"}:
                continue
            assert label in declared.get(metric, set()), f"{where}: {metric} has no label {label}"
            if label in VOCABULARY and not re.search(r"[.*+|]", value):
                assert value in VOCABULARY[label], f"{where}: {label}={value!r} is never exposed"
