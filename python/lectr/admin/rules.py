"""Admin API: routing rules, fallback chains and provider health."""

from __future__ import annotations

import msgspec

from lectr.admin.routes import Context, Request, route
from lectr.admin.schemas import FallbackIn, ReorderIn, RuleIn


class RuleRoutes:
    """/admin/orgs/{org}/rules, /fallbacks, and /admin/health."""

    def __init__(self, ctx: Context) -> None:
        self._m = ctx.manager
        self._health = ctx.health

    @route("GET", "/admin/orgs/{org}/rules")
    async def list_rules(self, req: Request) -> None:
        req.json(200, {"data": await self._m.list_rules(req.params["org"])})

    @route("POST", "/admin/orgs/{org}/rules")
    async def create_rule(self, req: Request) -> None:
        body: RuleIn = await req.body(RuleIn)
        fields = {k: v for k, v in msgspec.structs.asdict(body).items() if v is not None}
        req.json(201, await self._m.create_rule(req.params["org"], fields))

    @route("PATCH", "/admin/orgs/{org}/rules/{rule}")
    async def update_rule(self, req: Request) -> None:
        body: RuleIn = await req.body(RuleIn)
        # An explicit null clears a condition or target; an absent field keeps it.
        changes = msgspec.json.decode(msgspec.json.encode(body))
        req.json(200, await self._m.update_rule(req.params["org"], req.params["rule"], changes))

    @route("DELETE", "/admin/orgs/{org}/rules/{rule}")
    async def delete_rule(self, req: Request) -> None:
        rule = await self._m.delete_rule(req.params["org"], req.params["rule"])
        req.json(200, {"deleted": rule.id})

    @route("POST", "/admin/orgs/{org}/rules/reorder")
    async def reorder_rules(self, req: Request) -> None:
        body: ReorderIn = await req.body(ReorderIn)
        req.json(200, {"data": await self._m.reorder_rules(req.params["org"], body.order)})

    @route("GET", "/admin/orgs/{org}/fallbacks")
    async def list_fallbacks(self, req: Request) -> None:
        req.json(200, {"data": await self._m.list_fallbacks(req.params["org"])})

    @route("PUT", "/admin/orgs/{org}/fallbacks/{scope}")
    async def set_fallback(self, req: Request) -> None:
        body: FallbackIn = await req.body(FallbackIn)
        chain = await self._m.set_fallback(
            req.params["org"], req.params["scope"], body.targets, body.on_status
        )
        req.json(200, chain)

    @route("DELETE", "/admin/orgs/{org}/fallbacks/{scope}")
    async def delete_fallback(self, req: Request) -> None:
        req.json(200, {"deleted": await self._m.delete_fallback(req.params["org"], req.params["scope"])})

    @route("GET", "/admin/health")
    async def provider_health(self, req: Request) -> None:
        req.json(200, {"data": self._health.table()})
