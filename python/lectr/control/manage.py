"""Every control-plane operation, once: the CLI, the admin API and the console
are thin adapters over `Manager`. Each change is validated here, written to
the store (which bumps the control version every instance follows) and then
applied to this instance at once through `on_change`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import msgspec

from lectr.control import validation as check
from lectr.errors import Conflict, InvalidRequest, NotFound
from lectr.insights.service import Insights
from lectr.store.base import Store
from lectr.types import (
    DEFAULT_FALLBACK_STATUSES,
    Anomaly,
    Budget,
    FallbackChain,
    KeyEntry,
    LatencyTarget,
    OrgEntry,
    RateLimit,
    Rule,
    Target,
)

T = TypeVar("T")
RULE_FIELDS = frozenset(
    (
        "name",
        "priority",
        "enabled",
        "match_feature",
        "match_task",
        "match_provider",
        "match_model",
        "target_provider",
        "target_model",
        "split_percent",
    )
)
SCOPED: dict[str, type[Any]] = {"budgets": Budget, "limits": RateLimit, "targets": LatencyTarget}


async def _nothing() -> None:
    return None


class NewKey(msgspec.Struct):
    """A freshly created key; `key` is shown this once."""

    key: str
    prefix: str
    revoked: str | None = None


class Manager:
    """Validated control-plane changes and the lookups they start from."""

    def __init__(
        self,
        store: Store,
        insights: Insights,
        on_change: Callable[[], Awaitable[Any]] = _nothing,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.insights = insights
        self._on_change = on_change
        self._clock = clock

    async def _changed(self, value: T) -> T:
        """Apply a change to this instance now (others follow within 1 s)."""
        await self._on_change()
        return value

    # --- orgs ---------------------------------------------------------------

    async def org(self, ref: str) -> OrgEntry:
        """An org by name or id; NotFound otherwise."""
        return await self.store.get_org(ref)

    async def create_org(self, name: str) -> tuple[OrgEntry, NewKey]:
        """A new org and its first key (shown once)."""
        org = await self.store.create_org(check.org_name(name))
        key, entry = await self.store.create_key(org.id)
        return await self._changed((org, NewKey(key, entry.prefix)))

    async def set_org_disabled(self, ref: str, disabled: bool) -> OrgEntry:
        org = await self.org(ref)
        await self.store.set_org_disabled(org.id, disabled)
        return await self._changed(await self.org(org.id))

    async def set_org_azure(self, ref: str, endpoint: str | None, api_version: str | None) -> OrgEntry:
        """Set (or, with None, clear) an org's Azure endpoint and api-version."""
        org = await self.org(ref)
        await self.store.set_org_azure(
            org.id, check.azure_endpoint(endpoint), check.azure_api_version(api_version)
        )
        return await self._changed(await self.org(org.id))

    # --- keys ---------------------------------------------------------------

    async def list_keys(self, ref: str) -> list[KeyEntry]:
        return await self.store.list_keys((await self.org(ref)).id)

    async def create_key(self, ref: str) -> tuple[OrgEntry, NewKey]:
        org = await self.org(ref)
        key, entry = await self.store.create_key(org.id)
        return await self._changed((org, NewKey(key, entry.prefix)))

    async def revoke_key(self, ref: str, prefix: str) -> tuple[OrgEntry, str]:
        org = await self.org(ref)
        prefix = check.key_prefix(prefix)
        await self.store.revoke_key(org.id, prefix)
        return await self._changed((org, prefix))

    async def rotate_key(self, ref: str, prefix: str) -> tuple[OrgEntry, NewKey]:
        """Revoke a key and create its replacement (in one control change
        seen by the request path: both land before `on_change`)."""
        org = await self.org(ref)
        prefix = check.key_prefix(prefix)
        await self.store.revoke_key(org.id, prefix)
        key, entry = await self.store.create_key(org.id)
        return await self._changed((org, NewKey(key, entry.prefix, revoked=prefix)))

    # --- routing rules ------------------------------------------------------

    async def list_rules(self, ref: str) -> list[Rule]:
        return await self.store.list_rules((await self.org(ref)).id)

    async def rule(self, org_id: str, ref: str) -> Rule:
        """A rule of the org by id or name; NotFound otherwise."""
        for r in await self.store.list_rules(org_id):
            if ref in (r.id, r.name):
                return r
        raise NotFound(f"no rule {ref!r}")

    async def create_rule(self, ref: str, fields: dict[str, Any]) -> Rule:
        """A new rule from `fields` (RULE_FIELDS); it runs after the org's
        others unless `priority` says otherwise."""
        org = await self.org(ref)
        fields = _rule_fields(fields)
        if fields.get("priority") is None:
            existing = await self.store.list_rules(org.id)
            fields["priority"] = max((r.priority for r in existing), default=0) + 10
        fields.setdefault("name", "")
        return await self._changed(await self._create_rule(check.rule(Rule(id="", org_id=org.id, **fields))))

    async def _create_rule(self, rule: Rule) -> Rule:
        try:
            return await self.store.create_rule(rule)
        except Conflict:
            raise Conflict(f"a rule named {rule.name!r} already exists in this org") from None

    async def update_rule(self, ref: str, rule_ref: str, changes: dict[str, Any]) -> Rule:
        """Change the given fields of a rule; a field set to None is cleared."""
        org = await self.org(ref)
        updated = check.rule(
            msgspec.structs.replace(await self.rule(org.id, rule_ref), **_rule_fields(changes))
        )
        try:
            await self.store.update_rule(updated)
        except Conflict:
            raise Conflict(f"a rule named {updated.name!r} already exists in this org") from None
        return await self._changed(updated)

    async def delete_rule(self, ref: str, rule_ref: str) -> Rule:
        org = await self.org(ref)
        rule = await self.rule(org.id, rule_ref)
        await self.store.delete_rule(org.id, rule.id)
        return await self._changed(rule)

    async def reorder_rules(self, ref: str, order: Sequence[str]) -> list[Rule]:
        """Set the evaluation order: every rule of the org once, first = first."""
        org = await self.org(ref)
        ids = [(await self.rule(org.id, r)).id for r in order]
        if sorted(ids) != sorted(r.id for r in await self.store.list_rules(org.id)):
            raise InvalidRequest(
                "order must name every rule of the org exactly once, first = evaluated first"
            )
        await self.store.reorder_rules(org.id, ids)
        return await self._changed(await self.store.list_rules(org.id))

    # --- fallbacks ----------------------------------------------------------

    async def list_fallbacks(self, ref: str) -> list[FallbackChain]:
        return await self.store.list_fallbacks((await self.org(ref)).id)

    async def set_fallback(
        self,
        ref: str,
        scope: str | None,
        targets: Sequence[Target],
        on_status: Sequence[int] | None = None,
    ) -> FallbackChain:
        """The failover path for one feature, or the org's default (`*`)."""
        org = await self.org(ref)
        chain = check.chain(
            FallbackChain(
                org_id=org.id,
                scope=check.scope(scope),
                targets=tuple(targets),
                on_status=tuple(DEFAULT_FALLBACK_STATUSES if on_status is None else on_status),
            )
        )
        await self.store.set_fallback(chain)
        return await self._changed(chain)

    async def delete_fallback(self, ref: str, scope: str | None) -> str:
        org = await self.org(ref)
        await self.store.delete_fallback(org.id, check.scope(scope))
        return await self._changed(check.scope(scope))

    # --- budgets, rate limits, latency targets ------------------------------

    async def list_scoped(self, ref: str, group: str) -> list[Any]:
        """An org's `budgets`, `limits` or `targets`."""
        return await self.store.list_scoped(SCOPED[group], (await self.org(ref)).id)

    async def set_budget(
        self,
        ref: str,
        scope: str | None,
        period: str,
        soft_usd: float | None,
        hard_usd: float | None,
        action: str = "reject",
        fallback_model: str | None = None,
    ) -> Budget:
        org = await self.org(ref)
        b = check.budget(
            Budget(
                org_id=org.id,
                scope=check.scope(scope),
                period=period,
                soft_usd=soft_usd,
                hard_usd=hard_usd,
                action=action,
                fallback_model=fallback_model,
            )
        )
        await self.store.put_scoped(b)
        return await self._changed(b)

    async def set_limit(
        self,
        ref: str,
        scope: str | None,
        requests_per_min: int | None,
        tokens_per_min: int | None,
        concurrent_streams: int | None,
    ) -> RateLimit:
        org = await self.org(ref)
        lim = check.limit(
            RateLimit(
                org_id=org.id,
                scope=check.scope(scope),
                requests_per_min=requests_per_min,
                tokens_per_min=tokens_per_min,
                concurrent_streams=concurrent_streams,
            )
        )
        await self.store.put_scoped(lim)
        return await self._changed(lim)

    async def set_target(self, ref: str, scope: str | None, p95_ms: float) -> LatencyTarget:
        org = await self.org(ref)
        t = check.target(LatencyTarget(org_id=org.id, scope=check.scope(scope), p95_ms=p95_ms))
        await self.store.put_scoped(t)
        return await self._changed(t)

    async def delete_scoped(self, ref: str, group: str, scope: str | None, period: str = "month") -> str:
        """Remove a budget (of `period`), rate limit or latency target; the
        deleted item's path (`scope` or `scope/period`)."""
        org = await self.org(ref)
        key: tuple[str, ...] = (org.id, check.scope(scope))
        if group == "budgets":
            key += (period,)
        await self.store.delete_scoped(SCOPED[group], key)
        return await self._changed("/".join(key[1:]))

    # --- insights actions ---------------------------------------------------

    async def dismiss_anomaly(self, ref: str, anomaly_id: str) -> Anomaly:
        """No more alerts for it; its window leaves future baselines."""
        return await self.insights.dismiss((await self.org(ref)).id, anomaly_id)

    async def apply_recommendation(
        self, ref: str, rec_id: str, split_percent: int | None = None, days: float = 7
    ) -> Rule:
        """Turn a recommendation into a routing rule after the org's others."""
        org = await self.org(ref)
        rule = await self.insights.rule_for(org.id, rec_id, split_percent, days)
        return await self._changed(await self._create_rule(check.rule(rule)))


def _rule_fields(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - RULE_FIELDS
    if unknown:
        raise InvalidRequest(f"unknown rule fields: {', '.join(sorted(unknown))}")
    return dict(fields)
