"""Console routing, sign-in, tenancy checks and every page and form; each
change goes through `control.manage.Manager`, each page makes a bounded
number of store queries (rollups for numbers, never a scan of records)."""

from __future__ import annotations

import asyncio
import hmac
import math
import mimetypes
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import msgspec
from jinja2 import Environment, FileSystemLoader, select_autoescape

from lectr.console.session import (
    Session,
    Signer,
    clear_cookie_header,
    cookie_header,
    read_cookie,
    secret_from,
)
from lectr.control import ControlPlane
from lectr.control import validation as check
from lectr.control.manage import RULE_FIELDS, SCOPED, Manager
from lectr.control.policy.engine import Policy
from lectr.errors import Forbidden, InvalidRequest, LectrError, NotFound
from lectr.gateway import auth
from lectr.gateway.breaker import Health
from lectr.gateway.providers import REGISTRY, detect
from lectr.insights import overview as _overview
from lectr.insights.histogram import HIST_BUCKETS, percentile
from lectr.observe import export
from lectr.store.base import STATUS_CLASSES
from lectr.store.rollups import SUM_COLS
from lectr.types import OrgEntry, Rule, Target

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
LOG_FILTERS = ("feature", "task", "model", "provider", "status", "rule", "since", "until")
PAGE_SIZE = 50
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
PRE_COOKIE = "lectr_console_pre"


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


def _fnum(form: dict[str, str], name: str) -> float | None:
    v = form.get(name, "").strip()
    if not v:
        return None
    try:
        out = float(v)
    except ValueError:
        raise InvalidRequest(f"{name} must be a number") from None
    if not math.isfinite(out):
        raise InvalidRequest(f"{name} must be a number")
    return out


def _inum(form: dict[str, str], name: str) -> int | None:
    v = form.get(name, "").strip()
    if not v:
        return None
    try:
        return int(v)
    except ValueError:
        raise InvalidRequest(f"{name} must be a whole number") from None


def _opt(form: dict[str, str], name: str) -> str | None:
    v = form.get(name, "").strip()
    return v or None


def _field_of(message: str, fields: tuple[str, ...]) -> str | None:
    """The form field an error message is about (messages name their field)."""
    for f in sorted(fields, key=len, reverse=True):
        if f in message:
            return f
    return None


# The rule form's fields: the rule's own, but `enabled` (a button of its own).
RULE_FORM = sorted(RULE_FIELDS - {"enabled"})


def _rule_changes(form: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {f: _opt(form, f) for f in RULE_FORM if f not in ("priority", "split_percent")}
    out["name"] = form.get("name", "").strip()
    out["priority"] = _inum(form, "priority")
    split = _inum(form, "split_percent")
    out["split_percent"] = 100 if split is None else split
    out["enabled"] = form.get("enabled") == "on"
    return out


def _series(rows: list[Any], lo: int, hi: int, width: int, offset: int = 0) -> dict[str, list[Any]]:
    """Per-window requests, errors, cost and p95 from `rollup_series` rows
    (columns from `offset` on), missing windows as zero."""
    by_w = {int(r[offset]): r for r in rows}
    ts: list[int] = []
    req: list[int] = []
    err: list[int] = []
    cost: list[float] = []
    p95: list[float | None] = []
    start = lo // width * width
    for w in range(start, hi, width):
        r = by_w.get(w)
        ts.append(w)
        if r is None:
            req.append(0)
            err.append(0)
            cost.append(0.0)
            p95.append(None)
            continue
        base = offset + 1
        req.append(int(r[base] or 0))
        err.append(int(r[base + 1] or 0))
        cost.append(round(float(r[base + 2] or 0.0), 6))
        if len(r) > base + 3:
            p95.append(percentile([r[base + 3 + i] or 0 for i in range(HIST_BUCKETS)]))
        else:
            p95.append(None)
    return {"ts": ts, "requests": req, "errors": err, "cost": cost, "p95": p95}


def _spark(values: list[Any], w: int = 120, h: int = 24) -> str:
    """SVG polyline points for a sparkline (numbers only, so safe to inline)."""
    vals = [float(v or 0) for v in values]
    if not vals:
        return ""
    top = max(vals) or 1.0
    step = w / max(len(vals) - 1, 1)
    return " ".join(f"{i * step:.1f},{h - 1 - (v / top) * (h - 2):.1f}" for i, v in enumerate(vals))


def _fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1000:.2f} s" if v >= 1000 else f"{v:.0f} ms"


def _fmt_usd(v: float | None) -> str:
    if v is None:
        return "-"
    if v and abs(v) < 0.01:
        return f"${v:.6f}"
    return f"${v:,.4f}" if abs(v) < 1 else f"${v:,.2f}"


def _fmt_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + "Z"


class Console:
    """Serves /console: sign-in, session and CSRF checks, pages and forms."""

    def __init__(self, ctx: ConsoleContext) -> None:
        self._ctx = ctx
        self._m = ctx.manager
        self._admin = (ctx.admin_token or "").encode()
        self._signer = Signer(secret_from(ctx.secret, ctx.admin_token))
        self._env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters.update(ms=_fmt_ms, usd=_fmt_usd, when=_fmt_time, spark=_spark)
        self._static: dict[str, tuple[bytes, str]] = {}
        for p in (HERE / "static").iterdir():
            if p.is_file() and p.suffix in (".js", ".css", ".svg"):
                ctype = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
                if ctype.startswith("text/") or ctype.endswith("javascript"):
                    ctype += "; charset=utf-8"
                self._static[p.name] = (p.read_bytes(), ctype)
        self._gets: dict[str, Callable[[Page], Awaitable[None]]] = {
            "": self.overview,
            "/overview/live": self.overview_live,
            "/features": self.features,
            "/models": self.models,
            "/requests": self.requests,
            "/requests.csv": self.requests_csv,
            "/request": self.request_detail,
            "/rules": self.rules,
            "/limits": self.limits,
            "/fallbacks": self.fallbacks,
            "/anomalies": self.anomalies,
            "/recommendations": self.recommendations,
            "/keys": self.keys,
        }
        self._posts: dict[str, tuple[str, Callable[[Page, OrgEntry], Awaitable[str]]]] = {
            "/rules/create": ("rules", self.rule_create),
            "/rules/update": ("rules", self.rule_update),
            "/rules/toggle": ("rules", self.rule_toggle),
            "/rules/delete": ("rules", self.rule_delete),
            "/rules/move": ("rules", self.rule_move),
            "/budgets/set": ("limits", self.budget_set),
            "/budgets/delete": ("limits", self.budget_delete),
            "/limits/set": ("limits", self.limit_set),
            "/limits/delete": ("limits", self.limit_delete),
            "/targets/set": ("limits", self.target_set),
            "/targets/delete": ("limits", self.target_delete),
            "/fallbacks/set": ("fallbacks", self.fallback_set),
            "/fallbacks/delete": ("fallbacks", self.fallback_delete),
            "/anomalies/dismiss": ("anomalies", self.anomaly_dismiss),
            "/recommendations/apply": ("recommendations", self.recommendation_apply),
            "/keys/revoke": ("keys", self.key_revoke),
            "/settings/azure": ("keys", self.azure_set),
        }

    # --- plumbing -----------------------------------------------------------

    async def handle(self, scope: Any, proto: Any) -> None:
        path = scope.path[len("/console") :].rstrip("/")
        try:
            await self._dispatch(path, scope, proto)
        except Redirect as r:
            self._redirect(proto, r.location)
        except LectrError as e:
            self._html(proto, e.status, self._render("error.html", None, message=e.message, status=e.status))

    def _send(self, proto: Any, status: int, body: bytes, ctype: str, extra: list[tuple[str, str]]) -> None:
        proto.response_bytes(status, [("content-type", ctype), *SECURITY_HEADERS, *extra], body)

    def _html(self, proto: Any, status: int, html: str, extra: list[tuple[str, str]] | None = None) -> None:
        self._send(proto, status, html.encode(), "text/html; charset=utf-8", extra or [])

    def _redirect(self, proto: Any, location: str, extra: list[tuple[str, str]] | None = None) -> None:
        proto.response_bytes(303, [("location", location), *SECURITY_HEADERS, *(extra or [])], b"")

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
            return await self.signin(scope, proto)
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
                self._redirect(proto, "/console/signin", [("set-cookie", clear_cookie_header())])
                return
            if path == "/keys/create":
                return await self.key_create(page)
            if path == "/keys/rotate":
                return await self.key_rotate(page)
            entry = self._posts.get(path)
            if entry is None:
                raise NotFound(f"no console form {path!r}")
            return await self._post(page, *entry)
        if scope.method != "GET":
            raise NotFound(f"no console route for {scope.method} {path}")
        handler = self._gets.get(path)
        if handler is None:
            raise NotFound(f"no console page {path!r}")
        await handler(page)

    async def _org(self, page: Page, ref: str | None = None) -> OrgEntry:
        """The org this page is about; an org session may only see its own."""
        s = page.session
        assert s is not None
        ref = ref if ref is not None else (page.form.get("org") or page.query.get("org"))
        if not s.admin:
            if ref and ref != s.org_id:
                raise Forbidden("this session can only see its own org")
            return await self._m.org(s.org_id or "")
        if ref:
            return await self._m.org(ref)
        orgs = await self._m.store.list_orgs()
        if not orgs:
            raise NotFound("no orgs yet: create one with `lectr orgs create NAME`")
        return orgs[0]

    async def _post(self, page: Page, view: str, action: Callable[[Page, OrgEntry], Awaitable[str]]) -> None:
        s = page.session
        assert s is not None
        org = await self._org(page)
        if not s.admin:
            raise Forbidden("an org key's session is read-only: sign in with the admin token to change it")
        try:
            done = await action(page, org)
        except LectrError as e:
            form = page.form.get("form", "")
            fields = tuple(k for k in page.form if k not in ("csrf", "org", "form"))
            error = {"form": form, "field": _field_of(e.message, fields), "message": e.message}
            await self._gets["/" + view](_with(page, org, error=error, status=e.status))
            return
        q = {"org": org.id, "done": done}
        if page.form.get("range") in RANGES:
            q["range"] = page.form["range"]
        raise Redirect(f"/console/{'' if view == 'overview' else view}?{urlencode(q)}")

    def _render(self, template: str, page: Page | None, **ctx: Any) -> str:
        s = page.session if page else None
        base = {
            "session": s,
            "csrf": self._signer.csrf(s) if s else "",
            "done": DONE.get(page.query.get("done", "")) if page else None,
            "error": page.error if page else None,
            "refill": page.form if page and page.error else {},
        }
        return self._env.get_template(template).render(**base, **ctx)

    async def _frame(self, page: Page, org: OrgEntry) -> dict[str, Any]:
        """What every page's frame shows: the org (and the switcher for the admin), the range."""
        s = page.session
        assert s is not None
        rng = page.query.get("range", "24h")
        if rng not in RANGES:
            rng = "24h"
        orgs = await self._m.store.list_orgs() if s.admin else [org]
        return {"org": org, "orgs": orgs, "range": rng, "ranges": list(RANGES), "path": page.scope.path}

    def _page(self, page: Page, template: str, **ctx: Any) -> None:
        self._html(page.proto, page.status, self._render(template, page, **ctx))

    def _window(self, rng: str) -> tuple[float, float]:
        now = time.time()
        return now - RANGES[rng][0], now

    # --- sign-in --------------------------------------------------------------

    async def signin(self, scope: Any, proto: Any) -> None:
        nxt: str = dict(parse_qsl(scope.query_string)).get("next") or "/console"
        if not nxt.startswith("/console") or nxt.startswith("//"):
            nxt = "/console"
        pre = read_cookie(scope.headers.get("cookie"), PRE_COOKIE)
        if scope.method == "GET" or not pre:
            # Bind the sign-in form to this browser (login CSRF): a random
            # cookie and a MAC of it in the form.
            pre = secrets.token_urlsafe(16)
            html = self._env.get_template("signin.html").render(
                next=nxt, csrf=self._pre_mac(pre), error=None, admin_enabled=bool(self._admin)
            )
            self._html(proto, 200, html, [("set-cookie", self._pre_cookie(pre))])
            return
        form = dict(parse_qsl((await proto()).decode("utf-8", "replace")))
        nxt = form.get("next") or nxt
        if not nxt.startswith("/console") or nxt.startswith("//"):
            nxt = "/console"
        error = None
        token = form.get("token", "").strip()
        if not hmac.compare_digest(form.get("csrf", ""), self._pre_mac(pre)):
            error = "the sign-in form expired: try again"
        elif token.startswith("lc_key_"):
            try:
                org = auth.resolve(self._ctx.control.snapshot, token)
            except LectrError as e:
                error = e.message.replace("X-Lectr-Key", "org key")
            else:
                _, cookie = self._signer.issue(False, org.id, token[7:15])
                self._redirect(proto, nxt, [("set-cookie", cookie_header(cookie, _https(scope)))])
                return
        elif self._admin and hmac.compare_digest(token.encode(), self._admin):
            _, cookie = self._signer.issue(True, None, None)
            self._redirect(proto, nxt, [("set-cookie", cookie_header(cookie, _https(scope)))])
            return
        else:
            error = "that is neither the admin token nor a live org key"
        pre = secrets.token_urlsafe(16)
        html = self._env.get_template("signin.html").render(
            next=nxt, csrf=self._pre_mac(pre), error=error, admin_enabled=bool(self._admin)
        )
        self._html(proto, 401, html, [("set-cookie", self._pre_cookie(pre))])

    def _pre_mac(self, pre: str) -> str:
        return self._signer._mac(b"signin:" + pre.encode())

    @staticmethod
    def _pre_cookie(pre: str) -> str:
        return f"{PRE_COOKIE}={pre}; Path=/console/signin; HttpOnly; SameSite=Strict; Max-Age=3600"

    # --- overview ---------------------------------------------------------------

    async def _overview_data(self, page: Page, org: OrgEntry, rng: str) -> dict[str, Any]:
        since, until = self._window(rng)
        ins = self._m.insights
        store = self._m.store
        # Independent reads, concurrently (a PostgreSQL pool answers them in parallel).
        ov, rules, fallbacks, state, feed, targets = await asyncio.gather(
            ins.overview(org.id, since, until),
            store.list_rules(org.id),
            store.list_fallbacks(org.id),
            self._ctx.policy.state(org.id),
            ins.anomalies(org.id),
            store.list_scoped(SCOPED["targets"], org.id),
        )
        health = {h.provider: h for h in self._ctx.health.table()}
        enabled = [r for r in rules if r.enabled]
        target = next((t.p95_ms for t in targets if t.scope == "*"), None)
        p95 = ov.totals.p95_latency_ms
        providers = []
        for p in ov.providers:
            h = health.get(p.provider)
            status = "down" if h is not None and h.breaker != "closed" else p.status
            providers.append({"row": p, "status": status, "breaker": h.breaker if h else "closed"})
        unhealthy = [p for p in providers if p["status"] != "healthy"]
        return {
            "ov": ov,
            "rules_total": len(rules),
            "rules_enabled": len(enabled),
            "fallbacks": fallbacks,
            "budgets": state["budgets"],
            "anomalies": feed,
            "p95_target": target,
            "p95_over": target is not None and p95 is not None and p95 > target,
            "providers": providers,
            "healthy": not unhealthy and not feed.data,
            "unhealthy": unhealthy,
        }

    async def overview(self, page: Page) -> None:
        org = await self._org(page)
        frame = await self._frame(page, org)
        data = await self._overview_data(page, org, frame["range"])
        ov = data["ov"]
        width = RANGES[frame["range"]][1]
        rows = await self._m.store.rollup_series(org.id, int(ov.since), int(ov.until), width)
        series = _series(rows, int(ov.since), int(ov.until), width)
        self._page(page, "overview.html", **frame, **data, series=series, nav="overview")

    async def overview_live(self, page: Page) -> None:
        org = await self._org(page)
        frame = await self._frame(page, org)
        data = await self._overview_data(page, org, frame["range"])
        self._page(page, "_live.html", **frame, **data)

    async def _breakdown(self, page: Page, kind: str) -> None:
        org = await self._org(page)
        frame = await self._frame(page, org)
        since, until = self._window(frame["range"])
        ov = await self._m.insights.overview(org.id, since, until)
        rows_in = ov.by_feature if kind == "feature" else ov.by_model
        width = RANGES[frame["range"]][1]
        dim = "feature" if kind == "feature" else "model_actual"
        # Sparklines of requests only: no latency histogram to sum.
        series_rows = await self._m.store.rollup_series(
            org.id, int(ov.since), int(ov.until), width, by=dim, latency=False
        )
        grouped: dict[Any, list[Any]] = {}
        for r in series_rows:
            grouped.setdefault(r[0] or None, []).append(r)
        sort = page.query.get("sort", "cost_usd")
        cols = ("key", "requests", "cost_usd", "tokens", "avg_latency_ms", "p95_latency_ms", "error_rate")
        if sort not in cols:
            sort = "cost_usd"
        desc = page.query.get("dir", "desc") != "asc"
        items = []
        for b in rows_in:
            s = _series(grouped.get(b.key, []), int(ov.since), int(ov.until), width, offset=1)
            items.append({"b": b, "tokens": b.prompt_tokens + b.completion_tokens, "spark": s["requests"]})

        def key(it: dict[str, Any]) -> Any:
            v = it["tokens"] if sort == "tokens" else getattr(it["b"], sort)
            return (v is None, v if v is not None else 0) if sort != "key" else (it["b"].key or "")

        items.sort(key=key, reverse=desc)
        if desc and sort != "key":
            # None last either way.
            items.sort(key=lambda it: (it["tokens"] if sort == "tokens" else getattr(it["b"], sort)) is None)
        self._page(
            page,
            "breakdown.html",
            **frame,
            nav=kind + "s",
            kind=kind,
            items=items,
            sort=sort,
            desc=desc,
            cols=cols,
            filter_name="feature" if kind == "feature" else "model",
        )

    async def features(self, page: Page) -> None:
        await self._breakdown(page, "feature")

    async def models(self, page: Page) -> None:
        await self._breakdown(page, "model")

    # --- requests -------------------------------------------------------------

    def _log_query(self, page: Page, org: OrgEntry, rng: str) -> tuple[Any, dict[str, str]]:
        q = {k: page.query[k].strip() for k in LOG_FILTERS if page.query.get(k, "").strip()}
        f = check.log_filter(org.id, q)
        if f.since is None and f.until is None:
            f = msgspec.structs.replace(f, since=self._window(rng)[0])
        return f, q

    async def requests(self, page: Page) -> None:
        org = await self._org(page)
        frame = await self._frame(page, org)
        f, q = self._log_query(page, org, frame["range"])
        cursor = page.query.get("cursor") or None
        try:
            records, nxt = await self._m.store.query_requests(f, cursor, PAGE_SIZE)
        except ValueError as e:
            raise InvalidRequest(str(e)) from None
        base = {"org": org.id, "range": frame["range"], **q}
        rules = {r.id: r.name for r in await self._m.store.list_rules(org.id)}
        self._page(
            page,
            "requests.html",
            **frame,
            nav="requests",
            records=records,
            filters=q,
            statuses=STATUS_CLASSES,
            providers=list(REGISTRY),
            rules=rules,
            next_url="/console/requests?" + urlencode({**base, "cursor": nxt}) if nxt else None,
            first_url="/console/requests?" + urlencode(base) if cursor else None,
            csv_url="/console/requests.csv?" + urlencode(base),
            qs=urlencode(base),
        )

    async def requests_csv(self, page: Page) -> None:
        org = await self._org(page)
        rng = page.query.get("range", "24h")
        f, _ = self._log_query(page, org, rng if rng in RANGES else "24h")
        await export.stream(page.proto, self._m.store, f, org.name)

    async def request_detail(self, page: Page) -> None:
        org = await self._org(page)
        frame = await self._frame(page, org)
        rid = page.query.get("id", "")
        ts = check.time_value(page.query.get("ts", ""), "ts")
        # The record's own millisecond: one small page, never a scan.
        f = check.log_filter(org.id, {})
        f = msgspec.structs.replace(f, since=ts - 0.001, until=ts + 0.001)
        records, _ = await self._m.store.query_requests(f, None, 200)
        rec = next((r for r in records if r.id == rid), None)
        if rec is None:
            raise NotFound("no such request in this org")
        fields = [(k, getattr(rec, k)) for k in rec.__struct_fields__]
        self._page(page, "request.html", **frame, nav="requests", rec=rec, fields=fields)

    # --- rules ------------------------------------------------------------------

    async def rules(self, page: Page) -> None:
        org = await self._org(page)
        frame = await self._frame(page, org)
        rules = await self._m.store.list_rules(org.id)
        since, until = self._window(frame["range"])
        lo, hi = _overview.align(since, until, time.time())
        rows = await self._m.store.rollup_groups(org.id, lo, hi)
        total, routed, shares = _rule_shares(rules, rows)
        self._page(
            page,
            "rules.html",
            **frame,
            nav="rules",
            rules=rules,
            total=total,
            routed=routed,
            shares=shares,
            providers=list(REGISTRY),
        )

    async def rule_create(self, page: Page, org: OrgEntry) -> str:
        await self._m.create_rule(org.id, _rule_changes(page.form))
        return "rule_saved"

    async def rule_update(self, page: Page, org: OrgEntry) -> str:
        changes = _rule_changes(page.form)
        if changes["priority"] is None:
            changes.pop("priority")
        await self._m.update_rule(org.id, page.form.get("rule", ""), changes)
        return "rule_saved"

    async def rule_toggle(self, page: Page, org: OrgEntry) -> str:
        rule = await self._m.rule(org.id, page.form.get("rule", ""))
        await self._m.update_rule(org.id, rule.id, {"enabled": not rule.enabled})
        return "rule_saved"

    async def rule_delete(self, page: Page, org: OrgEntry) -> str:
        await self._m.delete_rule(org.id, page.form.get("rule", ""))
        return "rule_deleted"

    async def rule_move(self, page: Page, org: OrgEntry) -> str:
        ids = [r.id for r in await self._m.store.list_rules(org.id)]
        rid = page.form.get("rule", "")
        if rid not in ids:
            raise NotFound(f"no rule {rid!r}")
        i = ids.index(rid)
        j = i - 1 if page.form.get("dir") == "up" else i + 1
        if 0 <= j < len(ids):
            ids[i], ids[j] = ids[j], ids[i]
        await self._m.reorder_rules(org.id, ids)
        return "rules_reordered"

    # --- spend limits, rate limits, latency targets ---------------------------

    async def limits(self, page: Page) -> None:
        org = await self._org(page)
        frame = await self._frame(page, org)
        state = await self._ctx.policy.state(org.id)
        # The state's p95_ms is the observed value; the objective comes from the store.
        observed = {t["scope"]: t for t in state["latency_targets"]}
        targets = [
            {
                "scope": t.scope,
                "target": t.p95_ms,
                "observed": observed.get(t.scope, {}).get("p95_ms"),
                "samples": observed.get(t.scope, {}).get("samples", 0),
                "status": observed.get(t.scope, {}).get("status", "no_data"),
            }
            for t in await self._m.store.list_scoped(SCOPED["targets"], org.id)
        ]
        self._page(page, "limits.html", **frame, nav="limits", state=state, targets=targets)

    async def budget_set(self, page: Page, org: OrgEntry) -> str:
        f = page.form
        await self._m.set_budget(
            org.id,
            _opt(f, "scope"),
            f.get("period", "month"),
            _fnum(f, "soft_usd"),
            _fnum(f, "hard_usd"),
            f.get("action", "reject"),
            _opt(f, "fallback_model"),
        )
        return "budget_saved"

    async def budget_delete(self, page: Page, org: OrgEntry) -> str:
        await self._m.delete_scoped(
            org.id, "budgets", _opt(page.form, "scope"), page.form.get("period", "month")
        )
        return "deleted"

    async def limit_set(self, page: Page, org: OrgEntry) -> str:
        f = page.form
        await self._m.set_limit(
            org.id,
            _opt(f, "scope"),
            _inum(f, "requests_per_min"),
            _inum(f, "tokens_per_min"),
            _inum(f, "concurrent_streams"),
        )
        return "limit_saved"

    async def limit_delete(self, page: Page, org: OrgEntry) -> str:
        await self._m.delete_scoped(org.id, "limits", _opt(page.form, "scope"))
        return "deleted"

    async def target_set(self, page: Page, org: OrgEntry) -> str:
        p95 = _fnum(page.form, "p95_ms")
        if p95 is None:
            raise InvalidRequest("p95_ms must be positive")
        await self._m.set_target(org.id, _opt(page.form, "scope"), p95)
        return "target_saved"

    async def target_delete(self, page: Page, org: OrgEntry) -> str:
        await self._m.delete_scoped(org.id, "targets", _opt(page.form, "scope"))
        return "deleted"

    # --- fallbacks and provider health ----------------------------------------

    async def fallbacks(self, page: Page) -> None:
        org = await self._org(page)
        frame = await self._frame(page, org)
        chains = await self._m.store.list_fallbacks(org.id)
        self._page(
            page,
            "fallbacks.html",
            **frame,
            nav="fallbacks",
            chains=chains,
            health=self._ctx.health.table(),
            providers=list(REGISTRY),
        )

    async def fallback_set(self, page: Page, org: OrgEntry) -> str:
        targets = []
        for raw_part in page.form.get("targets", "").replace("\n", ",").split(","):
            part = raw_part.strip()
            if not part:
                continue
            provider, sep, model = part.partition(":")
            if not sep:
                raise InvalidRequest(f"targets: write each step as provider:model, got {part[:60]!r}")
            targets.append(Target(provider.strip(), model.strip()))
        statuses = None
        raw = page.form.get("on_status", "").strip()
        if raw:
            try:
                statuses = [int(s) for s in raw.replace(" ", ",").split(",") if s]
            except ValueError:
                raise InvalidRequest("on_status holds HTTP error statuses (400-599)") from None
        await self._m.set_fallback(org.id, _opt(page.form, "scope"), targets, statuses)
        return "fallback_saved"

    async def fallback_delete(self, page: Page, org: OrgEntry) -> str:
        await self._m.delete_fallback(org.id, _opt(page.form, "scope"))
        return "deleted"

    # --- anomalies and recommendations ----------------------------------------

    async def anomalies(self, page: Page) -> None:
        org = await self._org(page)
        frame = await self._frame(page, org)
        history = page.query.get("all") == "1"
        feed = await self._m.insights.anomalies(org.id, history)
        self._page(page, "anomalies.html", **frame, nav="anomalies", feed=feed, history=history)

    async def anomaly_dismiss(self, page: Page, org: OrgEntry) -> str:
        await self._m.dismiss_anomaly(org.id, page.form.get("anomaly", ""))
        return "dismissed"

    async def recommendations(self, page: Page) -> None:
        org = await self._org(page)
        frame = await self._frame(page, org)
        recs = await self._m.insights.recommendations(org.id)
        self._page(page, "recommendations.html", **frame, nav="recommendations", recs=recs)

    async def recommendation_apply(self, page: Page, org: OrgEntry) -> str:
        await self._m.apply_recommendation(
            org.id, page.form.get("rec", ""), _inum(page.form, "split_percent")
        )
        return "applied"

    # --- keys and settings --------------------------------------------------------

    async def keys(self, page: Page, new_key: Any = None) -> None:
        org = await self._org(page)
        frame = await self._frame(page, org)
        keys = await self._m.list_keys(org.id)
        self._page(page, "keys.html", **frame, nav="keys", keys=keys, new_key=new_key)

    async def _key_change(self, page: Page, rotate: bool) -> None:
        s = page.session
        assert s is not None
        org = await self._org(page)
        if not s.admin:
            raise Forbidden("an org key's session is read-only: sign in with the admin token to change it")
        try:
            if rotate:
                _, new = await self._m.rotate_key(org.id, page.form.get("prefix", ""))
            else:
                _, new = await self._m.create_key(org.id)
        except LectrError as e:
            error = {"form": "keys", "field": None, "message": e.message}
            await self.keys(_with(page, org, error=error, status=e.status))
            return
        # Shown in this response only: never in a URL, a cookie or a log.
        await self.keys(_with(page, org), new_key=new)

    async def key_create(self, page: Page) -> None:
        await self._key_change(page, rotate=False)

    async def key_rotate(self, page: Page) -> None:
        await self._key_change(page, rotate=True)

    async def key_revoke(self, page: Page, org: OrgEntry) -> str:
        await self._m.revoke_key(org.id, page.form.get("prefix", ""))
        return "key_revoked"

    async def azure_set(self, page: Page, org: OrgEntry) -> str:
        await self._m.set_org_azure(
            org.id, _opt(page.form, "azure_endpoint"), _opt(page.form, "azure_api_version")
        )
        return "azure_saved"


_REQ = 6 + SUM_COLS.index("requests")  # after the six rollup dimensions


def _rule_shares(rules: list[Rule], rows: list[Any]) -> tuple[int, int, dict[str, int]]:
    """Requests in the window, those a rule changed, and per rule how many it
    changed, from rollup group rows (feature, model requested, model actual,
    provider, task, routed, sums...): a routed row is credited to the first
    enabled rule that matches it and whose action gives its provider and
    model (rollups keep no rule id; two rules with the same outcome for the
    same traffic are told apart by order only)."""
    enabled = [r for r in rules if r.enabled]
    total = routed = 0
    shares: dict[str, int] = {}
    for row in rows:
        n = int(row[_REQ] or 0)
        total += n
        if not row[5]:
            continue
        routed += n
        feature, requested, actual, provider, task = (
            row[0],
            row[1] or None,
            row[2] or None,
            row[3],
            row[4] or None,
        )
        original = detect(requested, None)[0].name
        for r in enabled:
            if (
                (r.match_feature is None or r.match_feature == feature)
                and (r.match_task is None or r.match_task == task)
                and (r.match_provider is None or r.match_provider == original)
                and (r.match_model is None or r.match_model == requested)
                and (r.target_provider or original) == provider
                and (r.target_model or requested) == actual
            ):
                shares[r.id] = shares.get(r.id, 0) + n
                break
    return total, routed, shares


def _https(scope: Any) -> bool:
    """Whether the browser reached us over TLS (directly or through a proxy
    that says so): then the session cookie is Secure too."""
    return bool(scope.scheme == "https" or scope.headers.get("x-forwarded-proto") == "https")


def _with(page: Page, org: OrgEntry, error: dict[str, Any] | None = None, status: int = 200) -> Page:
    """The page re-rendered after a form: the same org, the error beside its field."""
    page.query = {
        "org": org.id,
        **({"range": page.form["range"]} if page.form.get("range") in RANGES else {}),
    }
    page.error = error
    page.status = status
    return page
