"""The env file examples: every setting documented, valid as shipped, each service on its own role."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from deployfiles import DEPLOY
from pydantic import AliasChoices

from collector.config import Settings, load_settings

EXAMPLE = DEPLOY / "env.example"
EXAMPLES = sorted(DEPLOY.glob("*.example"))


def setting_names() -> set[str]:
    names = {"COLLECTOR_CONFIG"}
    for info in Settings.model_fields.values():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.add(str(alias.choices[0]))
    return names


def assignments(path: Path, *, commented: bool = False) -> dict[str, str]:
    pattern = r"^#?\s?([A-Z][A-Z0-9_]*)=(.*)$" if commented else r"^([A-Z][A-Z0-9_]*)=(.*)$"
    return dict(re.findall(pattern, path.read_text(), re.M))


@pytest.mark.parametrize("name", sorted(setting_names()))
def test_env_example_documents_the_setting(name: str) -> None:
    assert name in assignments(EXAMPLE, commented=True)


def test_env_example_names_only_real_settings() -> None:
    assert set(assignments(EXAMPLE, commented=True)) <= setting_names()


def test_env_example_as_shipped_is_a_valid_configuration(monkeypatch) -> None:
    for name in setting_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in assignments(EXAMPLE).items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.database_url == assignments(EXAMPLE)["DATABASE_URL"]


def test_commented_defaults_in_env_example_are_the_real_defaults(monkeypatch) -> None:
    for name in setting_names():
        monkeypatch.delenv(name, raising=False)
    defaults = load_settings()
    active = assignments(EXAMPLE)
    documented = {k: v for k, v in assignments(EXAMPLE, commented=True).items() if k not in active}
    for name, value in documented.items():
        if name in {"COLLECTOR_CONFIG", "IG_ACCOUNT_ID", "IG_API_URL"} or not value:
            continue
        monkeypatch.setenv(name, value)
        assert load_settings() == defaults, f"# {name}={value} is not the default"
        monkeypatch.delenv(name)


SERVICE_ROLES = [("env.example", "collector"), ("trading-bot.env.example", "trading_bot")]


@pytest.mark.parametrize("example,role", SERVICE_ROLES)
def test_each_service_connects_with_its_own_role(example: str, role: str) -> None:
    assert urlsplit(assignments(DEPLOY / example)["DATABASE_URL"]).username == role


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_hold_placeholders_never_real_secrets(example: Path) -> None:
    for name, value in assignments(example).items():
        secret = re.search(r"PASSWORD|API_KEY|USERNAME", name) or re.search(r"://[^@/]+:[^@/]+@", value)
        if secret:
            assert "CHANGE_ME" in value, f"{example.name}: {name}"


def test_metrics_listen_on_loopback_unless_configured(monkeypatch) -> None:
    monkeypatch.delenv("COLLECTOR_METRICS_HOST", raising=False)
    assert load_settings().metrics_host == "127.0.0.1"


BOT_EXAMPLE = DEPLOY / "trading-bot.env.example"


def bot_setting_names() -> set[str]:
    bot_config = pytest.importorskip("trading_bot.config", reason="trading_bot is not in this checkout yet")
    names = {"TRADING_BOT_CONFIG"}
    for info in bot_config.BotSettings.model_fields.values():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices) and str(alias.choices[0]).startswith("TRADING_BOT_"):
            names.add(str(alias.choices[0]))
    return names


def test_bot_env_example_documents_every_bot_setting() -> None:
    assert bot_setting_names() <= set(assignments(BOT_EXAMPLE, commented=True))


def test_bot_env_example_names_only_real_settings() -> None:
    assert set(assignments(BOT_EXAMPLE, commented=True)) <= bot_setting_names() | {"DATABASE_URL"}


def test_bot_commented_defaults_are_the_real_defaults(monkeypatch) -> None:
    bot_config = pytest.importorskip("trading_bot.config", reason="trading_bot is not in this checkout yet")
    for name in bot_setting_names() | setting_names():
        monkeypatch.delenv(name, raising=False)
    defaults = bot_config.load_bot_settings()
    active = assignments(BOT_EXAMPLE)
    documented = {k: v for k, v in assignments(BOT_EXAMPLE, commented=True).items() if k not in active}
    for name, value in documented.items():
        if name == "TRADING_BOT_CONFIG" or not value:
            continue
        monkeypatch.setenv(name, value)
        assert bot_config.load_bot_settings() == defaults, f"# {name}={value} is not the default"
        monkeypatch.delenv(name)
