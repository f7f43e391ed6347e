"""Settings: defaults, then an optional TOML file, then `LECTR_*` environment
variables, then command-line flags; validated once at start, secrets masked
in every `repr`."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

SECRET_FIELDS = (
    "admin_token",
    "metrics_token",
    "openai_api_key",
    "anthropic_api_key",
    "groq_api_key",
    "gemini_api_key",
    "azure_api_key",
    "console_secret",
)
URL_FIELDS_WITH_PASSWORDS = ("database_url", "redis_url")


class ConfigError(ValueError):
    """The configuration is invalid; the message says which setting and why."""


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Every gateway setting. The environment variable of a field is
    `LECTR_<FIELD>` in upper case; the TOML key is the field name."""

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    data_dir: str = ".lectr"
    database_url: str | None = None
    redis_url: str | None = None
    admin_token: str | None = None
    # When set, /metrics and /readyz need `Authorization: Bearer <token>`
    # (they tell an outsider about traffic and the store); /healthz stays open.
    metrics_token: str | None = None
    log_level: str = "info"
    openai_base_url: str = "https://api.openai.com/v1"
    anthropic_base_url: str = "https://api.anthropic.com/v1"
    groq_base_url: str = "https://api.groq.com/openai/v1"
    gemini_base_url: str = "https://generativelanguage.googleapis.com/v1beta/openai"
    # Keys used only when a rule or fallback sends a request to a provider
    # other than the one the client's own key is for. Held in memory only.
    openai_api_key: str | None = None
    anthropic_api_key: str | None = None
    groq_api_key: str | None = None
    gemini_api_key: str | None = None
    azure_api_key: str | None = None
    redis_timeout: float = 0.5
    policy_fail_open: bool = True
    budget_default_max_tokens: int = 4096
    budget_webhook_url: str | None = None
    breaker_failure_threshold: int = 5
    breaker_cooldown: float = 30.0
    max_body_bytes: int = 2 * 1024 * 1024
    # Connection limits of the HTTP server (docs/deploy.md, "Connection
    # limits"): open connections one worker serves at once (granian's
    # backpressure; an idle keep-alive connection holds one), the listen
    # backlog, and how long a connection may take to send a complete request
    # head before it is closed (slowloris).
    max_connections: int = 16384
    listen_backlog: int = 4096
    header_timeout: float = 5.0
    connect_timeout: float = 5.0
    first_byte_timeout: float = 120.0
    idle_timeout: float = 120.0
    # Whole-response deadline for a non-streamed body: a provider trickling
    # bytes under the idle timeout must not hold a client for ever.
    upstream_total_timeout: float = 600.0
    # Largest SSE event held while its end is awaited; past it the stream fails.
    sse_max_event_bytes: int = 4 * 1024 * 1024
    # Largest non-SSE response held whole; a bigger one streams through.
    max_buffered_response_bytes: int = 64 * 1024 * 1024
    warm_tokenizers: bool = False
    writer_queue_size: int = 100_000
    writer_batch_size: int = 1_000
    writer_flush_interval: float = 0.2
    writer_spill_after_failures: int = 3
    retention_days: int = 30
    control_refresh_interval: float = 0.5
    prices_file: str | None = None
    metrics_label_cap: int = 100
    # Insights: where new anomalies are POSTed, the untagged share of traffic
    # at which the overview asks for feature tags, and downgrade map overrides.
    anomaly_webhook_url: str | None = None
    untagged_prompt_threshold: float = 0.2
    downgrades_file: str | None = None
    # The browser console at /console, and the key its session cookies are
    # signed with (unset: derived from the admin token, else random per process).
    console_enabled: bool = True
    console_secret: str | None = None

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in masked(self).items())
        return f"Settings({fields})"

    __str__ = __repr__

    @property
    def sqlite_path(self) -> Path:
        """Where the embedded database lives when no database URL is set."""
        return Path(self.data_dir) / "lectr.db"

    def validate(self) -> Settings:
        """Check cross-field rules; raise ConfigError naming the setting."""
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be 1-65535, got {self.port}")
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}")
        if self.max_body_bytes < 1024:
            raise ConfigError("max_body_bytes must be at least 1024")
        if self.upstream_total_timeout <= 0:
            raise ConfigError("upstream_total_timeout must be a positive number of seconds")
        if self.sse_max_event_bytes < 1024:
            raise ConfigError("sse_max_event_bytes must be at least 1024")
        if self.max_buffered_response_bytes < 1024:
            raise ConfigError("max_buffered_response_bytes must be at least 1024")
        if self.max_connections < 16:
            raise ConfigError(f"max_connections must be at least 16, got {self.max_connections}")
        if self.listen_backlog < 16:
            raise ConfigError(f"listen_backlog must be at least 16, got {self.listen_backlog}")
        if not 0.1 <= self.header_timeout <= 300:
            raise ConfigError(f"header_timeout must be 0.1-300 seconds, got {self.header_timeout}")
        if self.metrics_label_cap < 1:
            raise ConfigError(f"metrics_label_cap must be at least 1, got {self.metrics_label_cap}")
        if not 0 < self.untagged_prompt_threshold <= 1:
            raise ConfigError("untagged_prompt_threshold must be a share in (0, 1], e.g. 0.2")
        if self.anomaly_webhook_url and urlsplit(self.anomaly_webhook_url).scheme not in ("http", "https"):
            raise ConfigError("anomaly_webhook_url must be an http(s) URL")
        for name in ("openai_base_url", "anthropic_base_url", "groq_base_url", "gemini_base_url"):
            url = getattr(self, name)
            if urlsplit(url).scheme not in ("http", "https"):
                raise ConfigError(f"{name} must be an http(s) URL, got {url!r}")
        if self.database_url and urlsplit(self.database_url).scheme not in ("postgresql", "postgres"):
            raise ConfigError("database_url must be a postgresql:// URL (unset means embedded SQLite)")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError("log_level must be one of debug, info, warning, error")
        return self


def _mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def masked(settings: Settings) -> dict[str, Any]:
    """The settings as a dict with secrets replaced, safe to log or print."""
    out: dict[str, Any] = msgspec.structs.asdict(settings)
    for name in SECRET_FIELDS:
        if out.get(name):
            out[name] = "***"
    for name in URL_FIELDS_WITH_PASSWORDS:
        if out.get(name):
            out[name] = _mask_url(out[name])
    return out


SETTINGS_ENV = "LECTR__SETTINGS_JSON"  # how `lectr serve` hands workers (and their writers) the settings


def settings_from_env() -> Settings:
    """Settings handed over by `lectr serve`, else loaded from the environment."""
    raw = os.environ.get(SETTINGS_ENV)
    if raw:
        return msgspec.json.decode(raw, type=Settings).validate()
    return load()


def load(config_file: str | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build settings from defaults, file (`--config` or `LECTR_CONFIG`), the
    environment and `overrides` (flags), in that order of precedence."""
    merged: dict[str, Any] = {}
    path = config_file or os.environ.get("LECTR_CONFIG")
    if path:
        try:
            with open(path, "rb") as f:
                merged.update(tomllib.load(f))
        except FileNotFoundError:
            raise ConfigError(f"config file {path!r} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path!r} is not valid TOML: {e}") from None
    for field in msgspec.structs.fields(Settings):
        env = os.environ.get(f"LECTR_{field.name.upper()}")
        if env:  # an empty variable means unset
            merged[field.name] = env
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        settings = msgspec.convert(merged, Settings, strict=False)
    except msgspec.ValidationError as e:
        raise ConfigError(f"invalid setting: {e}") from None
    return settings.validate()
