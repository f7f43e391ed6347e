"""Counter keys and windows: what each budget and rate limit counts under, and for how long."""

from __future__ import annotations

from datetime import UTC, datetime

from lectr.types import Budget

STREAM_LEASE_MS = 3_600_000  # an open-stream entry older than this was leaked by a dead instance


def window_id(period: str, now: float) -> tuple[str, float, float]:
    """(id, start, end) of the UTC day or month containing `now`."""
    t = datetime.fromtimestamp(now, UTC)
    if period == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        end_ts = start.timestamp() + 86_400
        return start.strftime("%Y%m%d"), start.timestamp(), end_ts
    start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    nxt = start.replace(year=start.year + (start.month == 12), month=start.month % 12 + 1)
    return start.strftime("%Y%m"), start.timestamp(), nxt.timestamp()


def scope_of(feature: str, scope: str) -> str | None:
    return None if scope == "*" else feature


def budget_key(b: Budget, feature: str, now: float) -> str:
    wid, _, _ = window_id(b.period, now)
    return f"lectr:bud:{b.org_id}:{b.period}:{wid}:{scope_of(feature, b.scope) or '*'}"


def limit_key(org_id: str, scope: str) -> str:
    """The prefix of a rate limit's counters (`:req`, `:tok`, `:str` follow)."""
    return f"lectr:{org_id}:{scope}"
