"""`lectr budgets`, `lectr limits` and `lectr targets`: spend limits, rate
limits and p95 latency targets."""

from __future__ import annotations

import argparse
import time
from typing import Any

import msgspec

from lectr.cli.tables import money, table
from lectr.control.manage import Manager
from lectr.control.policy.keys import window_id


def _opt(v: int | None) -> str:
    return "-" if v is None else str(v)


async def policy_set(m: Manager, a: argparse.Namespace) -> None:
    item: Any
    if a.group == "budgets":
        action = "fallback" if a.fallback_model else "reject"
        item = await m.set_budget(a.org, a.feature, a.period, a.soft, a.hard, action, a.fallback_model)
    elif a.group == "limits":
        item = await m.set_limit(a.org, a.feature, a.rpm, a.tpm, a.streams)
    else:
        item = await m.set_target(a.org, a.feature, a.p95_ms)
    shown = ", ".join(
        f"{k}={v}"
        for k, v in msgspec.structs.asdict(item).items()
        if v is not None and k not in ("org_id", "scope", "created_at")
    )
    print(f"{a.group[:-1]} for {item.scope} set: {shown}")


async def policy_list(m: Manager, a: argparse.Namespace) -> None:
    items = await m.list_scoped(a.org, a.group)
    if a.group == "budgets":
        rows = []
        for b in items:
            wid, start, _ = window_id(b.period, time.time())
            spent = await m.store.spend(b.org_id, None if b.scope == "*" else b.scope, start)
            rows.append(
                [
                    b.scope,
                    b.period,
                    wid,
                    f"{spent:.4f}",
                    money(b.soft_usd),
                    money(b.hard_usd),
                    b.action if b.action == "reject" else f"fallback to {b.fallback_model}",
                ]
            )
        table(rows, ["SCOPE", "PERIOD", "WINDOW", "SPENT $ (LOGGED)", "SOFT $", "HARD $", "AT HARD CAP"])
    elif a.group == "limits":
        table(
            [
                [x.scope, _opt(x.requests_per_min), _opt(x.tokens_per_min), _opt(x.concurrent_streams)]
                for x in items
            ],
            ["SCOPE", "REQUESTS/MIN", "TOKENS/MIN", "STREAMS"],
        )
    else:
        table([[x.scope, f"{x.p95_ms:g}"] for x in items], ["SCOPE", "P95 TARGET MS"])


async def policy_delete(m: Manager, a: argparse.Namespace) -> None:
    await m.delete_scoped(a.org, a.group, a.feature, getattr(a, "period", "month"))
    print(f"{a.group[:-1]} for {a.feature or '*'} deleted")


def add_parsers(sub: Any) -> None:
    for group, what in (
        ("budgets", "spend limits"),
        ("limits", "rate limits"),
        ("targets", "p95 latency targets"),
    ):
        g = sub.add_parser(group, help=what).add_subparsers(dest="command", required=True)
        gl = g.add_parser("list", help=f"an org's {what}")
        gl.add_argument("org")
        gl.set_defaults(run=policy_list)
        gs = g.add_parser("set", help=f"create or replace {what[:-1]} for the org or one feature")
        gd = g.add_parser("delete", help=f"remove {what[:-1]}")
        for sp in (gs, gd):
            sp.add_argument("org")
            sp.add_argument("--feature", help="only this feature (default: the whole org)")
        gs.set_defaults(run=policy_set)
        gd.set_defaults(run=policy_delete)
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
