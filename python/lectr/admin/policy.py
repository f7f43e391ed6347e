"""Admin API handlers for the policy engine: budgets, rate limits, latency
targets, and their live state (spend, remaining, usage, p95 status)."""

from __future__ import annotations

from typing import Any

import msgspec

from lectr.admin.routes import Principal, route
from lectr.errors import InvalidRequest, NotFound
from lectr.policy import Policy
from lectr.store import Missing as StoreMissing
from lectr.store import Store
from lectr.types import Budget, LatencyTarget, OrgEntry, RateLimit
from lectr.webhooks import WebhookSender


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


def validate_budget(b: Budget) -> Budget:
    if b.period not in ("day", "month"):
        raise InvalidRequest("period must be day or month")
    if b.soft_usd is None and b.hard_usd is None:
        raise InvalidRequest("a budget needs soft_usd and/or hard_usd")
    if any(v is not None and v <= 0 for v in (b.soft_usd, b.hard_usd)):
        raise InvalidRequest("caps must be positive amounts in USD")
    if b.soft_usd is not None and b.hard_usd is not None and b.soft_usd > b.hard_usd:
        raise InvalidRequest("soft_usd must not exceed hard_usd")
    if b.action not in ("reject", "fallback"):
        raise InvalidRequest("action must be reject or fallback")
    if b.action == "fallback" and not b.fallback_model:
        raise InvalidRequest("action fallback needs fallback_model (the cheaper model to serve over the cap)")
    return b


def validate_limit(limit: RateLimit) -> RateLimit:
    values = (limit.requests_per_min, limit.tokens_per_min, limit.concurrent_streams)
    if all(v is None for v in values):
        raise InvalidRequest("set requests_per_min, tokens_per_min and/or concurrent_streams")
    if any(v is not None and v < 1 for v in values):
        raise InvalidRequest("limits must be at least 1")
    return limit


def validate_target(t: LatencyTarget) -> LatencyTarget:
    if t.p95_ms <= 0:
        raise InvalidRequest("p95_ms must be positive")
    return t


class PolicyRoutes:
    """Mixed into AdminAPI, which supplies the attributes below."""

    _store: Store
    _policy: Policy
    _webhooks: WebhookSender

    async def _org(self, ref: str) -> OrgEntry:
        raise NotImplementedError

    async def _body(self, proto: Any, typ: type[Any]) -> Any:
        raise NotImplementedError

    def _json(self, proto: Any, status: int, value: Any) -> None:
        raise NotImplementedError

    async def _changed(self) -> None:
        raise NotImplementedError

    async def _delete_scoped(self, proto: Any, typ: type[Any], key: tuple[str, ...]) -> None:
        try:
            await self._store.delete_scoped(typ, key)
        except StoreMissing as e:
            raise NotFound(str(e)) from None
        await self._changed()
        self._json(proto, 200, {"deleted": "/".join(key[1:])})

    @route("GET", "/admin/orgs/{org}/policy", admin_only=False)
    async def policy_state(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        state = await self._policy.state(org.id)
        state["alerts"] = [r for r in self._webhooks.recent if r["event"].get("org_id") == org.id]
        self._json(proto, 200, state)

    @route("GET", "/admin/orgs/{org}/budgets")
    async def list_budgets(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        self._json(proto, 200, {"data": await self._store.list_scoped(Budget, org.id)})

    @route("PUT", "/admin/orgs/{org}/budgets/{scope}/{period}")
    async def set_budget(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        body: BudgetIn = await self._body(proto, BudgetIn)
        budget = validate_budget(
            Budget(org_id=org.id, scope=p["scope"], period=p["period"], **msgspec.structs.asdict(body))
        )
        await self._store.put_scoped(budget)
        await self._changed()
        self._json(proto, 200, budget)

    @route("DELETE", "/admin/orgs/{org}/budgets/{scope}/{period}")
    async def delete_budget(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        await self._delete_scoped(proto, Budget, (org.id, p["scope"], p["period"]))

    @route("GET", "/admin/orgs/{org}/limits")
    async def list_limits(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        self._json(proto, 200, {"data": await self._store.list_scoped(RateLimit, org.id)})

    @route("PUT", "/admin/orgs/{org}/limits/{scope}")
    async def set_limit(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        body: LimitIn = await self._body(proto, LimitIn)
        limit = validate_limit(RateLimit(org_id=org.id, scope=p["scope"], **msgspec.structs.asdict(body)))
        await self._store.put_scoped(limit)
        await self._changed()
        self._json(proto, 200, limit)

    @route("DELETE", "/admin/orgs/{org}/limits/{scope}")
    async def delete_limit(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        await self._delete_scoped(proto, RateLimit, (org.id, p["scope"]))

    @route("GET", "/admin/orgs/{org}/latency-targets")
    async def list_targets(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        self._json(proto, 200, {"data": await self._store.list_scoped(LatencyTarget, org.id)})

    @route("PUT", "/admin/orgs/{org}/latency-targets/{scope}")
    async def set_target(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        body: TargetIn = await self._body(proto, TargetIn)
        target = validate_target(LatencyTarget(org_id=org.id, scope=p["scope"], p95_ms=body.p95_ms))
        await self._store.put_scoped(target)
        await self._changed()
        self._json(proto, 200, target)

    @route("DELETE", "/admin/orgs/{org}/latency-targets/{scope}")
    async def delete_target(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        await self._delete_scoped(proto, LatencyTarget, (org.id, p["scope"]))
