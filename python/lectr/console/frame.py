"""What every console page shares: the request as pages see it, the context,
the org a page is about, the frame around it (org switcher, range), and
rendering it as HTML with the security headers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from jinja2 import Environment, FileSystemLoader, select_autoescape

from lectr.console import figures
from lectr.console.session import Session, Signer
from lectr.control import ControlPlane
from lectr.control.manage import Manager
from lectr.control.policy.engine import Policy
from lectr.errors import Forbidden, NotFound
from lectr.gateway.breaker import Health
from lectr.types import OrgEntry

HERE = Path(__file__).parent
# Each range's length and chart step: steps of an hour or a day read the hour
# or day rollups (a 24 h chart from minute rows would sum 60x as many rows).
RANGES = {"1h": (3600, 60), "24h": (86400, 3600), "7d": (7 * 86400, 3 * 3600), "30d": (30 * 86400, 86400)}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
    ("x-frame-options", "DENY"),
    ("cache-control", "no-store"),
]
# Notices after a successful change (fixed texts: nothing from the URL is echoed).
DONE = {
    "rule_saved": "Rule saved.",
    "rule_deleted": "Rule deleted.",
    "rules_reordered": "Order saved.",
    "budget_saved": "Spend limit saved.",
    "limit_saved": "Rate limit saved.",
    "target_saved": "Latency target saved.",
    "deleted": "Deleted.",
    "fallback_saved": "Fallback path saved.",
    "dismissed": "Anomaly dismissed.",
    "applied": "Recommendation applied: the new rule is in Routing rules.",
    "key_revoked": "Key revoked.",
    "azure_saved": "Azure settings saved.",
}
READ_ONLY = "an org key's session is read-only: sign in with the admin token to change it"


class ConsoleContext(msgspec.Struct, frozen=True):
    """What the console reads and changes through."""

    manager: Manager
    control: ControlPlane
    health: Health
    policy: Policy
    admin_token: str | None
    secret: str | None = None


class Redirect(Exception):
    def __init__(self, location: str) -> None:
        self.location = location


class Page:
    """One console request: scope, protocol, form/query, session."""

    def __init__(self, scope: Any, proto: Any, session: Session | None) -> None:
        self.scope = scope
        self.proto = proto
        self.session = session
        self.query = dict(parse_qsl(scope.query_string))
        self.form: dict[str, str] = {}
        self.error: dict[str, Any] | None = None
        self.status = 200

    def again(self, org: OrgEntry, error: dict[str, Any] | None = None, status: int = 200) -> Page:
        """This page re-rendered after a form: the same org, the error beside its field."""
        self.query = {
            "org": org.id,
            **({"range": self.form["range"]} if self.form.get("range") in RANGES else {}),
        }
        self.error = error
        self.status = status
        return self


def send(proto: Any, status: int, body: bytes, ctype: str, extra: list[tuple[str, str]]) -> None:
    proto.response_bytes(status, [("content-type", ctype), *SECURITY_HEADERS, *extra], body)


def send_html(proto: Any, status: int, html: str, extra: list[tuple[str, str]] | None = None) -> None:
    send(proto, status, html.encode(), "text/html; charset=utf-8", extra or [])


def redirect(proto: Any, location: str, extra: list[tuple[str, str]] | None = None) -> None:
    proto.response_bytes(303, [("location", location), *SECURITY_HEADERS, *(extra or [])], b"")


def range_of(page: Page) -> str:
    """The page's time range: the query's when it is one of RANGES, else 24 h."""
    rng = page.query.get("range", "24h")
    return rng if rng in RANGES else "24h"


def window(rng: str) -> tuple[float, float]:
    now = time.time()
    return now - RANGES[rng][0], now


class Frame:
    """Templates, the signer, and the org and frame of a page."""

    def __init__(self, ctx: ConsoleContext, signer: Signer) -> None:
        self.ctx = ctx
        self.m = ctx.manager
        self.signer = signer
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            ms=figures.fmt_ms, usd=figures.fmt_usd, when=figures.fmt_time, spark=figures.spark
        )

    def render(self, template: str, page: Page | None, **ctx: Any) -> str:
        s = page.session if page else None
        base = {
            "session": s,
            "csrf": self.signer.csrf(s) if s else "",
            "done": DONE.get(page.query.get("done", "")) if page else None,
            "error": page.error if page else None,
            "refill": page.form if page and page.error else {},
        }
        return self.env.get_template(template).render(**base, **ctx)

    def page(self, page: Page, template: str, **ctx: Any) -> None:
        send_html(page.proto, page.status, self.render(template, page, **ctx))

    async def org(self, page: Page, ref: str | None = None) -> OrgEntry:
        """The org this page is about; an org session may only see its own."""
        s = page.session
        assert s is not None
        ref = ref if ref is not None else (page.form.get("org") or page.query.get("org"))
        if not s.admin:
            if ref and ref != s.org_id:
                raise Forbidden("this session can only see its own org")
            return await self.m.org(s.org_id or "")
        if ref:
            return await self.m.org(ref)
        orgs = await self.m.store.list_orgs()
        if not orgs:
            raise NotFound("no orgs yet: create one with `lectr orgs create NAME`")
        return orgs[0]

    async def org_to_change(self, page: Page) -> OrgEntry:
        """The org a form changes: only the admin's session changes anything."""
        s = page.session
        assert s is not None
        org = await self.org(page)
        if not s.admin:
            raise Forbidden(READ_ONLY)
        return org

    async def frame(self, page: Page, org: OrgEntry) -> dict[str, Any]:
        """What every page's frame shows: the org (and the switcher for the admin), the range."""
        s = page.session
        assert s is not None
        orgs = await self.m.store.list_orgs() if s.admin else [org]
        return {
            "org": org,
            "orgs": orgs,
            "range": range_of(page),
            "ranges": list(RANGES),
            "path": page.scope.path,
        }
