"""One typed configuration object, from the environment and an optional TOML file.

The names docs/design.md §8 fixes (`DATABASE_URL`, `IG_*`) are read as they are; the collector's
own tunables are `COLLECTOR_*` in the environment or plain keys in the TOML file
(`COLLECTOR_CONFIG` or `--config` names it). The environment wins over the file. Everything is
validated at start and an error names the setting, so a typo fails fast instead of at 3 a.m.
Secrets are `SecretStr`: they print as `**********` in reprs and logs.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from . import pairs as fx
from . import timeframes as tfs
from .clock import parse_clock

IG_URLS = {"demo": "https://demo-api.ig.com/gateway/deal", "live": "https://api.ig.com/gateway/deal"}


def _env(name: str, *more: str, default: Any = None) -> Any:
    """Accept the environment name and the plain TOML key (the field name)."""
    return Field(default=default, validation_alias=AliasChoices(name, *more))


class ConfigError(ValueError):
    """Invalid configuration; the message names each bad setting and why."""


class ContractSettings(BaseSettings):
    """The names docs/design.md §8 fixes (`DATABASE_URL`, `IG_*`), shared with the bot, and
    their checks; `Settings` adds the collector's own tunables."""

    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", populate_by_name=True, frozen=True
    )

    database_url: str | None = Field(default=None, validation_alias=AliasChoices("DATABASE_URL", "database_url"))
    ig_username: str | None = _env("IG_USERNAME", "ig_username", "username")
    ig_password: SecretStr | None = _env("IG_PASSWORD", "ig_password", "password")
    ig_api_key: SecretStr | None = _env("IG_API_KEY", "ig_api_key", "api_key")
    ig_acc_type: Literal["demo", "live"] = _env("IG_ACC_TYPE", "ig_acc_type", "acc_type")
    ig_account_id: str | None = _env("IG_ACCOUNT_ID", "ig_account_id", "account_id")
    ig_api_url: str | None = _env("IG_API_URL", "ig_api_url", "api_url")
    ig_api_version: Literal["2", "3"] = _env("IG_API_VERSION", "ig_api_version", "api_version")
    ig_epic_suffix: str = _env("IG_EPIC_SUFFIX", "ig_epic_suffix", "epic_suffix")

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str | None) -> str | None:
        """Whatever libpq accepts, multi-host failover URLs included
        (`postgresql://u@h1:5432,h2:5432/db?target_session_attrs=read-write`); parsed by libpq
        itself, so a typo fails at start rather than at the first connection."""
        if v in (None, ""):
            return v
        try:
            conninfo_to_dict(v)
        except psycopg.ProgrammingError as e:
            raise ValueError(f"not a PostgreSQL connection URL or conninfo: {str(e).strip()}") from None
        return v

    @field_validator("ig_epic_suffix")
    @classmethod
    def _suffix(cls, v: str) -> str:
        v = v.strip()
        if not v.startswith(".") or not v.endswith(".IP"):
            raise ValueError(f"epic suffix must look like .CFD.IP, .MINI.IP or .TODAY.IP, got {v!r}")
        return v

    @field_validator("ig_api_url")
    @classmethod
    def _api_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return v.rstrip("/") if v else v

    @model_validator(mode="after")
    def _v3_needs_account(self) -> ContractSettings:
        if self.ig_api_version == "3" and not self.ig_account_id:
            raise ValueError("IG_ACCOUNT_ID is required when IG_API_VERSION=3")
        return self

    @property
    def rest_url(self) -> str:
        return self.ig_api_url or IG_URLS[self.ig_acc_type]

    def epic(self, pair: str) -> str:
        return fx.epic_for(pair, self.ig_epic_suffix)


class Settings(ContractSettings):
    # --- what to collect ------------------------------------------------------------------
    pairs: Annotated[tuple[str, ...], NoDecode] = _env("COLLECTOR_PAIRS", "pairs")
    timeframes: Annotated[tuple[str, ...], NoDecode] = _env("COLLECTOR_TIMEFRAMES", "timeframes")

    # --- candle rules (docs/design.md §4) --------------------------------------------------
    close_grace_ms: int = Field(
        default=1500,
        ge=0,
        le=60_000,
        validation_alias=AliasChoices("COLLECTOR_CLOSE_GRACE_MS", "close_grace_ms"),
    )
    lateness_ms: int = Field(
        default=60_000,
        ge=0,
        le=3_600_000,
        validation_alias=AliasChoices("COLLECTOR_LATENESS_MS", "lateness_ms"),
    )
    future_tolerance_ms: int = Field(
        default=30_000,
        ge=0,
        validation_alias=AliasChoices("COLLECTOR_FUTURE_TOLERANCE_MS", "future_tolerance_ms"),
    )
    forming_interval_s: float = Field(
        default=0.05,
        gt=0,
        le=60,
        description=(
            "how often the pipeline hands the changed forming candles to the writer, which writes "
            "them as soon as it is free (changes arriving during a write go in the next one)"
        ),
        validation_alias=AliasChoices("COLLECTOR_FORMING_INTERVAL_S", "forming_interval_s"),
    )

    # --- writer ---------------------------------------------------------------------------
    buffer_max_ticks: int = Field(
        default=2_000_000,
        ge=1000,
        validation_alias=AliasChoices("COLLECTOR_BUFFER_MAX_TICKS", "buffer_max_ticks"),
    )
    db_retry_max_s: float = Field(
        default=30.0, gt=0, validation_alias=AliasChoices("COLLECTOR_DB_RETRY_MAX_S", "db_retry_max_s")
    )
    ticks_compress_after: str = Field(
        default="7 days",
        validation_alias=AliasChoices("COLLECTOR_TICKS_COMPRESS_AFTER", "ticks_compress_after"),
    )
    ticks_retention: str = Field(
        default="180 days", validation_alias=AliasChoices("COLLECTOR_TICKS_RETENTION", "ticks_retention")
    )

    # --- stream supervision ---------------------------------------------------------------
    stale_after_s: float = Field(
        default=120.0, gt=0, validation_alias=AliasChoices("COLLECTOR_STALE_AFTER_S", "stale_after_s")
    )
    reconnect_max_backoff_s: float = Field(
        default=60.0,
        gt=0,
        validation_alias=AliasChoices("COLLECTOR_RECONNECT_MAX_BACKOFF_S", "reconnect_max_backoff_s"),
    )
    session_keepalive_s: float = Field(
        default=3600.0,
        gt=0,
        validation_alias=AliasChoices("COLLECTOR_SESSION_KEEPALIVE_S", "session_keepalive_s"),
    )

    # --- REST fallback ----------------------------------------------------------------------
    rest_reserve_points: int = Field(
        default=1000,
        ge=0,
        validation_alias=AliasChoices("COLLECTOR_REST_RESERVE_POINTS", "rest_reserve_points"),
    )
    backfill_max_age_s: float = Field(
        default=3 * 86400,
        gt=0,
        validation_alias=AliasChoices("COLLECTOR_BACKFILL_MAX_AGE_S", "backfill_max_age_s"),
    )
    # IG allows about 30 non-trading requests a minute per account; tests against the
    # simulator's fast clock raise this.
    rest_requests_per_minute: int = Field(
        default=20,
        ge=1,
        le=6000,
        validation_alias=AliasChoices("COLLECTOR_REST_REQUESTS_PER_MINUTE", "rest_requests_per_minute"),
    )
    backfill_enabled: bool = Field(
        default=True, validation_alias=AliasChoices("COLLECTOR_BACKFILL_ENABLED", "backfill_enabled")
    )
    # Timeframes whose partial buckets are repaired from REST; default all of COLLECTOR_TIMEFRAMES.
    # A timeframe IG's REST does not serve must be left out here explicitly: its partial buckets
    # are then reported as unrecoverable instead of waiting for a repair that cannot come.
    backfill_timeframes: Annotated[tuple[str, ...] | None, NoDecode] = _env(
        "COLLECTOR_BACKFILL_TIMEFRAMES", "backfill_timeframes"
    )
    # Where a stop that cannot reach the database leaves the repair flags it could not commit;
    # the next start commits them first. systemd's StateDirectory= sets $STATE_DIRECTORY.
    state_dir: str | None = _env("COLLECTOR_STATE_DIR", "state_dir")
    # How often the running collector audits the last 24 hours (`ig-collector audit`).
    audit_interval_s: float = Field(
        default=3600.0, gt=0, validation_alias=AliasChoices("COLLECTOR_AUDIT_INTERVAL_S", "audit_interval_s")
    )

    # --- operations -------------------------------------------------------------------------
    metrics_host: str = Field(
        default="127.0.0.1", validation_alias=AliasChoices("COLLECTOR_METRICS_HOST", "metrics_host")
    )
    metrics_port: int = Field(
        default=9108, ge=0, le=65535, validation_alias=AliasChoices("COLLECTOR_METRICS_PORT", "metrics_port")
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", validation_alias=AliasChoices("COLLECTOR_LOG_LEVEL", "log_level")
    )
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", validation_alias=AliasChoices("COLLECTOR_LOG_FORMAT", "log_format")
    )

    # --- leadership (docs/design.md, "Leadership and fencing") -------------------------------
    # Every `ig-collector run` against one database takes part in the election; the name must be
    # unique per collector (it is the holder the database fences with).
    node_name: str | None = Field(
        default=None, min_length=1, validation_alias=AliasChoices("COLLECTOR_NODE_NAME", "node_name")
    )
    lease_s: float = Field(default=10.0, ge=3, le=120, validation_alias=AliasChoices("COLLECTOR_LEASE_S", "lease_s"))

    # "system" in production; a linear clock ("linear:origin_ms=..,wall_origin_ms=..,speed=..")
    # runs the collector on a market clock that is not the wall's (a fast simulated market).
    clock: str = Field(default="system", validation_alias=AliasChoices("COLLECTOR_CLOCK", "clock"))

    def __init__(self, **data: Any) -> None:
        data.setdefault("ig_acc_type", "demo")
        data.setdefault("ig_api_version", "2")
        data.setdefault("ig_epic_suffix", fx.DEFAULT_EPIC_SUFFIX)
        data.setdefault("pairs", fx.PAIRS)
        data.setdefault("timeframes", ("5m", "15m"))
        super().__init__(**data)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = os.environ.get("COLLECTOR_CONFIG")
        sources: list[PydanticBaseSettingsSource] = [env_settings]
        if toml:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml)))
        # init kwargs are defaults here (set in __init__), so they come last.
        sources.append(init_settings)
        return tuple(sources)

    @field_validator("pairs", mode="before")
    @classmethod
    def _pairs(cls, v: Any) -> tuple[str, ...]:
        items = [p for p in (v.split(",") if isinstance(v, str) else v) if str(p).strip()]
        if not items:
            raise ValueError("at least one pair is required")
        out = tuple(dict.fromkeys(fx.validate_pair(str(p)) for p in items))
        return out

    @field_validator("timeframes", mode="before")
    @classmethod
    def _timeframes(cls, v: Any) -> tuple[str, ...]:
        items = [t.strip() for t in (v.split(",") if isinstance(v, str) else v) if str(t).strip()]
        if not items:
            raise ValueError("at least one timeframe is required")
        for t in items:
            tfs.minutes(t)
        return tuple(sorted(dict.fromkeys(items), key=tfs.minutes))

    @field_validator("backfill_timeframes", mode="before")
    @classmethod
    def _backfill_timeframes(cls, v: Any) -> tuple[str, ...] | None:
        items = [t.strip() for t in (v.split(",") if isinstance(v, str) else v or ()) if str(t).strip()]
        if not items:
            return None  # unset or empty: every configured timeframe
        for t in items:
            tfs.minutes(t)
        return tuple(dict.fromkeys(items))

    @model_validator(mode="after")
    def _backfill_served(self) -> Settings:
        if not self.backfill_enabled:
            return self
        chosen = self.timeframes if self.backfill_timeframes is None else self.backfill_timeframes
        extra = [t for t in chosen if t not in self.timeframes]
        if extra:
            raise ValueError(
                f"COLLECTOR_BACKFILL_TIMEFRAMES names {', '.join(extra)}, not in COLLECTOR_TIMEFRAMES "
                f"({', '.join(self.timeframes)})"
            )
        unserved = [t for t in chosen if t not in tfs.IG_RESOLUTIONS]
        if unserved:
            raise ValueError(
                f"COLLECTOR_TIMEFRAMES has {', '.join(unserved)}, which IG's REST cannot serve, so their "
                "partial buckets could never be repaired; set COLLECTOR_BACKFILL_TIMEFRAMES to the others "
                f"({', '.join(t for t in self.timeframes if t in tfs.IG_RESOLUTIONS) or 'none'}) to collect "
                "them without repairs (their partial buckets are then reported), or remove them"
            )
        return self

    @field_validator("clock")
    @classmethod
    def _clock(cls, v: str) -> str:
        parse_clock(v)  # a clock that cannot be built fails at load, naming the setting
        return v

    # --- derived ------------------------------------------------------------------------------
    @property
    def repair_timeframes(self) -> frozenset[str]:
        """Timeframes whose partial buckets the collector repairs from REST."""
        if not self.backfill_enabled:
            return frozenset()
        return frozenset(self.timeframes if self.backfill_timeframes is None else self.backfill_timeframes)

    @property
    def spool_dir(self) -> Path:
        """COLLECTOR_STATE_DIR, else systemd's $STATE_DIRECTORY, else ~/.local/state/ig-collector."""
        base = self.state_dir or os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        return Path(base) if base else Path.home() / ".local" / "state" / "ig-collector"

    @property
    def node(self) -> str:
        """This collector's name in the election: COLLECTOR_NODE_NAME, else the host name."""
        return self.node_name or socket.gethostname()

    def url_or(self, override: str | None) -> str:
        """A command's `--database-url`, else DATABASE_URL; an error naming it when neither is set."""
        url = override or self.database_url
        if not url:
            self.require("database_url")
        return url  # type: ignore[return-value]

    def require(self, *names: str) -> None:
        """Fail with every missing setting a command needs, named as the user sets it."""
        missing = [n for n in names if getattr(self, n) in (None, "")]
        if missing:
            env = {"database_url": "DATABASE_URL"}
            raise ConfigError("missing settings: " + ", ".join(env.get(n, n.upper()) for n in missing))


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings; `config_file` (or COLLECTOR_CONFIG) is a TOML file that adds to the env."""
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        os.environ["COLLECTOR_CONFIG"] = str(path)
    elif (env_path := os.environ.get("COLLECTOR_CONFIG")) and not Path(env_path).is_file():
        raise ConfigError(f"COLLECTOR_CONFIG={env_path} does not exist")
    try:
        return Settings(**overrides)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"][:1]) or "settings"
            lines.append(f"  {_setting_name(loc)}: {err['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None


def _setting_name(field: str) -> str:
    """Name a setting as the user writes it: the environment name, then the TOML key."""
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices) and field in alias.choices:
            return f"{alias.choices[0]} (TOML key {alias.choices[1]})"
        if name == field:
            break
    info = Settings.model_fields.get(field)
    alias = getattr(info, "validation_alias", None) if info else None
    if isinstance(alias, AliasChoices):
        return f"{alias.choices[0]} ({field})"
    return field
