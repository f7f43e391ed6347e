"""Admin API: budgets, rate limits, latency targets, and their live state
(spend, remaining, usage, p95 status)."""

from __future__ import annotations

from lectr.admin.routes import Context, Request, route
from lectr.admin.schemas import BudgetIn, LimitIn, TargetIn


class PolicyRoutes:
    """/admin/orgs/{org}/policy, /budgets, /limits, /latency-targets."""

    def __init__(self, ctx: Context) -> None:
        self._m = ctx.manager
        self._policy = ctx.policy
        self._webhooks = ctx.webhooks

    @route("GET", "/admin/orgs/{org}/policy", admin_only=False)
    async def policy_state(self, req: Request) -> None:
        org = await self._m.org(req.params["org"])
        state = await self._policy.state(org.id)
        state["alerts"] = [r for r in self._webhooks.recent if r["event"].get("org_id") == org.id]
        req.json(200, state)

    @route("GET", "/admin/orgs/{org}/budgets")
    async def list_budgets(self, req: Request) -> None:
        req.json(200, {"data": await self._m.list_scoped(req.params["org"], "budgets")})

    @route("PUT", "/admin/orgs/{org}/budgets/{scope}/{period}")
    async def set_budget(self, req: Request) -> None:
        b: BudgetIn = await req.body(BudgetIn)
        p = req.params
        budget = await self._m.set_budget(
            p["org"], p["scope"], p["period"], b.soft_usd, b.hard_usd, b.action, b.fallback_model
        )
        req.json(200, budget)

    @route("DELETE", "/admin/orgs/{org}/budgets/{scope}/{period}")
    async def delete_budget(self, req: Request) -> None:
        p = req.params
        req.json(200, {"deleted": await self._m.delete_scoped(p["org"], "budgets", p["scope"], p["period"])})

    @route("GET", "/admin/orgs/{org}/limits")
    async def list_limits(self, req: Request) -> None:
        req.json(200, {"data": await self._m.list_scoped(req.params["org"], "limits")})

    @route("PUT", "/admin/orgs/{org}/limits/{scope}")
    async def set_limit(self, req: Request) -> None:
        b: LimitIn = await req.body(LimitIn)
        limit = await self._m.set_limit(
            req.params["org"], req.params["scope"], b.requests_per_min, b.tokens_per_min, b.concurrent_streams
        )
        req.json(200, limit)

    @route("DELETE", "/admin/orgs/{org}/limits/{scope}")
    async def delete_limit(self, req: Request) -> None:
        req.json(
            200, {"deleted": await self._m.delete_scoped(req.params["org"], "limits", req.params["scope"])}
        )

    @route("GET", "/admin/orgs/{org}/latency-targets")
    async def list_targets(self, req: Request) -> None:
        req.json(200, {"data": await self._m.list_scoped(req.params["org"], "targets")})

    @route("PUT", "/admin/orgs/{org}/latency-targets/{scope}")
    async def set_target(self, req: Request) -> None:
        b: TargetIn = await req.body(TargetIn)
        req.json(200, await self._m.set_target(req.params["org"], req.params["scope"], b.p95_ms))

    @route("DELETE", "/admin/orgs/{org}/latency-targets/{scope}")
    async def delete_target(self, req: Request) -> None:
        req.json(
            200, {"deleted": await self._m.delete_scoped(req.params["org"], "targets", req.params["scope"])}
        )
