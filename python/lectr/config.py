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


class ConfigError(ValueError):
    """The configuration is invalid; the message says which setting and why."""


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A group of settings: a TOML table, `LECTR_<SECTION>__<FIELD>` in the environment."""


class ProviderSettings(_Section):
    """One provider's endpoint and the operator's key for it."""

    base_url: str
    # Used only when a rule or fallback sends a request to this provider from
    # another one the client's own key is for. Held in memory only.
    api_key: str | None = None

    def __repr__(self) -> str:
        return f"ProviderSettings(base_url={self.base_url!r}, api_key={_mask(self.api_key)})"


class AzureSettings(_Section):
    """Azure OpenAI: endpoints are per org (`lectr orgs azure`), only the key is global."""

    api_key: str | None = None

    def __repr__(self) -> str:
        return f"AzureSettings(api_key={_mask(self.api_key)})"


def _mask(secret: str | None) -> str:
    return "'***'" if secret else "None"


def _provider(base_url: str) -> Any:
    return msgspec.field(default_factory=lambda: ProviderSettings(base_url=base_url))


class ProvidersSettings(_Section):
    """Every provider Lectr can forward to."""

    openai: ProviderSettings = _provider("https://api.openai.com/v1")
    anthropic: ProviderSettings = _provider("https://api.anthropic.com/v1")
    groq: ProviderSettings = _provider("https://api.groq.com/openai/v1")
    gemini: ProviderSettings = _provider("https://generativelanguage.googleapis.com/v1beta/openai")
    azure: AzureSettings = msgspec.field(default_factory=AzureSettings)

    def section(self, provider: str) -> ProviderSettings | AzureSettings | None:
        """The settings of the provider named `provider` (a registry name)."""
        match provider:
            case "openai":
                return self.openai
            case "anthropic":
                return self.anthropic
            case "groq":
                return self.groq
            case "gemini":
                return self.gemini
            case "azure":
                return self.azure
        return None

    def base_url(self, provider: str) -> str | None:
        """`provider`'s base URL; None for Azure (per org) and unknown names."""
        section = self.section(provider)
        return section.base_url if isinstance(section, ProviderSettings) else None

    def api_key(self, provider: str) -> str | None:
        """The operator's key for `provider`, if one is configured."""
        section = self.section(provider)
        return section.api_key if section is not None else None


class WriterSettings(_Section):
    """The record writer: queue, batches and spill."""

    queue_size: int = 100_000
    # 5,000 per write: 92k records/s into PostgreSQL against 67k at 1,000
    # (benchmarks, scenario 6, 2026-12-03); writes run in the writer process.
    batch_size: int = 5_000
    flush_interval: float = 0.2
    spill_after_failures: int = 3


class BreakerSettings(_Section):
    """The per-provider circuit breaker."""

    failure_threshold: int = 5
    cooldown: float = 30.0


class PolicySettings(_Section):
    """Limits and budgets: the counters' deadline and what happens without them."""

    redis_timeout: float = 0.5
    fail_open: bool = True
    budget_default_max_tokens: int = 4096
    budget_webhook_url: str | None = None


SECTIONS: dict[str, type[_Section]] = {
    "providers": ProvidersSettings,
    "writer": WriterSettings,
    "breaker": BreakerSettings,
    "policy": PolicySettings,
}

# The flat names of the README and SPEC (and of every release before sections
# existed), each the alias of one nested setting; they keep working as TOML
# keys and as `LECTR_<NAME>` variables.
FLAT_ALIASES: dict[str, tuple[str, ...]] = {
    **{
        f"{p}_{f}": ("providers", p, f)
        for p in ("openai", "anthropic", "groq", "gemini")
        for f in ("base_url", "api_key")
    },
    "azure_api_key": ("providers", "azure", "api_key"),
    **{
        f"writer_{f}": ("writer", f)
        for f in ("queue_size", "batch_size", "flush_interval", "spill_after_failures")
    },
    "breaker_failure_threshold": ("breaker", "failure_threshold"),
    "breaker_cooldown": ("breaker", "cooldown"),
    "redis_timeout": ("policy", "redis_timeout"),
    "policy_fail_open": ("policy", "fail_open"),
    "budget_default_max_tokens": ("policy", "budget_default_max_tokens"),
    "budget_webhook_url": ("policy", "budget_webhook_url"),
}

SECRET_SETTINGS = (
    "admin_token",
    "metrics_token",
    "console_secret",
    *(f"providers.{p}.api_key" for p in ("openai", "anthropic", "groq", "gemini", "azure")),
)
URL_SETTINGS_WITH_PASSWORDS = ("database_url", "redis_url")


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Every gateway setting. The environment variable of a top-level field is
    `LECTR_<FIELD>`, of a section's field `LECTR_<SECTION>__<FIELD>` (upper
    case); in TOML a section is a table (`[providers.openai]`)."""

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
    providers: ProvidersSettings = msgspec.field(default_factory=ProvidersSettings)
    writer: WriterSettings = msgspec.field(default_factory=WriterSettings)
    breaker: BreakerSettings = msgspec.field(default_factory=BreakerSettings)
    policy: PolicySettings = msgspec.field(default_factory=PolicySettings)

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
        for name in ("openai", "anthropic", "groq", "gemini"):
            url = getattr(self.providers, name).base_url
            if urlsplit(url).scheme not in ("http", "https"):
                raise ConfigError(
                    f"providers.{name}.base_url (LECTR_{name.upper()}_BASE_URL) "
                    f"must be an http(s) URL, got {url!r}"
                )
        if self.writer.batch_size < 1 or self.writer.queue_size < self.writer.batch_size:
            raise ConfigError("writer.batch_size must be at least 1 and at most writer.queue_size")
        if self.breaker.failure_threshold < 1:
            raise ConfigError("breaker.failure_threshold must be at least 1")
        if self.policy.redis_timeout <= 0:
            raise ConfigError("policy.redis_timeout must be a positive number of seconds")
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
    """The settings as a (nested) dict with secrets replaced, safe to log or print."""
    out: dict[str, Any] = msgspec.to_builtins(settings)
    for dotted in SECRET_SETTINGS:
        *path, name = dotted.split(".")
        table = _table(out, path)
        if table.get(name):
            table[name] = "***"
    for name in URL_SETTINGS_WITH_PASSWORDS:
        if out.get(name):
            out[name] = _mask_url(out[name])
    return out


def _table(root: dict[str, Any], path: list[str]) -> dict[str, Any]:
    """The nested table at `path`, created where missing."""
    for i, part in enumerate(path):
        root = root.setdefault(part, {})
        if not isinstance(root, dict):
            raise ConfigError(f"{'.'.join(path[: i + 1])} must be a table of settings ([{part}] in TOML)")
    return root


SETTINGS_ENV = "LECTR__SETTINGS_JSON"  # how `lectr serve` hands workers (and their writers) the settings


def settings_from_env() -> Settings:
    """Settings handed over by `lectr serve`, else loaded from the environment."""
    raw = os.environ.get(SETTINGS_ENV)
    if raw:
        return msgspec.json.decode(raw, type=Settings).validate()
    return load()


def setting_paths() -> list[tuple[str, ...]]:
    """Every setting as its path: `("port",)`, `("providers", "openai", "base_url")`."""
    out: list[tuple[str, ...]] = []

    def walk(struct: type[msgspec.Struct], prefix: tuple[str, ...]) -> None:
        for f in msgspec.structs.fields(struct):
            kind = f.type
            if isinstance(kind, type) and issubclass(kind, _Section):
                walk(kind, (*prefix, f.name))
            else:
                out.append((*prefix, f.name))

    walk(Settings, ())
    return out


def env_name(path: tuple[str, ...]) -> str:
    """`LECTR_PORT`, `LECTR_PROVIDERS__OPENAI__BASE_URL`."""
    return "LECTR_" + "__".join(path).upper()


def flat_alias(path: tuple[str, ...]) -> str | None:
    """The stable flat name of a nested setting (`openai_base_url`), if it has one."""
    return next((flat for flat, p in FLAT_ALIASES.items() if p == path), None)


def _with_aliases(data: dict[str, Any], source: str) -> dict[str, Any]:
    """A TOML document with its flat aliases moved into their sections."""
    merged = {k: v for k, v in data.items() if k not in FLAT_ALIASES}
    for name in SECTIONS:
        if name in merged:
            _table(merged, [name])  # a section must be a table
    for alias, path in FLAT_ALIASES.items():
        if alias not in data:
            continue
        table = _table(merged, list(path[:-1]))
        dotted = ".".join(path)
        if path[-1] in table and table[path[-1]] != data[alias]:
            raise ConfigError(f"{source} sets both {alias} and {dotted}, to different values; keep one")
        table[path[-1]] = data[alias]
    return merged


def _from_environment() -> dict[str, Any]:
    """The `LECTR_*` variables that name settings, nested, flat aliases included."""
    out: dict[str, Any] = {}
    for setting in setting_paths():
        alias = flat_alias(setting)
        names = [env_name(setting), *([f"LECTR_{alias.upper()}"] if alias else [])]
        given = {n: os.environ[n] for n in names if os.environ.get(n)}  # empty means unset
        if len(set(given.values())) > 1:
            raise ConfigError(f"{' and '.join(given)} are both set, to different values; keep one")
        if given:
            _table(out, list(setting[:-1]))[setting[-1]] = next(iter(given.values()))
    return out


def _deep_update(target: dict[str, Any], source: dict[str, Any]) -> None:
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


def load(config_file: str | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build settings from defaults, file (`--config` or `LECTR_CONFIG`), the
    environment and `overrides` (flags), in that order of precedence."""
    # From the defaults up, so that a section given in part keeps the rest.
    merged: dict[str, Any] = msgspec.to_builtins(Settings())
    path = config_file or os.environ.get("LECTR_CONFIG")
    if path:
        try:
            with open(path, "rb") as f:
                _deep_update(merged, _with_aliases(tomllib.load(f), f"config file {path!r}"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path!r} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path!r} is not valid TOML: {e}") from None
    _deep_update(merged, _from_environment())
    _deep_update(merged, {k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        settings = msgspec.convert(merged, Settings, strict=False)
    except msgspec.ValidationError as e:
        raise ConfigError(f"invalid setting: {e}") from None
    return settings.validate()
