"""Admin API: the request log, paged, and its CSV export (streamed)."""

from __future__ import annotations

from lectr.admin.routes import Context, Request, route
from lectr.admin.schemas import LogPage
from lectr.control import validation as check
from lectr.errors import InvalidRequest
from lectr.observe import export


class RequestRoutes:
    """/admin/orgs/{org}/requests and requests.csv."""

    def __init__(self, ctx: Context) -> None:
        self._m = ctx.manager

    @route("GET", "/admin/orgs/{org}/requests", admin_only=False)
    async def requests(self, req: Request) -> None:
        org = await self._m.org(req.params["org"])
        q = req.query()
        try:
            limit = min(max(int(q.get("limit", "100")), 1), 1000)
        except ValueError:
            raise InvalidRequest("limit must be an integer") from None
        try:
            page, cursor = await self._m.store.query_requests(
                check.log_filter(org.id, q), q.get("cursor"), limit
            )
        except ValueError as e:
            raise InvalidRequest(str(e)) from None
        req.json(200, LogPage(page, cursor))

    @route("GET", "/admin/orgs/{org}/requests.csv", admin_only=False)
    async def requests_csv(self, req: Request) -> None:
        org = await self._m.org(req.params["org"])
        await export.stream(req.proto, self._m.store, check.log_filter(org.id, req.query()), org.name)
