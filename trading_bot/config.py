"""The bot's typed settings: the shared names of `collector.config.Settings` plus its own.

`DATABASE_URL` and `IG_*` mean the same for the collector and the bot (docs/design.md §8), so
they are inherited rather than redefined. The bot's own tunables are `TRADING_BOT_*` in the
environment or plain keys in a TOML file (`--config FILE` or `TRADING_BOT_CONFIG`); the
environment wins. Everything is validated at start and each error names the setting as the
user writes it, so a typo stops the bot before it trades, not at the first signal.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from collector import pairs as fx
from collector.config import ConfigError, Settings

__all__ = ["BOT_TIMEFRAMES", "BotSettings", "ConfigError", "load_bot_settings"]

# What indicators() serves: 5m/15m from candles, 1h/4h/1d from the rollups.
BOT_TIMEFRAMES = ("5m", "15m", "1h", "4h", "1d")


def _bot(env: str, key: str, default: Any, **constraints: Any) -> Any:
    """A bot setting: `TRADING_BOT_<ENV>` in the environment, `key` (the field name) in TOML."""
    return Field(default=default, validation_alias=AliasChoices(f"TRADING_BOT_{env}", key), **constraints)


class BotSettings(Settings):
    """Collector settings (shared names) plus the bot's. Frozen: pass it around, never mutate."""

    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", populate_by_name=True, frozen=True
    )

    # --- what to trade --------------------------------------------------------------------
    bot_pairs: Annotated[tuple[str, ...], NoDecode] = _bot("PAIRS", "bot_pairs", fx.PAIRS)
    bot_timeframes: Annotated[tuple[str, ...], NoDecode] = _bot("TIMEFRAMES", "bot_timeframes", ("5m", "15m"))
    strategy: Literal["ichimoku_ma200"] = _bot("STRATEGY", "strategy", "ichimoku_ma200")
    displacement: int = _bot("DISPLACEMENT", "displacement", 26, ge=1, le=200)

    # --- runner ---------------------------------------------------------------------------
    poll_interval_s: float = _bot("POLL_INTERVAL_S", "poll_interval_s", 30.0, gt=0, le=3600)
    stale_margin_s: float = _bot("STALE_MARGIN_S", "stale_margin_s", 120.0, ge=0, le=86_400)
    pool_max_size: int = _bot("POOL_MAX_SIZE", "pool_max_size", 4, ge=1, le=64)

    # --- REST (freshness fallback and warm-up), within the budget shared with the collector ---
    rest_fallback: bool = _bot("REST_FALLBACK", "rest_fallback", True)
    bot_rest_reserve_points: int = _bot("REST_RESERVE_POINTS", "bot_rest_reserve_points", 2000, ge=0)
    rest_max_bars: int = _bot("REST_MAX_BARS", "rest_max_bars", 300, ge=1, le=5000)
    warmup_target_bars: int = _bot("WARMUP_TARGET_BARS", "warmup_target_bars", 200, ge=77, le=5000)

    # --- orders: dry run unless explicitly enabled ------------------------------------------
    live_orders: bool = _bot("LIVE_ORDERS", "live_orders", False)
    order_size: float = _bot("ORDER_SIZE", "order_size", 1.0, gt=0)
    max_size: float = _bot("MAX_SIZE", "max_size", 1.0, gt=0)
    max_open_positions: int = _bot("MAX_OPEN_POSITIONS", "max_open_positions", 3, ge=0, le=100)
    stop_distance_pips: float = _bot("STOP_DISTANCE_PIPS", "stop_distance_pips", 30.0, gt=0)
    limit_distance_pips: float | None = _bot("LIMIT_DISTANCE_PIPS", "limit_distance_pips", None, gt=0)
    currency_code: str = _bot("CURRENCY_CODE", "currency_code", "USD", pattern=r"^[A-Z]{3}$")
    max_signal_age_bars: int = _bot("MAX_SIGNAL_AGE_BARS", "max_signal_age_bars", 1, ge=0, le=100)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs (see load_bot_settings), which rank below the env.
        return (env_settings, init_settings)

    @field_validator("bot_pairs", mode="before")
    @classmethod
    def _bot_pairs(cls, v: Any) -> tuple[str, ...]:
        items = [p for p in (v.split(",") if isinstance(v, str) else v) if str(p).strip()]
        if not items:
            raise ValueError("at least one pair is required")
        return tuple(dict.fromkeys(fx.validate_pair(str(p)) for p in items))

    @field_validator("bot_timeframes", mode="before")
    @classmethod
    def _bot_timeframes(cls, v: Any) -> tuple[str, ...]:
        items = [t.strip() for t in (v.split(",") if isinstance(v, str) else v) if str(t).strip()]
        if not items:
            raise ValueError("at least one timeframe is required")
        bad = [t for t in items if t not in BOT_TIMEFRAMES]
        if bad:
            raise ValueError(f"{', '.join(bad)} not served by indicators(); use {', '.join(BOT_TIMEFRAMES)}")
        return tuple(sorted(dict.fromkeys(items), key=BOT_TIMEFRAMES.index))

    @model_validator(mode="after")
    def _limits(self) -> BotSettings:
        if self.order_size > self.max_size:
            raise ValueError(
                f"TRADING_BOT_ORDER_SIZE ({self.order_size}) exceeds TRADING_BOT_MAX_SIZE ({self.max_size})"
            )
        if self.live_orders and not (self.ig_username and self.ig_password and self.ig_api_key):
            raise ValueError("TRADING_BOT_LIVE_ORDERS=true needs IG_USERNAME, IG_PASSWORD and IG_API_KEY")
        return self

    @property
    def can_use_rest(self) -> bool:
        """REST needs credentials; without them the bot only reads the database."""
        return bool(self.ig_username and self.ig_password and self.ig_api_key)


def setting_name(loc: str) -> str:
    """A setting as the user writes it (environment name and TOML key), from an error location,
    which is a field name or whichever alias the value came in under."""
    for name, info in BotSettings.model_fields.items():
        alias = info.validation_alias
        choices = [str(c).lower() for c in alias.choices] if isinstance(alias, AliasChoices) else []
        if loc.lower() == name or loc.lower() in choices:
            if not choices:
                return name.upper()
            env, key = alias.choices[0], alias.choices[-1]  # type: ignore[union-attr]
            return f"{env} (TOML key {key})" if str(env).lower() != str(key).lower() else str(env)
    return loc


def _toml(path_text: str) -> dict[str, Any]:
    path = Path(path_text)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


def load_bot_settings(config_file: str | Path | None = None, **overrides: Any) -> BotSettings:
    """Build and validate the bot's settings; ConfigError names every bad setting.

    Sources, strongest first: `overrides` (field names; for tests and command-line flags), the
    environment, the bot's TOML file (`config_file`, else `TRADING_BOT_CONFIG`), the collector's
    TOML file (`COLLECTOR_CONFIG`, for the shared IG settings), the defaults.
    """
    data: dict[str, Any] = {}
    if shared := os.environ.get("COLLECTOR_CONFIG"):
        data.update(_toml(shared))
    own = str(config_file) if config_file is not None else os.environ.get("TRADING_BOT_CONFIG")
    if own:
        data.update(_toml(own))
    try:
        settings = BotSettings(**data)
        if overrides:
            # model_validate skips the sources, so overrides win over the environment.
            settings = BotSettings.model_validate({**settings.model_dump(), **overrides})
        return settings
    except ValidationError as e:
        lines = []
        for err in e.errors():
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {setting_name(str(err['loc'][0]))}: {msg}" if err["loc"] else f"  {msg}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
