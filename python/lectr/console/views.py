"""The console's pages: each reads through the manager, the insights service
and the store (rollups for numbers, never a scan of records) and renders
one template."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlencode

import msgspec

from lectr.console import figures
from lectr.console.frame import RANGES, Frame, Page, range_of, send_html, window
from lectr.control import validation as check
from lectr.control.manage import SCOPED, NewKey
from lectr.errors import InvalidRequest, NotFound
from lectr.gateway.providers import REGISTRY
from lectr.insights import overview as _overview
from lectr.observe import export
from lectr.store.base import STATUS_CLASSES
from lectr.types import OrgEntry

LOG_FILTERS = ("feature", "task", "model", "provider", "status", "rule", "since", "until")
PAGE_SIZE = 50
# The overview's live fragment polls every 5 s from each open page; one
# render per org and range serves every poll within this many seconds, so
# open consoles cost the serving loop one render per period, not one per tab.
LIVE_TTL = 4.0
LIVE_MAX = 1024


class Views:
    """One method per page; `table` maps its path to the method."""

    def __init__(self, frame: Frame) -> None:
        self._f = frame
        self._m = frame.m
        self._ctx = frame.ctx
        self._live: dict[tuple[str, str], tuple[float, asyncio.Task[str]]] = {}
        self.table = {
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

    # --- overview ---------------------------------------------------------------

    async def _overview_data(self, org: OrgEntry, rng: str) -> dict[str, Any]:
        since, until = window(rng)
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
        org = await self._f.org(page)
        frame = await self._f.frame(page, org)
        data = await self._overview_data(org, frame["range"])
        ov = data["ov"]
        width = RANGES[frame["range"]][1]
        rows = await self._m.store.rollup_series(org.id, int(ov.since), int(ov.until), width)
        series = figures.series(rows, int(ov.since), int(ov.until), width)
        self._f.page(
            page, "overview.html", **frame, **data, series=series, nav="overview", rendered=time.time()
        )

    async def overview_live(self, page: Page) -> None:
        org = await self._f.org(page)
        # Not the whole frame: the fragment has no org switcher, so a poll
        # that the cache answers reads nothing from the store.
        rng = range_of(page)
        key = (org.id, rng)
        now = time.monotonic()
        hit = self._live.get(key)
        if hit is None or hit[0] < now or _failed(hit[1]):
            if len(self._live) >= LIVE_MAX:
                self._live = {k: v for k, v in self._live.items() if v[0] >= now}
            # The fragment shows nothing of the session (no form, no token):
            # every session allowed to see this org gets the same one.
            hit = (now + LIVE_TTL, asyncio.ensure_future(self._live_html(org, rng)))
            self._live[key] = hit
        # Shielded: a poller that goes away must not cancel the others' render.
        send_html(page.proto, 200, await asyncio.shield(hit[1]))

    async def _live_html(self, org: OrgEntry, rng: str) -> str:
        data = await self._overview_data(org, rng)
        return self._f.render("_live.html", None, org=org, range=rng, **data, rendered=time.time())

    async def _breakdown(self, page: Page, kind: str) -> None:
        org = await self._f.org(page)
        frame = await self._f.frame(page, org)
        since, until = window(frame["range"])
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
            s = figures.series(grouped.get(b.key, []), int(ov.since), int(ov.until), width, offset=1)
            items.append({"b": b, "tokens": b.prompt_tokens + b.completion_tokens, "spark": s["requests"]})

        def key(it: dict[str, Any]) -> Any:
            v = it["tokens"] if sort == "tokens" else getattr(it["b"], sort)
            return (v is None, v if v is not None else 0) if sort != "key" else (it["b"].key or "")

        items.sort(key=key, reverse=desc)
        if desc and sort != "key":
            # None last either way.
            items.sort(key=lambda it: (it["tokens"] if sort == "tokens" else getattr(it["b"], sort)) is None)
        self._f.page(
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
            f = msgspec.structs.replace(f, since=window(rng)[0])
        return f, q

    async def requests(self, page: Page) -> None:
        org = await self._f.org(page)
        frame = await self._f.frame(page, org)
        f, q = self._log_query(page, org, frame["range"])
        cursor = page.query.get("cursor") or None
        try:
            records, nxt = await self._m.store.query_requests(f, cursor, PAGE_SIZE)
        except ValueError as e:
            raise InvalidRequest(str(e)) from None
        base = {"org": org.id, "range": frame["range"], **q}
        rules = {r.id: r.name for r in await self._m.store.list_rules(org.id)}
        self._f.page(
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
        org = await self._f.org(page)
        rng = page.query.get("range", "24h")
        f, _ = self._log_query(page, org, rng if rng in RANGES else "24h")
        await export.stream(page.proto, self._m.store, f, org.name)

    async def request_detail(self, page: Page) -> None:
        org = await self._f.org(page)
        frame = await self._f.frame(page, org)
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
        self._f.page(page, "request.html", **frame, nav="requests", rec=rec, fields=fields)

    # --- control pages ----------------------------------------------------------

    async def rules(self, page: Page) -> None:
        org = await self._f.org(page)
        frame = await self._f.frame(page, org)
        rules = await self._m.store.list_rules(org.id)
        since, until = window(frame["range"])
        lo, hi = _overview.align(since, until, time.time())
        rows = await self._m.store.rollup_groups(org.id, lo, hi)
        total, routed, shares = figures.rule_shares(rules, rows)
        self._f.page(
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

    async def limits(self, page: Page) -> None:
        org = await self._f.org(page)
        frame = await self._f.frame(page, org)
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
        self._f.page(page, "limits.html", **frame, nav="limits", state=state, targets=targets)

    async def fallbacks(self, page: Page) -> None:
        org = await self._f.org(page)
        frame = await self._f.frame(page, org)
        chains = await self._m.store.list_fallbacks(org.id)
        self._f.page(
            page,
            "fallbacks.html",
            **frame,
            nav="fallbacks",
            chains=chains,
            health=self._ctx.health.table(),
            providers=list(REGISTRY),
        )

    async def anomalies(self, page: Page) -> None:
        org = await self._f.org(page)
        frame = await self._f.frame(page, org)
        history = page.query.get("all") == "1"
        feed = await self._m.insights.anomalies(org.id, history)
        self._f.page(page, "anomalies.html", **frame, nav="anomalies", feed=feed, history=history)

    async def recommendations(self, page: Page) -> None:
        org = await self._f.org(page)
        frame = await self._f.frame(page, org)
        recs = await self._m.insights.recommendations(org.id)
        self._f.page(page, "recommendations.html", **frame, nav="recommendations", recs=recs)

    async def keys(self, page: Page, new_key: NewKey | None = None) -> None:
        org = await self._f.org(page)
        frame = await self._f.frame(page, org)
        keys = await self._m.list_keys(org.id)
        self._f.page(page, "keys.html", **frame, nav="keys", keys=keys, new_key=new_key)


def _failed(task: asyncio.Task[str]) -> bool:
    return task.done() and (task.cancelled() or task.exception() is not None)
