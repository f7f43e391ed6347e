"""The `lectr` command: serve the gateway and manage orgs and keys."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from lectr.config import ConfigError, Settings, load, masked
from lectr.store import Store, StoreError, open_store
from lectr.types import (
    DEFAULT_FALLBACK_STATUSES,
    Budget,
    FallbackChain,
    LatencyTarget,
    RateLimit,
    Rule,
    Target,
)

Handler = Callable[[Store, argparse.Namespace], Awaitable[None]]


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


async def _orgs_create(store: Store, a: argparse.Namespace) -> None:
    org = await store.create_org(a.name)
    key, entry = await store.create_key(org.id)
    print(f"created org {org.name} ({org.id})")
    print(f"key prefix {entry.prefix}; store the key now, it is shown only once:")
    print(key)


async def _orgs_list(store: Store, a: argparse.Namespace) -> None:
    orgs = await store.list_orgs()
    _table(
        [
            [
                o.id,
                o.name,
                "disabled" if o.disabled else "active",
                o.azure_endpoint or "-",
                _when(o.created_at),
            ]
            for o in orgs
        ],
        ["ID", "NAME", "STATE", "AZURE ENDPOINT", "CREATED (UTC)"],
    )


async def _orgs_disable(store: Store, a: argparse.Namespace) -> None:
    org = await store.get_org(a.org)
    await store.set_org_disabled(org.id, a.command == "disable")
    print(f"org {org.name} {'disabled' if a.command == 'disable' else 'enabled'}")


async def _orgs_azure(store: Store, a: argparse.Namespace) -> None:
    org = await store.get_org(a.org)
    await store.set_org_azure(org.id, a.endpoint, a.api_version)
    print(f"org {org.name}: azure endpoint {a.endpoint or '-'}, api-version {a.api_version or '-'}")


async def _keys_create(store: Store, a: argparse.Namespace) -> None:
    org = await store.get_org(a.org)
    key, entry = await store.create_key(org.id)
    print(f"new key for {org.name}, prefix {entry.prefix}; it is shown only once:")
    print(key)


async def _keys_list(store: Store, a: argparse.Namespace) -> None:
    org = await store.get_org(a.org)
    keys = await store.list_keys(org.id)
    _table(
        [
            [
                f"lc_key_{k.prefix}...",
                "revoked" if k.revoked_at else "active",
                _when(k.created_at),
                _when(k.revoked_at),
            ]
            for k in keys
        ],
        ["KEY", "STATE", "CREATED (UTC)", "REVOKED (UTC)"],
    )


def _prefix(value: str) -> str:
    return value.removeprefix("lc_key_").removesuffix("...")[:8]


async def _keys_revoke(store: Store, a: argparse.Namespace) -> None:
    org = await store.get_org(a.org)
    await store.revoke_key(org.id, _prefix(a.prefix))
    print(f"key {_prefix(a.prefix)} of {org.name} revoked")


async def _keys_rotate(store: Store, a: argparse.Namespace) -> None:
    org = await store.get_org(a.org)
    key, entry = await store.create_key(org.id)
    await store.revoke_key(org.id, _prefix(a.prefix))
    print(
        f"key {_prefix(a.prefix)} of {org.name} revoked; replacement prefix {entry.prefix}, shown only once:"
    )
    print(key)


def _filters(a: argparse.Namespace) -> dict[str, str]:
    names = ("since", "until", "feature", "task", "model", "provider", "status", "rule")
    return {n: getattr(a, n) for n in names if getattr(a, n) is not None}


async def _log(store: Store, a: argparse.Namespace) -> None:
    from lectr import export
    from lectr.admin.api import log_filter
    from lectr.errors import LectrError

    org = await store.get_org(a.org)
    try:
        f = log_filter(org.id, _filters(a))
    except LectrError as e:
        raise StoreError(e.message) from None
    if a.csv:
        # A CLI command owns its process: blocking file writes are fine here.
        out = sys.stdout if a.csv == "-" else open(a.csv, "w", newline="", encoding="utf-8")  # noqa: SIM115, ASYNC230
        try:
            out.write(export.header())
            n = 0
            async for batch in store.export_requests(f):
                out.write(export.rows(batch))
                n += len(batch)
        finally:
            if out is not sys.stdout:
                out.close()
        if a.csv != "-":
            print(f"wrote {n} records to {a.csv}")
        return
    page, cursor = await store.query_requests(f, a.cursor, a.limit)

    def fmt(v: float | int | None, spec: str = "") -> str:
        return "-" if v is None else format(v, spec)

    _table(
        [
            [
                _when(r.ts),
                r.feature[:24],
                r.provider,
                (r.model_actual or "-")[:28],
                str(r.status_code),
                fmt(r.latency_ms, ".0f"),
                f"{fmt(r.prompt_tokens)}/{fmt(r.completion_tokens)}",
                fmt(r.cost_usd, ".6f"),
                r.error_category or "",
            ]
            for r in page
        ],
        ["TIME (UTC)", "FEATURE", "PROVIDER", "MODEL", "STATUS", "MS", "TOKENS P/C", "COST $", "ERROR"],
    )
    if cursor:
        print(f"more: --cursor {cursor}")


async def _rules_list(store: Store, a: argparse.Namespace) -> None:
    org = await store.get_org(a.org)
    _table(
        [
            [
                r.name,
                str(r.priority),
                "on" if r.enabled else "off",
                " AND ".join(
                    f"{k}={v}"
                    for k, v in (
                        ("feature", r.match_feature),
                        ("task", r.match_task),
                        ("provider", r.match_provider),
                        ("model", r.match_model),
                    )
                    if v
                )
                or "*",
                "/".join(x for x in (r.target_provider, r.target_model) if x),
                f"{r.split_percent}%",
                r.id,
            ]
            for r in await store.list_rules(org.id)
        ],
        ["NAME", "PRIORITY", "STATE", "WHEN", "THEN", "SPLIT", "ID"],
    )


def _rule_fields(a: argparse.Namespace) -> dict[str, Any]:
    names = (
        "priority",
        "match_feature",
        "match_task",
        "match_provider",
        "match_model",
        "target_provider",
        "target_model",
        "split_percent",
    )
    return {n: getattr(a, n) for n in names if getattr(a, n, None) is not None}


async def _find_rule(store: Store, org_id: str, ref: str) -> Rule:
    for r in await store.list_rules(org_id):
        if ref in (r.id, r.name):
            return r
    raise StoreError(f"no rule {ref!r}")


async def _rules_add(store: Store, a: argparse.Namespace) -> None:
    from lectr.admin.api import validate_rule
    from lectr.errors import LectrError

    org = await store.get_org(a.org)
    fields = _rule_fields(a)
    fields.setdefault("priority", max((r.priority for r in await store.list_rules(org.id)), default=0) + 10)
    try:
        rule = validate_rule(Rule(id="", org_id=org.id, name=a.name, **fields))
    except LectrError as e:
        raise StoreError(e.message) from None
    created = await store.create_rule(rule)
    print(f"rule {created.name} ({created.id}) added at priority {created.priority}")


async def _rules_update(store: Store, a: argparse.Namespace) -> None:
    from lectr.admin.api import validate_rule
    from lectr.errors import LectrError

    org = await store.get_org(a.org)
    rule = await _find_rule(store, org.id, a.rule)
    changes = _rule_fields(a)
    if a.command in ("enable", "disable"):
        changes["enabled"] = a.command == "enable"
    try:
        updated = validate_rule(msgspec.structs.replace(rule, **changes))
    except LectrError as e:
        raise StoreError(e.message) from None
    await store.update_rule(updated)
    print(f"rule {updated.name} updated ({'on' if updated.enabled else 'off'})")


async def _rules_delete(store: Store, a: argparse.Namespace) -> None:
    org = await store.get_org(a.org)
    rule = await _find_rule(store, org.id, a.rule)
    await store.delete_rule(org.id, rule.id)
    print(f"rule {rule.name} deleted")


async def _rules_reorder(store: Store, a: argparse.Namespace) -> None:
    org = await store.get_org(a.org)
    ids = [(await _find_rule(store, org.id, ref)).id for ref in a.rules]
    if sorted(ids) != sorted(r.id for r in await store.list_rules(org.id)):
        raise StoreError("name every rule of the org exactly once, first = evaluated first")
    await store.reorder_rules(org.id, ids)
    await _rules_list(store, a)


async def _fallbacks_list(store: Store, a: argparse.Namespace) -> None:
    org = await store.get_org(a.org)
    _table(
        [
            [
                c.scope,
                " -> ".join(f"{t.provider}/{t.model}" for t in c.targets),
                ",".join(map(str, c.on_status)),
            ]
            for c in await store.list_fallbacks(org.id)
        ],
        ["SCOPE", "TARGETS", "ON STATUS"],
    )


async def _fallbacks_set(store: Store, a: argparse.Namespace) -> None:
    from lectr.admin.api import validate_chain
    from lectr.errors import LectrError

    org = await store.get_org(a.org)
    targets = []
    for t in a.targets:
        provider, _, model = t.partition("/")
        targets.append(Target(provider, model))
    statuses = tuple(int(x) for x in a.on_status.split(",")) if a.on_status else DEFAULT_FALLBACK_STATUSES
    try:
        chain = validate_chain(
            FallbackChain(org_id=org.id, scope=a.feature or "*", targets=tuple(targets), on_status=statuses)
        )
    except LectrError as e:
        raise StoreError(e.message) from None
    await store.set_fallback(chain)
    print(f"fallback for {chain.scope}: " + " -> ".join(f"{t.provider}/{t.model}" for t in chain.targets))


async def _fallbacks_delete(store: Store, a: argparse.Namespace) -> None:
    org = await store.get_org(a.org)
    await store.delete_fallback(org.id, a.feature or "*")
    print(f"fallback for {a.feature or '*'} deleted")


async def _policy_set(store: Store, a: argparse.Namespace) -> None:
    from lectr.admin.policy import validate_budget, validate_limit, validate_target
    from lectr.errors import LectrError

    org = await store.get_org(a.org)
    scope = a.feature or "*"
    try:
        item: Any
        if a.group == "budgets":
            item = validate_budget(
                Budget(
                    org_id=org.id,
                    scope=scope,
                    period=a.period,
                    soft_usd=a.soft,
                    hard_usd=a.hard,
                    action="fallback" if a.fallback_model else "reject",
                    fallback_model=a.fallback_model,
                )
            )
        elif a.group == "limits":
            item = validate_limit(
                RateLimit(
                    org_id=org.id,
                    scope=scope,
                    requests_per_min=a.rpm,
                    tokens_per_min=a.tpm,
                    concurrent_streams=a.streams,
                )
            )
        else:
            item = validate_target(LatencyTarget(org_id=org.id, scope=scope, p95_ms=a.p95_ms))
    except LectrError as e:
        raise StoreError(e.message) from None
    await store.put_scoped(item)
    print(
        f"{a.group[:-1]} for {scope} set: "
        + ", ".join(
            f"{k}={v}"
            for k, v in msgspec.structs.asdict(item).items()
            if v is not None and k not in ("org_id", "scope", "created_at")
        )
    )


async def _policy_list(store: Store, a: argparse.Namespace) -> None:
    from lectr.policy import window_id

    org = await store.get_org(a.org)
    typ = {"budgets": Budget, "limits": RateLimit, "targets": LatencyTarget}[a.group]
    items = await store.list_scoped(typ, org.id)
    if a.group == "budgets":
        rows = []
        for b in items:
            wid, start, _ = window_id(b.period, time.time())
            spent = await store.spend(org.id, None if b.scope == "*" else b.scope, start)
            rows.append(
                [
                    b.scope,
                    b.period,
                    wid,
                    f"{spent:.4f}",
                    _money(b.soft_usd),
                    _money(b.hard_usd),
                    b.action if b.action == "reject" else f"fallback to {b.fallback_model}",
                ]
            )
        _table(rows, ["SCOPE", "PERIOD", "WINDOW", "SPENT $ (LOGGED)", "SOFT $", "HARD $", "AT HARD CAP"])
    elif a.group == "limits":
        _table(
            [
                [x.scope, _opt(x.requests_per_min), _opt(x.tokens_per_min), _opt(x.concurrent_streams)]
                for x in items
            ],
            ["SCOPE", "REQUESTS/MIN", "TOKENS/MIN", "STREAMS"],
        )
    else:
        _table([[x.scope, f"{x.p95_ms:g}"] for x in items], ["SCOPE", "P95 TARGET MS"])


def _money(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _opt(v: int | None) -> str:
    return "-" if v is None else str(v)


async def _policy_delete(store: Store, a: argparse.Namespace) -> None:
    org = await store.get_org(a.org)
    scope = a.feature or "*"
    if a.group == "budgets":
        await store.delete_scoped(Budget, (org.id, scope, a.period))
    else:
        await store.delete_scoped(RateLimit if a.group == "limits" else LatencyTarget, (org.id, scope))
    print(f"{a.group[:-1]} for {scope} deleted")


def _insights(store: Store, a: argparse.Namespace) -> Any:
    from lectr.insights import Insights

    return Insights.from_settings(load(a.config), store)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


async def _overview(store: Store, a: argparse.Namespace) -> None:
    from lectr.admin.insights import query_time
    from lectr.errors import LectrError

    org = await store.get_org(a.org)
    q = {k: v for k in ("since", "until") if (v := getattr(a, k)) is not None}
    try:
        ov = await _insights(store, a).overview(org.id, query_time(q, "since"), query_time(q, "until"))
    except LectrError as e:
        raise StoreError(e.message) from None
    t = ov.totals
    print(f"{org.name}: {_when(ov.since)} to {_when(ov.until)} UTC")
    print(
        f"req/min {t.req_per_min:.2f}  error rate {_pct(t.error_rate)}  p95 {_ms(t.p95_latency_ms)} ms  "
        f"cost/hr ${t.cost_per_hour:.4f}"
    )
    print(
        f"requests {t.requests}  errors {t.errors}  cost ${t.cost_usd:.4f} ({t.unpriced} unpriced)  "
        f"tokens {t.prompt_tokens}/{t.completion_tokens}  routed by rules {_pct(ov.routed.share)}  "
        f"untagged {_pct(ov.untagged.share)}"
    )
    if ov.untagged.prompt:
        print(ov.untagged.prompt)
    for title, rows in (
        ("FEATURE", ov.by_feature),
        ("MODEL", ov.by_model),
        ("PROVIDER", ov.by_provider),
        ("TASK", ov.by_task),
    ):
        print()
        _table(
            [
                [
                    (b.key or "-")[:32],
                    str(b.requests),
                    _pct(b.share),
                    f"{b.cost_usd:.4f}",
                    _pct(b.cost_share),
                    f"{b.prompt_tokens}/{b.completion_tokens}",
                    _ms(b.avg_latency_ms),
                    _ms(b.p95_latency_ms),
                    _pct(b.error_rate),
                ]
                for b in rows
            ],
            [title, "REQUESTS", "SHARE", "COST $", "COST SHARE", "TOKENS P/C", "AVG MS", "P95 MS", "ERRORS"],
        )
    print()
    _table(
        [
            [
                p.provider,
                str(p.requests),
                _ms(p.avg_latency_ms),
                _pct(None if p.success_pct is None else p.success_pct / 100),
                p.status,
            ]
            for p in ov.providers
        ],
        ["PROVIDER", "REQUESTS", "AVG MS", "SUCCESS", "STATUS"],
    )


async def _anomalies_list(store: Store, a: argparse.Namespace) -> None:
    org = await store.get_org(a.org)
    feed = await _insights(store, a).anomalies(org.id, a.all)
    if feed.status == "building_baseline":
        print(f"building baseline: {feed.hours_left:.1f} h of history left before detection starts")
    _table(
        [
            [
                x.id,
                _when(x.detected_at),
                x.type,
                (x.feature or "(whole org)")[:32],
                x.severity,
                x.state + (" (ongoing)" if x.ongoing and x.state != "active" else ""),
                f"{x.observed:.4g}",
                f"{x.baseline:.4g}",
                f"{x.deviation:+.1f}",
            ]
            for x in feed.data
        ],
        ["ID", "DETECTED (UTC)", "TYPE", "FEATURE", "SEVERITY", "STATE", "OBSERVED", "BASELINE", "SIGMAS"],
    )


async def _anomalies_dismiss(store: Store, a: argparse.Namespace) -> None:
    from lectr.errors import LectrError

    org = await store.get_org(a.org)
    try:
        x = await _insights(store, a).dismiss(org.id, a.id)
    except LectrError as e:
        raise StoreError(e.message) from None
    print(f"anomaly {x.id} ({x.type}) dismissed: no more alerts, its window leaves future baselines")


async def _recommendations_list(store: Store, a: argparse.Namespace) -> None:
    org = await store.get_org(a.org)
    _table(
        [
            [
                r.id,
                r.feature[:32],
                r.task or "-",
                f"{r.model} -> {r.target_model}",
                r.confidence,
                str(r.requests),
                f"{r.monthly_savings_usd:.2f}",
                r.applied_rule_id or "-",
            ]
            for r in await _insights(store, a).recommendations(org.id, a.days)
        ],
        ["ID", "FEATURE", "TASK", "MODEL", "CONFIDENCE", "REQUESTS", "SAVINGS $/MONTH", "APPLIED AS"],
    )


async def _recommendations_apply(store: Store, a: argparse.Namespace) -> None:
    from lectr.errors import LectrError

    org = await store.get_org(a.org)
    try:
        rule = await _insights(store, a).apply(org.id, a.id, a.split, a.days)
    except LectrError as e:
        raise StoreError(e.message) from None
    print(f"rule {rule.name} ({rule.id}) added at priority {rule.priority}, {rule.split_percent}% of matches")


def _insights_parsers(sub: Any) -> None:
    ov = sub.add_parser("overview", help="an org's traffic, cost, latency and errors over a window")
    ov.add_argument("org")
    ov.add_argument("--since", help="start (Unix seconds or ISO 8601; default 24 h before --until)")
    ov.add_argument("--until", help="end, exclusive (default now)")
    ov.set_defaults(run=_overview)
    an = sub.add_parser("anomalies", help="anomaly feed").add_subparsers(dest="command", required=True)
    al = an.add_parser("list", help="anomalies not dismissed (ongoing or of the last 7 days)")
    al.add_argument("org")
    al.add_argument("--all", action="store_true", help="every anomaly, dismissed ones included")
    al.set_defaults(run=_anomalies_list)
    ad = an.add_parser("dismiss", help="dismiss an anomaly (no more alerts; left out of baselines)")
    ad.add_argument("org")
    ad.add_argument("id")
    ad.set_defaults(run=_anomalies_dismiss)
    rc = sub.add_parser("recommendations", help="cheaper models per feature").add_subparsers(
        dest="command", required=True
    )
    rl = rc.add_parser("list", help="recommendations from the recent traffic")
    rl.add_argument("org")
    rl.add_argument("--days", type=float, default=7, help="traffic lookback (default 7)")
    rl.set_defaults(run=_recommendations_list)
    ra = rc.add_parser("apply", help="turn a recommendation into a routing rule")
    ra.add_argument("org")
    ra.add_argument("id")
    ra.add_argument("--split", type=int, help="only this %% of matching traffic (1-100)")
    ra.add_argument("--days", type=float, default=7, help="the lookback it was listed with (default 7)")
    ra.set_defaults(run=_recommendations_apply)


async def _migrate(store: Store, a: argparse.Namespace) -> None:
    applied = await store.migrate()
    print(f"applied migrations: {', '.join(map(str, applied))}" if applied else "database is up to date")


def _serve(settings: Settings) -> None:
    # Workers record metrics in files under one directory, which the worker
    # answering /metrics reads whole (prometheus-client multiprocess mode), so
    # counters add up across workers. Workers are forked from this process,
    # so the variable must be set before prometheus_client is first imported.
    own_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if own_metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="lectr-metrics-")
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.http import HTTP1Settings

    from lectr.config import SETTINGS_ENV
    from lectr.metrics import MULTIPROC_ENV, prepare_multiprocess_dir

    metrics_dir = prepare_multiprocess_dir(Path(os.environ[MULTIPROC_ENV]))

    # Workers are separate processes that import the app; they get the
    # validated settings whole, so flags and file reach them too.
    os.environ[SETTINGS_ENV] = msgspec.json.encode(settings).decode()
    print(
        f"lectr {_version()} listening on http://{settings.host}:{settings.port} "
        f"({settings.workers} worker{'s' if settings.workers > 1 else ''}, "
        f"store: {'postgresql' if settings.database_url else settings.sqlite_path})",
        flush=True,
    )
    try:
        Granian(
            "lectr.app:create_app",
            factory=True,
            address=settings.host,
            port=settings.port,
            workers=settings.workers,
            interface=Interfaces.RSGI,
            loop=Loops.uvloop,
            log_level=settings.log_level,  # type: ignore[arg-type]
            websockets=False,
            # The defaults (backpressure = backlog / workers = 1024, a 30 s
            # header timeout) let ~1,100 idle sockets or a few slowloris
            # clients stop the gateway answering anyone (issue 19).
            backlog=settings.listen_backlog,
            backpressure=settings.max_connections,
            http1_settings=HTTP1Settings(header_read_timeout=int(settings.header_timeout * 1000)),
        ).serve()
    finally:
        if own_metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _version() -> str:
    from lectr import __version__

    return __version__


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lectr", description="Lectr AI gateway and control plane.")
    p.add_argument("--config", help="TOML config file (else LECTR_CONFIG)")
    sub = p.add_subparsers(dest="group", required=True)

    s = sub.add_parser("serve", help="run the gateway")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--workers", type=int)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(run=_migrate)
    sub.add_parser("config", help="print the effective settings (secrets masked)")
    from lectr import devstack  # light at import (no app, no store); it owns its options

    devstack.add_parser(sub)

    orgs = sub.add_parser("orgs", help="manage orgs").add_subparsers(dest="command", required=True)
    c = orgs.add_parser("create", help="create an org and print its first key (last line)")
    c.add_argument("name")
    c.set_defaults(run=_orgs_create)
    orgs.add_parser("list", help="list orgs").set_defaults(run=_orgs_list)
    for verb in ("disable", "enable"):
        d = orgs.add_parser(verb, help=f"{verb} an org")
        d.add_argument("org", help="org name or id")
        d.set_defaults(run=_orgs_disable)
    az = orgs.add_parser("azure", help="set an org's Azure OpenAI endpoint and api-version")
    az.add_argument("org")
    az.add_argument("--endpoint", help="https://<resource>.openai.azure.com (omit to clear)")
    az.add_argument("--api-version", help="e.g. 2024-10-21 (omit to clear)")
    az.set_defaults(run=_orgs_azure)

    keys = sub.add_parser("keys", help="manage org keys").add_subparsers(dest="command", required=True)
    kc = keys.add_parser("create", help="add a key to an org")
    kc.add_argument("org")
    kc.set_defaults(run=_keys_create)
    kl = keys.add_parser("list", help="list an org's keys (prefixes only)")
    kl.add_argument("org")
    kl.set_defaults(run=_keys_list)
    for verb, fn in (("revoke", _keys_revoke), ("rotate", _keys_rotate)):
        k = keys.add_parser(verb, help=f"{verb} a key (by prefix)")
        k.add_argument("org")
        k.add_argument("prefix", help="the key's prefix as `keys list` shows it")
        k.set_defaults(run=fn)
    rules = sub.add_parser("rules", help="routing rules").add_subparsers(dest="command", required=True)
    rl = rules.add_parser("list", help="an org's rules in evaluation order")
    rl.add_argument("org")
    rl.set_defaults(run=_rules_list)

    def rule_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--priority", type=int, help="lower runs first (default: after the last rule)")
        for cond in ("feature", "task", "provider", "model"):
            parser.add_argument(f"--when-{cond}", dest=f"match_{cond}", help=f"match this {cond} exactly")
        parser.add_argument(
            "--provider", dest="target_provider", help="send matching requests to this provider"
        )
        parser.add_argument("--model", dest="target_model", help="rewrite the model to this")
        parser.add_argument("--split", dest="split_percent", type=int, help="only this %% of matches (1-100)")

    ra = rules.add_parser("add", help="add a rule")
    ra.add_argument("org")
    ra.add_argument("name")
    rule_options(ra)
    ra.set_defaults(run=_rules_add)
    ru = rules.add_parser("update", help="change a rule")
    ru.add_argument("org")
    ru.add_argument("rule", help="rule name or id")
    rule_options(ru)
    ru.set_defaults(run=_rules_update)
    for verb in ("enable", "disable"):
        rv = rules.add_parser(verb, help=f"{verb} a rule")
        rv.add_argument("org")
        rv.add_argument("rule")
        rv.set_defaults(run=_rules_update)
    rd = rules.add_parser("delete", help="delete a rule")
    rd.add_argument("org")
    rd.add_argument("rule")
    rd.set_defaults(run=_rules_delete)
    ro = rules.add_parser("reorder", help="set the evaluation order (every rule, first = first)")
    ro.add_argument("org")
    ro.add_argument("rules", nargs="+")
    ro.set_defaults(run=_rules_reorder)

    fb = sub.add_parser("fallbacks", help="failover paths").add_subparsers(dest="command", required=True)
    fl = fb.add_parser("list", help="an org's fallback chains")
    fl.add_argument("org")
    fl.set_defaults(run=_fallbacks_list)
    fs = fb.add_parser("set", help="set the failover path (tried in order after the primary fails)")
    fs.add_argument("org")
    fs.add_argument("targets", nargs="+", metavar="PROVIDER/MODEL")
    fs.add_argument("--feature", help="only for this feature (default: the org's default chain)")
    fs.add_argument(
        "--on-status", help="statuses that fail over, comma-separated (default 429,500,502,503,504)"
    )
    fs.set_defaults(run=_fallbacks_set)
    fd = fb.add_parser("delete", help="remove a fallback chain")
    fd.add_argument("org")
    fd.add_argument("--feature")
    fd.set_defaults(run=_fallbacks_delete)

    for group, what in (
        ("budgets", "spend limits"),
        ("limits", "rate limits"),
        ("targets", "p95 latency targets"),
    ):
        g = sub.add_parser(group, help=what).add_subparsers(dest="command", required=True)
        gl = g.add_parser("list", help=f"an org's {what}")
        gl.add_argument("org")
        gl.set_defaults(run=_policy_list)
        gs = g.add_parser("set", help=f"create or replace {what[:-1]} for the org or one feature")
        gd = g.add_parser("delete", help=f"remove {what[:-1]}")
        for sp in (gs, gd):
            sp.add_argument("org")
            sp.add_argument("--feature", help="only this feature (default: the whole org)")
        gs.set_defaults(run=_policy_set)
        gd.set_defaults(run=_policy_delete)
        if group == "budgets":
            for sp in (gs, gd):
                sp.add_argument("--period", choices=("day", "month"), default="month", help="UTC window")
            gs.add_argument("--soft", type=float, help="USD: alert (webhook) and keep serving")
            gs.add_argument("--hard", type=float, help="USD: reject with 429, or serve --fallback-model")
            gs.add_argument("--fallback-model", help="at the hard cap, rewrite requests to this model")
        elif group == "limits":
            gs.add_argument("--rpm", type=int, help="requests in any 60 s")
            gs.add_argument("--tpm", type=int, help="tokens in any 60 s")
            gs.add_argument("--streams", type=int, help="streams open at once")
        else:
            gs.add_argument("--p95-ms", type=float, required=True, help="p95 latency objective in ms")

    _insights_parsers(sub)
    lg = sub.add_parser("log", help="show or export an org's request log (newest first)")
    lg.add_argument("org")
    for name, what in (
        ("since", "start time (Unix seconds or ISO 8601)"),
        ("until", "end time, exclusive"),
        ("feature", "feature tag"),
        ("task", "task type"),
        ("model", "requested or actual model"),
        ("provider", "provider"),
        ("status", "2xx, 4xx, 5xx, 499 or error"),
        ("rule", "routing rule id"),
    ):
        lg.add_argument(f"--{name}", help=what)
    lg.add_argument("--limit", type=int, default=50, help="rows to show (default 50)")
    lg.add_argument("--cursor", help="continue from a previous page")
    lg.add_argument(
        "--csv", metavar="FILE", help="export every matching record as CSV to FILE (- for stdout)"
    )
    lg.set_defaults(run=_log)
    return p


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `lectr` command."""
    args = _parser().parse_args(argv)
    flags: dict[str, Any] = {}
    if args.group == "serve":
        flags = {"host": args.host, "port": args.port, "workers": args.workers}
    try:
        settings = load(args.config, flags)
    except ConfigError as e:
        sys.exit(f"lectr: {e}")
    if args.group == "serve":
        _serve(settings)
        return
    if args.group == "dev-stack":
        from lectr.devstack import main as dev_stack

        dev_stack(args)
        return
    if args.group == "config":
        print(json.dumps(masked(settings), indent=2))
        return
    run: Handler = args.run
    try:
        asyncio.run(_with_store(settings, run, args))
    except StoreError as e:
        sys.exit(f"lectr: {e}")


async def _with_store(settings: Settings, run: Handler, args: argparse.Namespace) -> None:
    store = open_store(settings)
    try:
        if run is not _migrate:
            await store.migrate()
        await run(store, args)
    finally:
        await store.close()
