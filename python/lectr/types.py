"""Shared msgspec structs: the request record and the control-plane entries."""

from __future__ import annotations

import msgspec


class Record(msgspec.Struct, kw_only=True, gc=False):
    """Everything stored about one request: metadata only, never content."""

    id: str
    ts: float
    org_id: str
    endpoint: str
    provider: str
    provider_unknown: bool = False
    model_requested: str | None = None
    model_actual: str | None = None
    rule_id: str | None = None
    fallback_used: str | None = None
    status_code: int
    error_category: str | None = None
    error_source: str | None = None
    streaming: bool = False
    latency_ms: float
    ttfb_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    token_source: str | None = None
    cost_usd: float | None = None
    feature: str = "untagged"
    task: str | None = None
    # Of prompt_tokens, those written to the provider's prompt cache (Anthropic).
    cache_write_tokens: int | None = None
    # Of completion_tokens, those spent on reasoning.
    reasoning_tokens: int | None = None


RECORD_FIELDS: tuple[str, ...] = Record.__struct_fields__


class OrgEntry(msgspec.Struct, frozen=True):
    """An org as the request path sees it."""

    id: str
    name: str
    disabled: bool = False
    azure_endpoint: str | None = None
    azure_api_version: str | None = None
    created_at: float = 0.0


class KeyEntry(msgspec.Struct, frozen=True):
    """An org key: its public prefix and the SHA-256 of the whole key."""

    id: str
    org_id: str
    prefix: str
    key_hash: bytes
    created_at: float = 0.0
    revoked_at: float | None = None


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    """A routing rule: exact-match conditions (unset = any), AND-ed; the
    action sets the provider and/or model for `split_percent` % of matches."""

    id: str
    org_id: str
    name: str
    priority: int
    enabled: bool = True
    match_feature: str | None = None
    match_task: str | None = None
    match_provider: str | None = None
    match_model: str | None = None
    target_provider: str | None = None
    target_model: str | None = None
    split_percent: int = 100
    created_at: float = 0.0


class Target(msgspec.Struct, frozen=True):
    """One step of a failover path."""

    provider: str
    model: str


DEFAULT_FALLBACK_STATUSES = (429, 500, 502, 503, 504)


class FallbackChain(msgspec.Struct, frozen=True, kw_only=True):
    """An org's failover path, for one feature or (`scope='*'`) all of them."""

    org_id: str
    scope: str = "*"
    targets: tuple[Target, ...]
    on_status: tuple[int, ...] = DEFAULT_FALLBACK_STATUSES
    created_at: float = 0.0


class Budget(msgspec.Struct, frozen=True, kw_only=True):
    """A spend limit for an org (`scope='*'`) or one feature, per UTC day or
    month. At the hard cap: reject with 429, or rewrite to `fallback_model`."""

    org_id: str
    scope: str = "*"
    period: str = "month"  # day | month
    soft_usd: float | None = None
    hard_usd: float | None = None
    action: str = "reject"  # reject | fallback
    fallback_model: str | None = None
    created_at: float = 0.0


class RateLimit(msgspec.Struct, frozen=True, kw_only=True):
    """Requests and tokens in any 60 s window, and streams open at once."""

    org_id: str
    scope: str = "*"
    requests_per_min: int | None = None
    tokens_per_min: int | None = None
    concurrent_streams: int | None = None
    created_at: float = 0.0


class LatencyTarget(msgspec.Struct, frozen=True, kw_only=True):
    """A p95 latency objective for an org or one feature."""

    org_id: str
    scope: str = "*"
    p95_ms: float
    created_at: float = 0.0


class ControlData(msgspec.Struct, frozen=True):
    """Everything the request path needs from the control plane."""

    version: int
    orgs: list[OrgEntry]
    keys: list[KeyEntry]
    rules: list[Rule] = msgspec.field(default_factory=list)
    fallbacks: list[FallbackChain] = msgspec.field(default_factory=list)
    budgets: list[Budget] = msgspec.field(default_factory=list)
    rate_limits: list[RateLimit] = msgspec.field(default_factory=list)
    latency_targets: list[LatencyTarget] = msgspec.field(default_factory=list)


class LogFilter(msgspec.Struct, kw_only=True, frozen=True):
    """Request-log filters; unset fields match everything. Times are Unix
    seconds; `status` is a class (`2xx`, `4xx`, `5xx`, `499`) or `error`."""

    org_id: str
    since: float | None = None
    until: float | None = None
    feature: str | None = None
    task: str | None = None
    model: str | None = None  # matches requested or actual
    provider: str | None = None
    status: str | None = None
    rule: str | None = None


class Anomaly(msgspec.Struct, kw_only=True):
    """One anomaly as stored and shown. `feature` None means the whole org;
    `deviation` is (observed - baseline) / sigma."""

    id: str
    org_id: str
    feature: str | None
    type: str
    metric: str
    baseline: float
    sigma: float
    observed: float
    deviation: float
    severity: str
    window_start: int
    window_end: int
    detected_at: float
    state: str
    ongoing: bool
    resolved_at: float | None = None
    dismissed_at: float | None = None
    alert_state: str = "none"
    alert_attempts: int = 0
    alerted_at: float | None = None


class WindowStats(msgspec.Struct, frozen=True):
    """Sums over a scope's baseline samples (windows with traffic, minus
    dismissed windows). Ratio sums cover only windows with at least
    `min_requests` requests, counted by `n_ratio`."""

    org_id: str
    feature: str
    n: int
    req: float
    req_sq: float
    cost: float
    cost_sq: float
    n_ratio: int
    err: float
    err_sq: float
    p95: float
    p95_sq: float
    drift: float
    drift_sq: float
