"""The console's numbers from rollup rows: chart series, sparklines, each
rule's share of traffic, and how values are written (ms, USD, UTC time)."""

from __future__ import annotations

import time
from typing import Any

from lectr.gateway.providers import detect
from lectr.insights.histogram import HIST_BUCKETS, percentile
from lectr.store.rollups import SUM_COLS
from lectr.types import Rule

_REQ = 6 + SUM_COLS.index("requests")  # after the six rollup dimensions


def series(rows: list[Any], lo: int, hi: int, width: int, offset: int = 0) -> dict[str, list[Any]]:
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


def spark(values: list[Any], w: int = 120, h: int = 24) -> str:
    """SVG polyline points for a sparkline (numbers only, so safe to inline)."""
    vals = [float(v or 0) for v in values]
    if not vals:
        return ""
    top = max(vals) or 1.0
    step = w / max(len(vals) - 1, 1)
    return " ".join(f"{i * step:.1f},{h - 1 - (v / top) * (h - 2):.1f}" for i, v in enumerate(vals))


def rule_shares(rules: list[Rule], rows: list[Any]) -> tuple[int, int, dict[str, int]]:
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


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1000:.2f} s" if v >= 1000 else f"{v:.0f} ms"


def fmt_usd(v: float | None) -> str:
    if v is None:
        return "-"
    if v and abs(v) < 0.01:
        return f"${v:.6f}"
    return f"${v:,.4f}" if abs(v) < 1 else f"${v:,.2f}"


def fmt_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + "Z"
