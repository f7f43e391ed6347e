"""Admin API: orgs and their keys."""

from __future__ import annotations

from lectr.admin.routes import Context, Request, route
from lectr.admin.schemas import KeyOut, OrgCreate, OrgCreated, OrgOut, OrgPatch


class OrgRoutes:
    """/admin/orgs and /admin/orgs/{org}/keys."""

    def __init__(self, ctx: Context) -> None:
        self._m = ctx.manager

    @route("GET", "/admin/orgs")
    async def list_orgs(self, req: Request) -> None:
        req.json(200, {"data": [OrgOut.of(o) for o in await self._m.store.list_orgs()]})

    @route("POST", "/admin/orgs")
    async def create_org(self, req: Request) -> None:
        body: OrgCreate = await req.body(OrgCreate)
        org, key = await self._m.create_org(body.name)
        req.json(201, OrgCreated(OrgOut.of(org), key.key))

    @route("GET", "/admin/orgs/{org}", admin_only=False)
    async def get_org(self, req: Request) -> None:
        req.json(200, OrgOut.of(await self._m.org(req.params["org"])))

    @route("PATCH", "/admin/orgs/{org}")
    async def patch_org(self, req: Request) -> None:
        org = await self._m.org(req.params["org"])
        body: OrgPatch = await req.body(OrgPatch)
        if body.disabled is not None:
            org = await self._m.set_org_disabled(org.id, body.disabled)
        if body.azure_endpoint is not None or body.azure_api_version is not None:
            # PATCH: an absent field keeps its value.
            org = await self._m.set_org_azure(
                org.id,
                org.azure_endpoint if body.azure_endpoint is None else body.azure_endpoint,
                org.azure_api_version if body.azure_api_version is None else body.azure_api_version,
            )
        req.json(200, OrgOut.of(org))

    @route("GET", "/admin/orgs/{org}/keys")
    async def list_keys(self, req: Request) -> None:
        req.json(200, {"data": [KeyOut.of(k) for k in await self._m.list_keys(req.params["org"])]})

    @route("POST", "/admin/orgs/{org}/keys")
    async def create_key(self, req: Request) -> None:
        _, key = await self._m.create_key(req.params["org"])
        req.json(201, key)

    @route("POST", "/admin/orgs/{org}/keys/{prefix}/rotate")
    async def rotate_key(self, req: Request) -> None:
        _, key = await self._m.rotate_key(req.params["org"], req.params["prefix"])
        req.json(201, key)

    @route("DELETE", "/admin/orgs/{org}/keys/{prefix}")
    async def revoke_key(self, req: Request) -> None:
        _, prefix = await self._m.revoke_key(req.params["org"], req.params["prefix"])
        req.json(200, {"revoked": prefix})
