"""`lectr rules` and `lectr fallbacks`: routing rules and failover paths."""

from __future__ import annotations

import argparse
from typing import Any

from lectr.cli.tables import table
from lectr.control.manage import RULE_FIELDS, Manager
from lectr.errors import InvalidRequest
from lectr.types import Rule, Target

# The rule fields set by options (the name is a positional; enabled a verb).
_OPTIONS = sorted(RULE_FIELDS - {"name", "enabled"})


def _fields(a: argparse.Namespace) -> dict[str, Any]:
    return {n: getattr(a, n) for n in _OPTIONS if getattr(a, n, None) is not None}


def _when(r: Rule) -> str:
    conds = (
        ("feature", r.match_feature),
        ("task", r.match_task),
        ("provider", r.match_provider),
        ("model", r.match_model),
    )
    return " AND ".join(f"{k}={v}" for k, v in conds if v) or "*"


async def rules_list(m: Manager, a: argparse.Namespace) -> None:
    _print_rules(await m.list_rules(a.org))


def _print_rules(rules: list[Rule]) -> None:
    table(
        [
            [
                r.name,
                str(r.priority),
                "on" if r.enabled else "off",
                _when(r),
                "/".join(x for x in (r.target_provider, r.target_model) if x),
                f"{r.split_percent}%",
                r.id,
            ]
            for r in rules
        ],
        ["NAME", "PRIORITY", "STATE", "WHEN", "THEN", "SPLIT", "ID"],
    )


async def rules_add(m: Manager, a: argparse.Namespace) -> None:
    created = await m.create_rule(a.org, {"name": a.name, **_fields(a)})
    print(f"rule {created.name} ({created.id}) added at priority {created.priority}")


async def rules_update(m: Manager, a: argparse.Namespace) -> None:
    changes = _fields(a)
    if a.command in ("enable", "disable"):
        changes["enabled"] = a.command == "enable"
    updated = await m.update_rule(a.org, a.rule, changes)
    print(f"rule {updated.name} updated ({'on' if updated.enabled else 'off'})")


async def rules_delete(m: Manager, a: argparse.Namespace) -> None:
    rule = await m.delete_rule(a.org, a.rule)
    print(f"rule {rule.name} deleted")


async def rules_reorder(m: Manager, a: argparse.Namespace) -> None:
    _print_rules(await m.reorder_rules(a.org, a.rules))


async def fallbacks_list(m: Manager, a: argparse.Namespace) -> None:
    table(
        [
            [
                c.scope,
                " -> ".join(f"{t.provider}/{t.model}" for t in c.targets),
                ",".join(map(str, c.on_status)),
            ]
            for c in await m.list_fallbacks(a.org)
        ],
        ["SCOPE", "TARGETS", "ON STATUS"],
    )


async def fallbacks_set(m: Manager, a: argparse.Namespace) -> None:
    targets = []
    for t in a.targets:
        provider, _, model = t.partition("/")
        targets.append(Target(provider, model))
    statuses = None
    if a.on_status:
        try:
            statuses = [int(x) for x in a.on_status.split(",")]
        except ValueError:
            raise InvalidRequest("on_status holds HTTP error statuses (400-599)") from None
    chain = await m.set_fallback(a.org, a.feature, targets, statuses)
    print(f"fallback for {chain.scope}: " + " -> ".join(f"{t.provider}/{t.model}" for t in chain.targets))


async def fallbacks_delete(m: Manager, a: argparse.Namespace) -> None:
    print(f"fallback for {await m.delete_fallback(a.org, a.feature)} deleted")


def _rule_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--priority", type=int, help="lower runs first (default: after the last rule)")
    for cond in ("feature", "task", "provider", "model"):
        parser.add_argument(f"--when-{cond}", dest=f"match_{cond}", help=f"match this {cond} exactly")
    parser.add_argument("--provider", dest="target_provider", help="send matching requests to this provider")
    parser.add_argument("--model", dest="target_model", help="rewrite the model to this")
    parser.add_argument("--split", dest="split_percent", type=int, help="only this %% of matches (1-100)")


def add_parsers(sub: Any) -> None:
    rules = sub.add_parser("rules", help="routing rules").add_subparsers(dest="command", required=True)
    rl = rules.add_parser("list", help="an org's rules in evaluation order")
    rl.add_argument("org")
    rl.set_defaults(run=rules_list)
    ra = rules.add_parser("add", help="add a rule")
    ra.add_argument("org")
    ra.add_argument("name")
    _rule_options(ra)
    ra.set_defaults(run=rules_add)
    ru = rules.add_parser("update", help="change a rule")
    ru.add_argument("org")
    ru.add_argument("rule", help="rule name or id")
    _rule_options(ru)
    ru.set_defaults(run=rules_update)
    for verb in ("enable", "disable"):
        rv = rules.add_parser(verb, help=f"{verb} a rule")
        rv.add_argument("org")
        rv.add_argument("rule")
        rv.set_defaults(run=rules_update)
    rd = rules.add_parser("delete", help="delete a rule")
    rd.add_argument("org")
    rd.add_argument("rule")
    rd.set_defaults(run=rules_delete)
    ro = rules.add_parser("reorder", help="set the evaluation order (every rule, first = first)")
    ro.add_argument("org")
    ro.add_argument("rules", nargs="+")
    ro.set_defaults(run=rules_reorder)

    fb = sub.add_parser("fallbacks", help="failover paths").add_subparsers(dest="command", required=True)
    fl = fb.add_parser("list", help="an org's fallback chains")
    fl.add_argument("org")
    fl.set_defaults(run=fallbacks_list)
    fs = fb.add_parser("set", help="set the failover path (tried in order after the primary fails)")
    fs.add_argument("org")
    fs.add_argument("targets", nargs="+", metavar="PROVIDER/MODEL")
    fs.add_argument("--feature", help="only for this feature (default: the org's default chain)")
    fs.add_argument(
        "--on-status", help="statuses that fail over, comma-separated (default 429,500,502,503,504)"
    )
    fs.set_defaults(run=fallbacks_set)
    fd = fb.add_parser("delete", help="remove a fallback chain")
    fd.add_argument("org")
    fd.add_argument("--feature")
    fd.set_defaults(run=fallbacks_delete)
