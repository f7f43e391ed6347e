"""What admission checks: each org's policy, and the counter checks it asks of one request."""

from __future__ import annotations

import math
from typing import Any

import msgspec

from lectr.control.policy.counters import Check, Settle
from lectr.control.policy.keys import STREAM_LEASE_MS, budget_key, limit_key, scope_of
from lectr.types import Budget, LatencyTarget, RateLimit


class Admission(msgspec.Struct):
    """What admission took, to be settled at completion."""

    member: str
    settles: list[Settle]
    budgets: list[tuple[Budget, str]]  # (budget, counter key) reserved against
    model_override: str | None = None
    overridden_by: Budget | None = None
    targets: list[tuple[LatencyTarget, str]] = msgspec.field(default_factory=list)


class PolicyConfig(msgspec.Struct, frozen=True):
    """One org's policy, from the control snapshot."""

    budgets: tuple[Budget, ...] = ()
    limits: tuple[RateLimit, ...] = ()
    targets: tuple[LatencyTarget, ...] = ()


def by_org(
    budgets: list[Budget], limits: list[RateLimit], targets: list[LatencyTarget]
) -> dict[str, PolicyConfig]:
    """The policy of every org that has any."""
    cfg: dict[str, dict[str, list[Any]]] = {}
    for b in budgets:
        cfg.setdefault(b.org_id, {"b": [], "l": [], "t": []})["b"].append(b)
    for limit in limits:
        cfg.setdefault(limit.org_id, {"b": [], "l": [], "t": []})["l"].append(limit)
    for t in targets:
        cfg.setdefault(t.org_id, {"b": [], "l": [], "t": []})["t"].append(t)
    return {org: PolicyConfig(tuple(c["b"]), tuple(c["l"]), tuple(c["t"])) for org, c in cfg.items()}


def estimate_tokens(body_len: int, max_tokens: int | None, default_max: int) -> tuple[int, int]:
    """(prompt, completion) tokens reserved for a request."""
    return math.ceil(body_len / 3), max_tokens if max_tokens is not None else default_max


class Plan(msgspec.Struct):
    """The checks of one request, in the order admission evaluates them."""

    checks: list[Check]
    settles: list[Settle]
    names: list[str]  # per check, how a refusal names the limit
    budgets: list[tuple[Budget, str]]  # (budget, counter key) reserved against


def plan(
    cfg: PolicyConfig,
    org_id: str,
    feature: str,
    streaming: bool,
    estimate: tuple[int, int],
    price: float | None,
    now: float,
) -> Plan:
    """The rate limits, then the hard-capped budgets, that apply to a request
    of `feature` reserving `estimate` (prompt, completion) tokens at `price`."""
    prompt_est, completion_est = estimate
    checks: list[Check] = []
    settles: list[Settle] = []
    names: list[str] = []
    for lim in cfg.limits:
        scope = scope_of(feature, lim.scope)
        if lim.scope not in ("*", feature):
            continue
        base = limit_key(org_id, scope or "*")
        if lim.requests_per_min is not None:
            checks.append(Check("req", f"{base}:req", lim.requests_per_min))
            names.append(f"{lim.requests_per_min} requests/min")
        if lim.tokens_per_min is not None:
            amount = prompt_est + completion_est
            checks.append(Check("tok", f"{base}:tok", lim.tokens_per_min, amount))
            settles.append(Settle("tok", f"{base}:tok", amount))
            names.append(f"{lim.tokens_per_min} tokens/min")
        if streaming and lim.concurrent_streams is not None:
            checks.append(Check("str", f"{base}:str", lim.concurrent_streams, 1, STREAM_LEASE_MS))
            settles.append(Settle("str", f"{base}:str", 1))
            names.append(f"{lim.concurrent_streams} concurrent streams")
    budgets: list[tuple[Budget, str]] = []
    for b in cfg.budgets:
        if b.scope not in ("*", feature) or b.hard_usd is None:
            continue
        key = budget_key(b, feature, now)
        # Unpriced models reserve nothing: their cost is unknown (and recorded as null).
        reserve_usd = price or 0.0
        checks.append(Check("bud", key, b.hard_usd, reserve_usd))
        settles.append(Settle("bud", key, reserve_usd))
        budgets.append((b, key))
        names.append(f"budget {b.scope}/{b.period}")
    return Plan(checks, settles, names, budgets)
