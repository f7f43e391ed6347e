"""Checks and parsers for control-plane input, shared by every adapter (CLI,
admin API, console): each raises `errors.InvalidRequest` with the message the
user sees, whichever adapter it came through."""

from __future__ import annotations

import math
from datetime import datetime
from urllib.parse import urlsplit

from lectr.errors import InvalidRequest
from lectr.gateway.providers import REGISTRY, VALID_NAMES
from lectr.store.base import KEY_PREFIX, STATUS_CLASSES
from lectr.types import Budget, FallbackChain, LatencyTarget, LogFilter, RateLimit, Rule

MAX_ORG_NAME = 200
MAX_RULE_NAME = 100
MAX_SCOPE = 200


def org_name(name: str) -> str:
    """An org name, trimmed: 1-200 characters."""
    name = name.strip()
    if not name or len(name) > MAX_ORG_NAME:
        raise InvalidRequest(f"name must be 1-{MAX_ORG_NAME} characters")
    return name


def azure_endpoint(endpoint: str | None) -> str | None:
    """An Azure OpenAI resource URL (http or https, with a host), or None to clear."""
    if endpoint is None or not endpoint.strip():
        return None
    endpoint = endpoint.strip()
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(endpoint) > 500:
        raise InvalidRequest(
            "azure_endpoint must be an http(s) URL such as https://<resource>.openai.azure.com"
        )
    return endpoint.rstrip("/")


def azure_api_version(version: str | None) -> str | None:
    """An api-version query value (e.g. 2024-10-21), or None to clear."""
    if version is None or not version.strip():
        return None
    version = version.strip()
    if len(version) > 40 or not all(c.isalnum() or c in "-._" for c in version):
        raise InvalidRequest("azure_api_version must be a version such as 2024-10-21")
    return version


def key_prefix(value: str) -> str:
    """A key's prefix as any listing shows it: `abcd1234`, `lc_key_abcd1234...`
    or the whole key."""
    prefix = value.strip().removeprefix(KEY_PREFIX).removesuffix("...")[:8]
    if not prefix:
        raise InvalidRequest("give the key's prefix as `keys list` shows it")
    return prefix


def scope(value: str | None) -> str:
    """A feature scope: one feature's name, or `*` (the whole org)."""
    if value is None or value == "":
        return "*"
    if len(value) > MAX_SCOPE:
        raise InvalidRequest(f"a feature scope is at most {MAX_SCOPE} characters")
    return value


def rule(r: Rule) -> Rule:
    """Reject rules that cannot do anything sensible, with a clear reason."""
    if not r.name.strip() or len(r.name) > MAX_RULE_NAME:
        raise InvalidRequest(f"a rule needs a name of 1-{MAX_RULE_NAME} characters")
    for field in ("match_provider", "target_provider"):
        value = getattr(r, field)
        if value is not None and value not in REGISTRY:
            raise InvalidRequest(f"{field} {value!r} is not a provider; valid values: {VALID_NAMES}")
    if r.target_provider is None and r.target_model is None:
        raise InvalidRequest("a rule needs an action: target_provider and/or target_model")
    if not 1 <= r.split_percent <= 100:
        raise InvalidRequest("split_percent must be between 1 and 100")
    return r


def chain(c: FallbackChain) -> FallbackChain:
    """A failover path: known providers, a model each, error statuses only."""
    if not c.targets:
        raise InvalidRequest("a fallback chain needs at least one target")
    for t in c.targets:
        if t.provider not in REGISTRY:
            raise InvalidRequest(f"{t.provider!r} is not a provider; valid values: {VALID_NAMES}")
        if not t.model:
            raise InvalidRequest("every fallback target needs a model")
    if any(not 400 <= s <= 599 for s in c.on_status):
        raise InvalidRequest("on_status holds HTTP error statuses (400-599)")
    return c


def budget(b: Budget) -> Budget:
    """A spend limit with at least one positive cap and a valid action."""
    if b.period not in ("day", "month"):
        raise InvalidRequest("period must be day or month")
    if b.soft_usd is None and b.hard_usd is None:
        raise InvalidRequest("a budget needs soft_usd and/or hard_usd")
    if any(v is not None and not (math.isfinite(v) and v > 0) for v in (b.soft_usd, b.hard_usd)):
        raise InvalidRequest("caps must be positive amounts in USD")
    if b.soft_usd is not None and b.hard_usd is not None and b.soft_usd > b.hard_usd:
        raise InvalidRequest("soft_usd must not exceed hard_usd")
    if b.action not in ("reject", "fallback"):
        raise InvalidRequest("action must be reject or fallback")
    if b.action == "fallback" and not b.fallback_model:
        raise InvalidRequest("action fallback needs fallback_model (the cheaper model to serve over the cap)")
    return b


def limit(lim: RateLimit) -> RateLimit:
    """A rate limit with at least one bound, each at least 1."""
    values = (lim.requests_per_min, lim.tokens_per_min, lim.concurrent_streams)
    if all(v is None for v in values):
        raise InvalidRequest("set requests_per_min, tokens_per_min and/or concurrent_streams")
    if any(v is not None and v < 1 for v in values):
        raise InvalidRequest("limits must be at least 1")
    return lim


def target(t: LatencyTarget) -> LatencyTarget:
    """A p95 latency objective in positive milliseconds."""
    if not (math.isfinite(t.p95_ms) and t.p95_ms > 0):
        raise InvalidRequest("p95_ms must be positive")
    return t


def time_value(value: str, name: str) -> float:
    """Unix seconds or ISO 8601 as Unix seconds; a finite time within years
    1970-9999, else InvalidRequest (nan and 1e308 are not times)."""
    try:
        ts = float(value)
    except ValueError:
        try:
            ts = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise InvalidRequest(f"{name} must be Unix seconds or ISO 8601, got {value[:40]!r}") from None
    if not (math.isfinite(ts) and 0 <= ts < 253402300800):
        raise InvalidRequest(f"{name} must be a time between 1970 and 9999, got {value[:40]!r}")
    return ts


def optional_time(q: dict[str, str], name: str) -> float | None:
    """`q[name]` as a time, or None when absent."""
    value = q.get(name)
    return None if value is None else time_value(value, name)


def days(q: dict[str, str]) -> float:
    """The `days` lookback of recommendations (default 7); range checked there."""
    try:
        value = float(q.get("days", "7"))
    except ValueError:
        raise InvalidRequest("days must be a number") from None
    if not math.isfinite(value):
        raise InvalidRequest("days must be a number")
    return value


def log_filter(org_id: str, q: dict[str, str]) -> LogFilter:
    """A request-log filter from query parameters or CLI options."""
    status = q.get("status")
    if status is not None and status not in STATUS_CLASSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUS_CLASSES)}")
    return LogFilter(
        org_id=org_id,
        since=optional_time(q, "since"),
        until=optional_time(q, "until"),
        feature=q.get("feature"),
        task=q.get("task"),
        model=q.get("model"),
        provider=q.get("provider"),
        status=status,
        rule=q.get("rule"),
    )
