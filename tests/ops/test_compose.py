"""deploy/compose.yaml and deploy/Dockerfile, validated without a Docker engine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from deployfiles import DEPLOY, ROOT, load_yaml

COMPOSE_FILE = DEPLOY / "compose.yaml"
SERVICES = {"timescaledb", "migrate", "collector", "trading-bot", "prometheus", "grafana"}
EXAMPLE_OF = {"ig-collector.env": "env.example"}  # the others are NAME.env.example
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY", re.I)


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(COMPOSE_FILE)


def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


def test_compose_defines_the_whole_stack(compose) -> None:
    assert set(services(compose)) == SERVICES


def test_database_is_the_full_timescaledb_edition_on_postgres_16(compose) -> None:
    image = services(compose)["timescaledb"]["image"]
    assert re.fullmatch(r"timescale/timescaledb:(latest|2\.[\d.]+)-pg16", image), image


def test_migrations_run_once_before_the_services_that_need_the_schema(compose) -> None:
    svc = services(compose)
    assert svc["migrate"]["restart"] == "no"
    assert "ig-collector migrate" in " ".join(svc["migrate"]["command"])
    for name in ("collector", "trading-bot", "grafana"):
        assert svc[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name


def test_migrate_also_sets_the_role_passwords(compose) -> None:
    assert "deploy/set-db-passwords.sh" in " ".join(services(compose)["migrate"]["command"])


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_a_healthcheck_or_is_one_shot(compose, name: str) -> None:
    svc = services(compose)[name]
    assert "healthcheck" in svc or svc.get("restart") == "no"


@pytest.mark.parametrize("name", sorted(SERVICES - {"migrate"}))
def test_long_running_services_restart(compose, name: str) -> None:
    assert services(compose)[name]["restart"] == "unless-stopped"


def test_collector_and_bot_run_their_commands(compose) -> None:
    svc = services(compose)
    assert svc["collector"]["command"] == ["ig-collector", "run"]
    assert svc["trading-bot"]["command"] == ["trading-bot", "run"]


def test_bot_env_files_put_its_own_database_url_last(compose) -> None:
    assert services(compose)["trading-bot"]["env_file"] == ["ig-collector.env", "trading-bot.env"]


def test_build_context_and_dockerfile_exist(compose) -> None:
    build = services(compose)["collector"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).is_file()


def env_files(compose: dict) -> set[str]:
    return {f for svc in services(compose).values() for f in svc.get("env_file", [])}


def test_every_env_file_exists_or_is_made_from_a_committed_example(compose) -> None:
    for name in env_files(compose):
        example = DEPLOY / EXAMPLE_OF.get(name, f"{name}.example")
        assert (DEPLOY / name).is_file() or example.is_file(), f"{name}: no {example.name} to make it from"


def test_real_env_files_are_ignored_by_git(compose) -> None:
    patterns = (DEPLOY / ".gitignore").read_text().split()
    assert "*.env" in patterns


def bind_mounts(compose: dict) -> list[tuple[str, str]]:
    out = []
    for svc in services(compose).values():
        for volume in svc.get("volumes", []):
            source, target = volume.split(":")[:2]
            out.append((source, target))
    return out


def test_every_mounted_config_file_exists(compose) -> None:
    for source, _ in bind_mounts(compose):
        if source.startswith("."):
            path = DEPLOY / source
            assert path.exists() or path.name in env_files(compose), source


def test_named_volumes_are_declared(compose) -> None:
    named = {source for source, _ in bind_mounts(compose) if not source.startswith((".", "/"))}
    assert named and named <= set(compose["volumes"])


def test_database_and_grafana_and_prometheus_keep_their_data_in_volumes(compose) -> None:
    targets = {target for _, target in bind_mounts(compose)}
    assert {"/var/lib/postgresql/data", "/prometheus", "/var/lib/grafana"} <= targets


def test_grafana_gets_the_provisioning_and_the_dashboards_where_the_provider_looks(compose) -> None:
    provider = load_yaml(DEPLOY / "grafana/provisioning/dashboards/ig-fx.yml")["providers"][0]
    mounts = dict(bind_mounts(compose))
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]


def test_grafana_gets_every_variable_its_data_sources_expand(compose) -> None:
    text = (DEPLOY / "grafana/provisioning/datasources/ig-fx.yml").read_text()
    needed = set(re.findall(r"\$\{(\w+)\}", re.sub(r"#[^\n]*", "", text)))
    grafana = services(compose)["grafana"]
    example = (DEPLOY / "grafana.env.example").read_text()
    provided = set(grafana["environment"]) | set(re.findall(r"^(\w+)=", example, re.M))
    assert needed <= provided


def test_prometheus_loads_the_compose_config_and_its_rules(compose) -> None:
    mounts = dict(bind_mounts(compose))
    assert mounts["./prometheus/prometheus.compose.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["./prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_no_secret_is_written_inline(compose, name: str) -> None:
    env = services(compose)[name].get("environment", {})
    assert not [k for k in env if SECRET_NAME.search(k)], "secrets belong in the env files"


def test_no_url_in_the_compose_file_carries_a_password() -> None:
    assert not re.search(r"://[^/\s:@]+:[^@\s/]+@", COMPOSE_FILE.read_text())


def test_only_loopback_ports_are_published(compose) -> None:
    ports = [p for svc in services(compose).values() for p in svc.get("ports", [])]
    assert ports and all(p.startswith("127.0.0.1:") for p in ports)


def test_collector_metrics_stay_inside_the_compose_network(compose) -> None:
    assert "ports" not in services(compose)["collector"]


DOCKERFILE = DEPLOY / "Dockerfile"


def test_app_image_is_python_3_11_slim_with_the_package_installed() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"pip install (-e )?\.", text)


def test_app_image_runs_as_an_unprivileged_user() -> None:
    assert re.search(r"^USER igfx$", DOCKERFILE.read_text(), re.M)


def copy_sources() -> list[str]:
    sources = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            sources += line.split()[1:-1]
    return sources


@pytest.mark.parametrize("source", copy_sources())
def test_every_file_the_dockerfile_copies_exists(source: str) -> None:
    assert (ROOT / source).exists()


@pytest.mark.parametrize("source", copy_sources())
def test_the_dockerignore_lets_every_copied_file_through(source: str) -> None:
    allowed = [
        line[1:].rstrip("/")
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    assert Path(source).as_posix().rstrip("/") in allowed
