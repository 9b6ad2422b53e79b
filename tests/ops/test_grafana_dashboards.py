"""The Grafana provisioning and dashboards in deploy/grafana: wired to the provisioned sources, complete."""

from __future__ import annotations

import re

import pytest
from deployfiles import (
    DATASOURCES_FILE,
    DEPLOY,
    POSTGRES_TYPES,
    dashboards,
    load_yaml,
    promql_queries,
    sql_queries,
)

BOARDS = dashboards()


def provisioned() -> dict[str, dict]:
    return {ds["uid"]: ds for ds in load_yaml(DATASOURCES_FILE)["datasources"]}


def test_the_two_dashboards_exist() -> None:
    assert {b["title"] for b in BOARDS.values()} == {"FX candles", "Collector health"}


def test_dashboard_uids_are_unique() -> None:
    uids = [b["uid"] for b in BOARDS.values()]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_panel_ids_are_unique_within_a_dashboard(name: str) -> None:
    ids = [p["id"] for p in BOARDS[name]["panels"]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_sql_queries_use_the_provisioned_timescaledb_source(name: str) -> None:
    sources = provisioned()
    for q in sql_queries(name, BOARDS[name]):
        assert q.datasource.get("uid") in sources, q.where
        assert sources[q.datasource["uid"]]["type"] in POSTGRES_TYPES, q.where


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_promql_queries_use_the_provisioned_prometheus_source(name: str) -> None:
    sources = provisioned()
    for q in promql_queries(name, BOARDS[name]):
        assert sources[q.datasource["uid"]]["type"] == "prometheus", q.where


def test_postgres_source_logs_in_as_the_read_only_role_with_a_password_from_the_environment() -> None:
    (pg,) = [ds for ds in provisioned().values() if ds["type"] in POSTGRES_TYPES]
    assert pg["user"] == "grafana_reader"
    assert pg["secureJsonData"]["password"] == "${GRAFANA_READER_PASSWORD}"


def test_postgres_source_has_timescaledb_enabled() -> None:
    (pg,) = [ds for ds in provisioned().values() if ds["type"] in POSTGRES_TYPES]
    assert pg["jsonData"]["timescaledb"] is True


def test_dashboard_provider_loads_the_dashboards_folder() -> None:
    provider = load_yaml(DEPLOY / "grafana/provisioning/dashboards/ig-fx.yml")["providers"][0]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/ig-fx"


def variables(name: str) -> dict[str, dict]:
    return {v["name"]: v for v in BOARDS[name]["templating"]["list"]}


def test_candles_pair_variable_lists_the_instruments() -> None:
    pair = variables("fx-candles")["pair"]
    assert pair["type"] == "query"
    assert re.search(r"FROM\s+instruments", pair["query"])


def test_candles_timeframe_variable_offers_every_indicator_timeframe() -> None:
    tf = variables("fx-candles")["timeframe"]
    assert [o["value"] for o in tf["options"]] == ["5m", "15m", "1h", "4h", "1d"]


def candle_panel() -> dict:
    (panel,) = [p for p in BOARDS["fx-candles"]["panels"] if p["type"] == "candlestick"]
    return panel


def test_candle_panel_reads_indicators_with_the_forming_bar() -> None:
    sql = candle_panel()["targets"][0]["rawSql"]
    assert re.search(r"indicators\('\$pair', '\$timeframe', .+, true\)", sql, re.S)


def test_candle_panel_overlays_ma200_and_the_ichimoku_cloud() -> None:
    panel = candle_panel()
    assert panel["options"]["includeAllFields"] is True
    fill = {
        o["matcher"]["options"]: p["value"]
        for o in panel["fieldConfig"]["overrides"]
        for p in o["properties"]
        if p["id"] == "custom.fillBelowTo"
    }
    assert fill == {"senkou_a": "senkou_b"}
    assert {"ma_200", "senkou_a", "senkou_b"} <= set(re.findall(r"\w+", panel["targets"][0]["rawSql"]))


HEALTH_METRICS = [
    "ig_collector_stream_connected",
    "ig_collector_stream_state",
    "ig_collector_ticks_accepted_total",
    "ig_collector_tick_age_seconds",
    "ig_collector_ticks_rejected_total",
    "ig_collector_db_write_seconds_bucket",
    "ig_collector_buffer_ticks",
    "ig_collector_stream_reconnects_total",
    "ig_collector_rest_allowance_remaining",
    "ig_collector_candle_close_lag_seconds_bucket",
    "ig_collector_repairs_pending",
]


@pytest.mark.parametrize("metric", HEALTH_METRICS)
def test_health_dashboard_shows(metric: str) -> None:
    exprs = " ".join(q.text for q in promql_queries("collector-health", BOARDS["collector-health"]))
    assert re.search(rf"\b{metric}\b", exprs)


def test_health_dashboard_shows_write_latency_p50_and_p99() -> None:
    exprs = [q.text for q in promql_queries("collector-health", BOARDS["collector-health"])]
    latency = [e for e in exprs if "ig_collector_db_write_seconds_bucket" in e]
    assert any("histogram_quantile(0.5," in e for e in latency)
    assert any("histogram_quantile(0.99," in e for e in latency)


def test_health_dashboard_has_a_newest_candle_per_pair_table_from_sql() -> None:
    tables = [p for p in BOARDS["collector-health"]["panels"] if p["type"] == "table"]
    assert any("FROM candles" in t["targets"][0]["rawSql"] and "instruments" in t["targets"][0]["rawSql"]
               for t in tables)  # fmt: skip
