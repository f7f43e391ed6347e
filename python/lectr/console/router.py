"""The console at /console: static files, the session check, CSRF on every
form, and dispatch to the pages (`views`) and forms (`actions`); each
change goes through `control.manage.Manager`."""

from __future__ import annotations

import mimetypes
from typing import Any
from urllib.parse import parse_qsl, urlencode

from lectr.console import forms
from lectr.console.actions import Action, Actions
from lectr.console.frame import (
    HERE,
    RANGES,
    SECURITY_HEADERS,
    ConsoleContext,
    Frame,
    Page,
    Redirect,
    redirect,
    send_html,
)
from lectr.console.session import Session, Signer, clear_cookie_header, read_cookie, secret_from
from lectr.console.signin import SignIn
from lectr.console.views import Views
from lectr.errors import Forbidden, LectrError, NotFound


class Console:
    """Serves /console: sign-in, session and CSRF checks, pages and forms."""

    def __init__(self, ctx: ConsoleContext) -> None:
        self._ctx = ctx
        self._admin = (ctx.admin_token or "").encode()
        self._signer = Signer(secret_from(ctx.secret, ctx.admin_token))
        self._f = Frame(ctx, self._signer)
        self._signin = SignIn(self._f, self._admin)
        self._views = Views(self._f)
        self._actions = Actions(self._f)
        self._static: dict[str, tuple[bytes, str]] = {}
        for p in (HERE / "static").iterdir():
            if p.is_file() and p.suffix in (".js", ".css", ".svg"):
                ctype = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
                if ctype.startswith("text/") or ctype.endswith("javascript"):
                    ctype += "; charset=utf-8"
                self._static[p.name] = (p.read_bytes(), ctype)

    async def handle(self, scope: Any, proto: Any) -> None:
        path = scope.path[len("/console") :].rstrip("/")
        try:
            await self._dispatch(path, scope, proto)
        except Redirect as r:
            redirect(proto, r.location)
        except LectrError as e:
            html = self._f.render("error.html", None, message=e.message, status=e.status)
            send_html(proto, e.status, html)

    def _session(self, scope: Any) -> Session | None:
        s = self._signer.load(read_cookie(scope.headers.get("cookie")))
        if s is None:
            return None
        snap = self._ctx.control.snapshot
        if not s.admin:
            # An org session lasts only while its key is live and its org enabled.
            entry = snap.keys_by_prefix.get(s.prefix or "")
            org = snap.orgs.get(s.org_id or "")
            if entry is None or entry.org_id != s.org_id or org is None or org.disabled:
                return None
        elif not self._admin:
            return None
        return s

    async def _dispatch(self, path: str, scope: Any, proto: Any) -> None:
        if path.startswith("/static/") and scope.method == "GET":
            item = self._static.get(path[len("/static/") :])
            if item is None:
                raise NotFound("no such file")
            proto.response_bytes(
                200,
                [("content-type", item[1]), ("cache-control", "public, max-age=3600"), *SECURITY_HEADERS[:2]],
                item[0],
            )
            return
        if path == "/signin":
            return await self._signin.handle(scope, proto)
        session = self._session(scope)
        if session is None:
            target = scope.path if scope.method == "GET" else "/console"
            if scope.query_string and scope.method == "GET":
                target += "?" + scope.query_string
            raise Redirect("/console/signin?" + urlencode({"next": target}))
        page = Page(scope, proto, session)
        if scope.method == "POST":
            page.form = dict(parse_qsl((await proto()).decode("utf-8", "replace"), keep_blank_values=True))
            if not self._signer.check_csrf(session, page.form.get("csrf")):
                raise Forbidden("the form has expired or did not come from this console: reload and retry")
            if path == "/signout":
                redirect(proto, "/console/signin", [("set-cookie", clear_cookie_header())])
                return
            if path in ("/keys/create", "/keys/rotate"):
                return await self._key_issue(page, rotate=path == "/keys/rotate")
            entry = self._actions.table.get(path)
            if entry is None:
                raise NotFound(f"no console form {path!r}")
            return await self._post(page, *entry)
        if scope.method != "GET":
            raise NotFound(f"no console route for {scope.method} {path}")
        handler = self._views.table.get(path)
        if handler is None:
            raise NotFound(f"no console page {path!r}")
        await handler(page)

    async def _post(self, page: Page, view: str, action: Action) -> None:
        org = await self._f.org_to_change(page)
        try:
            done = await action(page, org)
        except LectrError as e:
            form = page.form.get("form", "")
            fields = tuple(k for k in page.form if k not in ("csrf", "org", "form"))
            error = {"form": form, "field": forms.field_of(e.message, fields), "message": e.message}
            await self._views.table["/" + view](page.again(org, error=error, status=e.status))
            return
        q = {"org": org.id, "done": done}
        if page.form.get("range") in RANGES:
            q["range"] = page.form["range"]
        raise Redirect(f"/console/{'' if view == 'overview' else view}?{urlencode(q)}")

    async def _key_issue(self, page: Page, rotate: bool) -> None:
        org = await self._f.org_to_change(page)
        try:
            new = await self._actions.key_issue(page, org, rotate)
        except LectrError as e:
            error = {"form": "keys", "field": None, "message": e.message}
            await self._views.keys(page.again(org, error=error, status=e.status))
            return
        # Shown in this response only: never in a URL, a cookie or a log.
        await self._views.keys(page.again(org), new_key=new)
