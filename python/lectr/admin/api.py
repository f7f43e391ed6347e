"""The admin JSON API under /admin: who is calling (the admin token, or an
org key reading its own org), which area's handler answers, and errors in
the OpenAI shape. Every change goes through `control.manage.Manager`."""

from __future__ import annotations

import hmac
from typing import Any

from lectr.admin.insights import InsightRoutes
from lectr.admin.orgs import OrgRoutes
from lectr.admin.policy import PolicyRoutes
from lectr.admin.requests import RequestRoutes
from lectr.admin.routes import JSON, ROUTES, Context, Principal, Request
from lectr.admin.rules import RuleRoutes
from lectr.errors import AdminAuthRequired, Forbidden, LectrError, MethodNotAllowed, NotFound
from lectr.gateway import auth

AREAS = (OrgRoutes, RuleRoutes, PolicyRoutes, InsightRoutes, RequestRoutes)


class AdminAPI:
    """Routes /admin/... requests to the area that owns the path."""

    def __init__(self, admin_token: str | None, ctx: Context) -> None:
        self._token = (admin_token or "").encode()
        self._ctx = ctx
        instances = [cls(ctx) for cls in AREAS]
        # Each route's handler, bound to the area instance whose class defines it.
        self._routes = [
            (r, next(getattr(a, r.name) for a in instances if type(a).__dict__.get(r.name) is r.fn))
            for r in ROUTES
        ]

    async def handle(self, scope: Any, proto: Any) -> None:
        try:
            await self._dispatch(scope, proto)
        except LectrError as e:
            proto.response_bytes(e.status, JSON, e.body())

    async def _dispatch(self, scope: Any, proto: Any) -> None:
        path = scope.path.rstrip("/")
        if path == "/admin/openapi.json" and scope.method == "GET":
            from lectr.admin.openapi import document

            proto.response_bytes(200, JSON, document())
            return
        allowed = []
        for r, handler in self._routes:
            m = r.rx.match(path)
            if m is None:
                continue
            if r.method != scope.method:
                allowed.append(r.method)
                continue
            who = self._principal(scope)
            params = m.groupdict()
            if r.admin_only and not who.admin:
                raise Forbidden("this endpoint needs the admin token")
            if not who.admin:
                await self._own_org(who, params["org"])
            await handler(Request(scope, proto, who, params))
            return
        if allowed:
            raise MethodNotAllowed(f"{path} accepts {', '.join(allowed)}")
        raise NotFound(f"no admin route for {scope.method} {path}")

    def _principal(self, scope: Any) -> Principal:
        authz: str = scope.headers.get("authorization") or ""
        if authz[:7].lower() == "bearer ":
            if not self._token:
                raise AdminAuthRequired("the admin API is disabled: set LECTR_ADMIN_TOKEN")
            if hmac.compare_digest(authz[7:].strip().encode(), self._token):
                return Principal(admin=True)
            raise AdminAuthRequired("invalid admin token")
        key = scope.headers.get("x-lectr-key")
        if key:
            org = auth.resolve(self._ctx.control.snapshot, key)
            return Principal(admin=False, org_id=org.id)
        raise AdminAuthRequired(
            "send Authorization: Bearer <admin token>, or X-Lectr-Key for your org's own data"
        )

    async def _own_org(self, who: Principal, ref: str) -> None:
        # Another org and no org answer alike: a 403 told an org key which
        # other orgs exist.
        try:
            org = await self._ctx.manager.org(ref)
        except NotFound:
            org = None
        if org is None or org.id != who.org_id:
            raise NotFound(f"no org {ref[:200]!r} for this key")
