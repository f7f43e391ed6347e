"""The console's sign-in: the admin token or an org key in, a signed session
cookie out; the form is bound to the browser against login CSRF."""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import parse_qsl

from lectr.console.frame import Frame, redirect, send_html
from lectr.console.session import cookie_header, read_cookie
from lectr.errors import LectrError
from lectr.gateway import auth

PRE_COOKIE = "lectr_console_pre"


def _next(raw: str | None) -> str:
    """Where to go after sign-in: a console path, never another site."""
    nxt = raw or "/console"
    return "/console" if not nxt.startswith("/console") or nxt.startswith("//") else nxt


def _https(scope: Any) -> bool:
    """Whether the browser reached us over TLS (directly or through a proxy
    that says so): then the session cookie is Secure too."""
    return bool(scope.scheme == "https" or scope.headers.get("x-forwarded-proto") == "https")


class SignIn:
    """GET shows the form, POST checks the token and issues the session."""

    def __init__(self, frame: Frame, admin_token: bytes) -> None:
        self._f = frame
        self._signer = frame.signer
        self._admin = admin_token

    async def handle(self, scope: Any, proto: Any) -> None:
        nxt = _next(dict(parse_qsl(scope.query_string)).get("next"))
        pre = read_cookie(scope.headers.get("cookie"), PRE_COOKIE)
        if scope.method == "GET" or not pre:
            # Bind the sign-in form to this browser (login CSRF): a random
            # cookie and a MAC of it in the form.
            self._form(proto, 200, nxt, None)
            return
        form = dict(parse_qsl((await proto()).decode("utf-8", "replace")))
        nxt = _next(form.get("next") or nxt)
        error = None
        token = form.get("token", "").strip()
        if not hmac.compare_digest(form.get("csrf", ""), self._pre_mac(pre)):
            error = "the sign-in form expired: try again"
        elif token.startswith("lc_key_"):
            try:
                org = auth.resolve(self._f.ctx.control.snapshot, token)
            except LectrError as e:
                error = e.message.replace("X-Lectr-Key", "org key")
            else:
                _, cookie = self._signer.issue(False, org.id, token[7:15])
                redirect(proto, nxt, [("set-cookie", cookie_header(cookie, _https(scope)))])
                return
        elif self._admin and hmac.compare_digest(token.encode(), self._admin):
            _, cookie = self._signer.issue(True, None, None)
            redirect(proto, nxt, [("set-cookie", cookie_header(cookie, _https(scope)))])
            return
        else:
            error = "that is neither the admin token nor a live org key"
        self._form(proto, 401, nxt, error)

    def _form(self, proto: Any, status: int, nxt: str, error: str | None) -> None:
        pre = secrets.token_urlsafe(16)
        html = self._f.env.get_template("signin.html").render(
            next=nxt, csrf=self._pre_mac(pre), error=error, admin_enabled=bool(self._admin)
        )
        cookie = f"{PRE_COOKIE}={pre}; Path=/console/signin; HttpOnly; SameSite=Strict; Max-Age=3600"
        send_html(proto, status, html, [("set-cookie", cookie)])

    def _pre_mac(self, pre: str) -> str:
        return self._signer._mac(b"signin:" + pre.encode())
