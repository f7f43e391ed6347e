"""`lectr overview`, `lectr anomalies` and `lectr recommendations`."""

from __future__ import annotations

import argparse
from typing import Any

from lectr.cli.tables import ms, pct, table, when
from lectr.control import validation as check
from lectr.control.manage import Manager


async def overview(m: Manager, a: argparse.Namespace) -> None:
    org = await m.org(a.org)
    q = {k: v for k in ("since", "until") if (v := getattr(a, k)) is not None}
    ov = await m.insights.overview(org.id, check.optional_time(q, "since"), check.optional_time(q, "until"))
    t = ov.totals
    print(f"{org.name}: {when(ov.since)} to {when(ov.until)} UTC")
    print(
        f"req/min {t.req_per_min:.2f}  error rate {pct(t.error_rate)}  p95 {ms(t.p95_latency_ms)} ms  "
        f"cost/hr ${t.cost_per_hour:.4f}"
    )
    print(
        f"requests {t.requests}  errors {t.errors}  cost ${t.cost_usd:.4f} ({t.unpriced} unpriced)  "
        f"tokens {t.prompt_tokens}/{t.completion_tokens}  routed by rules {pct(ov.routed.share)}  "
        f"untagged {pct(ov.untagged.share)}"
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
        table(
            [
                [
                    (b.key or "-")[:32],
                    str(b.requests),
                    pct(b.share),
                    f"{b.cost_usd:.4f}",
                    pct(b.cost_share),
                    f"{b.prompt_tokens}/{b.completion_tokens}",
                    ms(b.avg_latency_ms),
                    ms(b.p95_latency_ms),
                    pct(b.error_rate),
                ]
                for b in rows
            ],
            [title, "REQUESTS", "SHARE", "COST $", "COST SHARE", "TOKENS P/C", "AVG MS", "P95 MS", "ERRORS"],
        )
    print()
    table(
        [
            [
                p.provider,
                str(p.requests),
                ms(p.avg_latency_ms),
                pct(None if p.success_pct is None else p.success_pct / 100),
                p.status,
            ]
            for p in ov.providers
        ],
        ["PROVIDER", "REQUESTS", "AVG MS", "SUCCESS", "STATUS"],
    )


async def anomalies_list(m: Manager, a: argparse.Namespace) -> None:
    org = await m.org(a.org)
    feed = await m.insights.anomalies(org.id, a.all)
    if feed.status == "building_baseline":
        print(f"building baseline: {feed.hours_left:.1f} h of history left before detection starts")
    table(
        [
            [
                x.id,
                when(x.detected_at),
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


async def anomalies_dismiss(m: Manager, a: argparse.Namespace) -> None:
    x = await m.dismiss_anomaly(a.org, a.id)
    print(f"anomaly {x.id} ({x.type}) dismissed: no more alerts, its window leaves future baselines")


async def recommendations_list(m: Manager, a: argparse.Namespace) -> None:
    org = await m.org(a.org)
    table(
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
            for r in await m.insights.recommendations(org.id, a.days)
        ],
        ["ID", "FEATURE", "TASK", "MODEL", "CONFIDENCE", "REQUESTS", "SAVINGS $/MONTH", "APPLIED AS"],
    )


async def recommendations_apply(m: Manager, a: argparse.Namespace) -> None:
    rule = await m.apply_recommendation(a.org, a.id, a.split, a.days)
    print(f"rule {rule.name} ({rule.id}) added at priority {rule.priority}, {rule.split_percent}% of matches")


def add_parsers(sub: Any) -> None:
    ov = sub.add_parser("overview", help="an org's traffic, cost, latency and errors over a window")
    ov.add_argument("org")
    ov.add_argument("--since", help="start (Unix seconds or ISO 8601; default 24 h before --until)")
    ov.add_argument("--until", help="end, exclusive (default now)")
    ov.set_defaults(run=overview)
    an = sub.add_parser("anomalies", help="anomaly feed").add_subparsers(dest="command", required=True)
    al = an.add_parser("list", help="anomalies not dismissed (ongoing or of the last 7 days)")
    al.add_argument("org")
    al.add_argument("--all", action="store_true", help="every anomaly, dismissed ones included")
    al.set_defaults(run=anomalies_list)
    ad = an.add_parser("dismiss", help="dismiss an anomaly (no more alerts; left out of baselines)")
    ad.add_argument("org")
    ad.add_argument("id")
    ad.set_defaults(run=anomalies_dismiss)
    rc = sub.add_parser("recommendations", help="cheaper models per feature").add_subparsers(
        dest="command", required=True
    )
    rl = rc.add_parser("list", help="recommendations from the recent traffic")
    rl.add_argument("org")
    rl.add_argument("--days", type=float, default=7, help="traffic lookback (default 7)")
    rl.set_defaults(run=recommendations_list)
    ra = rc.add_parser("apply", help="turn a recommendation into a routing rule")
    ra.add_argument("org")
    ra.add_argument("id")
    ra.add_argument("--split", type=int, help="only this %% of matching traffic (1-100)")
    ra.add_argument("--days", type=float, default=7, help="the lookback it was listed with (default 7)")
    ra.set_defaults(run=recommendations_apply)
