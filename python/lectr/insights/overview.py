"""The overview of an org's traffic over a window, built from rollup rows (pure functions)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from lectr.insights.histogram import HIST_BUCKETS, percentile
from lectr.store.rollups import MINUTE_KEEP, SUM_COLS

# Positions in a rollup group row: six dimensions, then SUM_COLS.
_DIMS = ("feature", "model_requested", "model", "provider", "task", "routed")
_S = {name: len(_DIMS) + i for i, name in enumerate(SUM_COLS)}
_HIST = _S["l00"]
# Provider status from the window's success rate (upstream failures only:
# client disconnects and the gateway's own refusals are not the provider's).
HEALTHY_PCT = 95.0
DOWN_PCT = 50.0


class Totals(msgspec.Struct):
    requests: int
    errors: int
    error_rate: float | None
    req_per_min: float
    cost_usd: float
    cost_per_hour: float
    unpriced: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    avg_latency_ms: float | None
    p95_latency_ms: float | None


class Breakdown(msgspec.Struct):
    """One value of a dimension (null: none recorded, e.g. untyped task)."""

    key: str | None
    requests: int
    share: float
    errors: int
    error_rate: float
    cost_usd: float
    cost_share: float
    unpriced: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    avg_latency_ms: float | None
    p95_latency_ms: float | None


class ProviderRow(msgspec.Struct):
    provider: str
    requests: int
    avg_latency_ms: float | None
    success_pct: float | None
    status: str  # healthy, degraded, down


class Share(msgspec.Struct):
    requests: int
    share: float


class Untagged(msgspec.Struct):
    requests: int
    share: float
    threshold: float
    prompt: str | None  # set when the share is at or above the threshold


class Overview(msgspec.Struct):
    """An org's traffic over [since, until) (aligned to whole minutes, or
    whole hours for windows older than the 8 days minute rollups are kept)."""

    org_id: str
    since: float
    until: float
    totals: Totals
    by_feature: list[Breakdown]
    by_model: list[Breakdown]
    by_provider: list[Breakdown]
    by_task: list[Breakdown]
    providers: list[ProviderRow]
    routed: Share
    untagged: Untagged


def align(since: float, until: float, now: float) -> tuple[int, int]:
    """The window rollups can answer exactly: whole minutes, widened to whole
    hours where it reaches past the minute rollups' retention."""
    lo = math.floor(since / 60) * 60
    hi = math.ceil(until / 60) * 60
    horizon = now - MINUTE_KEEP + 3600
    if lo < horizon:
        lo = lo // 3600 * 3600
    if hi < horizon:
        hi = -(-hi // 3600) * 3600
    return lo, hi


class _Acc:
    """Column sums of a set of group rows (summed column by column, in C)."""

    __slots__ = ("sums",)

    def __init__(self, rows: Sequence[Sequence[Any]]) -> None:
        cols = list(zip(*rows, strict=True))[len(_DIMS) :] if rows else []
        self.sums: list[float] = [sum(c) for c in cols] if cols else [0.0] * len(SUM_COLS)

    def get(self, name: str) -> float:
        return self.sums[_S[name] - len(_DIMS)]

    @property
    def hist(self) -> list[float]:
        start = _HIST - len(_DIMS)
        return self.sums[start : start + HIST_BUCKETS]


def _avg(a: _Acc) -> float | None:
    n = a.get("requests")
    return a.get("latency_ms_sum") / n if n else None


def _group(rows: Sequence[Sequence[Any]], key: Callable[[Sequence[Any]], Any]) -> dict[Any, _Acc]:
    groups: dict[Any, list[Sequence[Any]]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    return {k: _Acc(g) for k, g in groups.items()}


def _breakdown(groups: dict[Any, _Acc], total: _Acc) -> list[Breakdown]:
    n_all = total.get("requests")
    cost_all = total.get("cost_usd")
    out = []
    for k, a in groups.items():
        n = a.get("requests")
        cost = a.get("cost_usd")
        out.append(
            Breakdown(
                key=k or None,
                requests=int(n),
                share=n / n_all if n_all else 0.0,
                errors=int(a.get("errors")),
                error_rate=a.get("errors") / n if n else 0.0,
                cost_usd=cost,
                cost_share=cost / cost_all if cost_all else 0.0,
                unpriced=int(n - a.get("priced")),
                prompt_tokens=int(a.get("prompt_tokens")),
                completion_tokens=int(a.get("completion_tokens")),
                cached_tokens=int(a.get("cached_tokens")),
                avg_latency_ms=_avg(a),
                p95_latency_ms=percentile(a.hist),
            )
        )
    out.sort(key=lambda b: (-b.cost_usd, -b.requests, b.key or ""))
    return out


def _status(pct: float | None) -> str:
    if pct is None or pct >= HEALTHY_PCT:
        return "healthy"
    return "degraded" if pct >= DOWN_PCT else "down"


def build(
    org_id: str, since: int, until: int, rows: Sequence[Sequence[Any]], untagged_threshold: float
) -> Overview:
    """The overview from rollup group rows (as `Store.rollup_groups` returns)."""
    total = _Acc(rows)
    n = total.get("requests")
    minutes = max((until - since) / 60, 1.0)
    totals = Totals(
        requests=int(n),
        errors=int(total.get("errors")),
        error_rate=total.get("errors") / n if n else None,
        req_per_min=n / minutes,
        cost_usd=total.get("cost_usd"),
        cost_per_hour=total.get("cost_usd") / (minutes / 60),
        unpriced=int(n - total.get("priced")),
        prompt_tokens=int(total.get("prompt_tokens")),
        completion_tokens=int(total.get("completion_tokens")),
        cached_tokens=int(total.get("cached_tokens")),
        avg_latency_ms=_avg(total),
        p95_latency_ms=percentile(total.hist),
    )
    providers = []
    for name, a in sorted(_group(rows, lambda r: r[3]).items()):
        count = a.get("requests")
        pct = 100.0 * (1 - a.get("upstream_errors") / count) if count else None
        providers.append(
            ProviderRow(
                provider=name,
                requests=int(count),
                avg_latency_ms=_avg(a),
                success_pct=pct,
                status=_status(pct),
            )
        )
    routed = sum(int(r[_S["requests"]] or 0) for r in rows if r[5])
    untagged = sum(int(r[_S["requests"]] or 0) for r in rows if r[0] == "untagged")
    untagged_share = untagged / n if n else 0.0
    prompt = None
    if n and untagged_share >= untagged_threshold:
        prompt = (
            f"{untagged_share:.0%} of requests carry no feature tag: send X-Lectr-Feature "
            "to see cost, latency and errors per feature"
        )
    return Overview(
        org_id=org_id,
        since=float(since),
        until=float(until),
        totals=totals,
        by_feature=_breakdown(_group(rows, lambda r: r[0]), total),
        # The model that served the request (what it was billed as).
        by_model=_breakdown(_group(rows, lambda r: r[2]), total),
        by_provider=_breakdown(_group(rows, lambda r: r[3]), total),
        by_task=_breakdown(_group(rows, lambda r: r[4]), total),
        providers=providers,
        routed=Share(requests=routed, share=routed / n if n else 0.0),
        untagged=Untagged(
            requests=untagged, share=untagged_share, threshold=untagged_threshold, prompt=prompt
        ),
    )
