"""Admin API: overview, anomalies, recommendations and applying one."""

from __future__ import annotations

from lectr.admin.routes import Context, Request, route
from lectr.admin.schemas import ApplyIn
from lectr.control import validation as check


class InsightRoutes:
    """/admin/orgs/{org}/overview, /anomalies, /recommendations."""

    def __init__(self, ctx: Context) -> None:
        self._m = ctx.manager
        self._insights = ctx.insights

    @route("GET", "/admin/orgs/{org}/overview", admin_only=False)
    async def overview(self, req: Request) -> None:
        org = await self._m.org(req.params["org"])
        q = req.query()
        since, until = check.optional_time(q, "since"), check.optional_time(q, "until")
        req.json(200, await self._insights.overview(org.id, since, until))

    @route("GET", "/admin/orgs/{org}/anomalies", admin_only=False)
    async def anomalies(self, req: Request) -> None:
        org = await self._m.org(req.params["org"])
        history = req.query().get("all", "0").lower() in ("1", "true", "yes")
        req.json(200, await self._insights.anomalies(org.id, history))

    @route("POST", "/admin/orgs/{org}/anomalies/{anomaly}/dismiss")
    async def dismiss_anomaly(self, req: Request) -> None:
        req.json(200, await self._m.dismiss_anomaly(req.params["org"], req.params["anomaly"]))

    @route("GET", "/admin/orgs/{org}/recommendations", admin_only=False)
    async def recommendations(self, req: Request) -> None:
        org = await self._m.org(req.params["org"])
        days = check.days(req.query())
        req.json(200, {"data": await self._insights.recommendations(org.id, days)})

    @route("POST", "/admin/orgs/{org}/recommendations/{rec}/apply")
    async def apply_recommendation(self, req: Request) -> None:
        body: ApplyIn = await req.body(ApplyIn)
        days = check.days(req.query())
        req.json(
            201,
            await self._m.apply_recommendation(
                req.params["org"], req.params["rec"], body.split_percent, days
            ),
        )
