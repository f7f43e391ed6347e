"""Admin API: the request log, paged, and its CSV export (streamed)."""

from __future__ import annotations

import re

from lectr.admin.routes import Context, Request, route
from lectr.admin.schemas import LogPage
from lectr.control import validation as check
from lectr.errors import InvalidRequest
from lectr.observe import export


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64]


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
        f = check.log_filter(org.id, req.query())
        transport = req.proto.response_stream(
            200,
            [
                ("content-type", "text/csv; charset=utf-8"),
                ("content-disposition", f'attachment; filename="lectr-{_safe(org.name)}-requests.csv"'),
            ],
        )
        await transport.send_str(export.header())
        async for batch in self._m.store.export_requests(f):
            await transport.send_str(export.rows(batch))
