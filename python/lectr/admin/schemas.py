"""The admin API's JSON bodies: what it accepts and what it answers with
(msgspec structs; the OpenAPI document is built from them)."""

from __future__ import annotations

import msgspec

from lectr.control.manage import NewKey
from lectr.types import DEFAULT_FALLBACK_STATUSES, KeyEntry, OrgEntry, Record, Target

__all__ = [
    "ApplyIn",
    "BudgetIn",
    "FallbackIn",
    "KeyOut",
    "LimitIn",
    "LogPage",
    "NewKey",
    "OrgCreate",
    "OrgCreated",
    "OrgOut",
    "OrgPatch",
    "ReorderIn",
    "RuleIn",
    "TargetIn",
]


class OrgOut(msgspec.Struct):
    """An org as the API shows it."""

    id: str
    name: str
    disabled: bool
    azure_endpoint: str | None
    azure_api_version: str | None
    created_at: float

    @classmethod
    def of(cls, o: OrgEntry) -> OrgOut:
        return cls(o.id, o.name, o.disabled, o.azure_endpoint, o.azure_api_version, o.created_at)


class KeyOut(msgspec.Struct):
    """A key as the API lists it: the prefix only, never the secret."""

    prefix: str
    display: str
    active: bool
    created_at: float
    revoked_at: float | None

    @classmethod
    def of(cls, k: KeyEntry) -> KeyOut:
        return cls(k.prefix, f"lc_key_{k.prefix}...", k.revoked_at is None, k.created_at, k.revoked_at)


class OrgCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: str


class OrgCreated(msgspec.Struct):
    org: OrgOut
    key: str


class OrgPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    disabled: bool | None = None
    azure_endpoint: str | None = None
    azure_api_version: str | None = None


class RuleIn(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A rule as created or patched; unset fields keep their value on PATCH."""

    name: str | None = None
    priority: int | None = None
    enabled: bool | None = None
    match_feature: str | None = None
    match_task: str | None = None
    match_provider: str | None = None
    match_model: str | None = None
    target_provider: str | None = None
    target_model: str | None = None
    split_percent: int | None = None


class ReorderIn(msgspec.Struct, forbid_unknown_fields=True):
    order: list[str]  # rule ids or names, first = highest priority


class FallbackIn(msgspec.Struct, forbid_unknown_fields=True):
    targets: list[Target]
    on_status: list[int] = msgspec.field(default_factory=lambda: list(DEFAULT_FALLBACK_STATUSES))


class LogPage(msgspec.Struct):
    data: list[Record]
    next_cursor: str | None


class BudgetIn(msgspec.Struct, forbid_unknown_fields=True):
    soft_usd: float | None = None
    hard_usd: float | None = None
    action: str = "reject"
    fallback_model: str | None = None


class LimitIn(msgspec.Struct, forbid_unknown_fields=True):
    requests_per_min: int | None = None
    tokens_per_min: int | None = None
    concurrent_streams: int | None = None


class TargetIn(msgspec.Struct, forbid_unknown_fields=True):
    p95_ms: float


class ApplyIn(msgspec.Struct, forbid_unknown_fields=True):
    """Apply a recommendation, optionally to a share of the matching traffic."""

    split_percent: int | None = None
