"""Metric label values: the fixed sets, the cap on distinct values, status
classes and upstream outcomes; histogram bucket bounds."""

from __future__ import annotations

from collections.abc import Iterable

from lectr.types import Record

UNTAGGED = "untagged"
OTHER = "other"
NONE = "none"
TASKS = frozenset({"classification", "summarisation", "extraction", "generation", "reasoning"})
# error_category values that are policy rejections (429s produced by the gateway).
REJECTIONS = ("rate_limit_exceeded", "budget_exceeded", "concurrent_streams_exceeded")
AUTH_CODES = ("missing_lectr_key", "invalid_lectr_key", "org_disabled")
BUDGET_STATES = ("ok", "soft_exceeded", "hard_exceeded")
LATENCY_STATES = ("within", "over", "no_data")
WRITER_OUTCOMES = ("queued", "written", "retried", "spilled", "replayed", "dropped", "quarantined")
UPSTREAM_OUTCOMES = (
    "success",
    "client_error",
    "rate_limited",
    "server_error",
    "network_error",
    "cancelled",
)
TOKEN_KINDS = ("prompt", "completion", "cached")
POLICY_EVENTS = ("unavailable", "reseeded")

# Seconds. Requests and first bytes span milliseconds (cached embeddings) to
# minutes (long generations; first_byte_timeout defaults to 120 s).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# The gateway's own share should sit well under a millisecond.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class LabelCap:
    """Admits the first `cap` distinct values of a label; later ones read `other`.

    Per process: with several workers each admits its own first `cap`, so a
    value can be `other` in one worker and itself in another, and the
    instance exports at most workers x cap values.
    """

    __slots__ = ("_always", "_cap", "_seen")

    def __init__(self, cap: int, always: Iterable[str] = ()) -> None:
        self._cap = cap
        self._always = frozenset(always)
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen or value in self._always:
            return value
        if len(self._seen) < self._cap:
            self._seen.add(value)
            return value
        return OTHER


def status_class(status: int) -> str:
    return f"{status // 100}xx"


def upstream_outcome(record: Record) -> str:
    """How the provider call went, for per-provider health."""
    return outcome(record.status_code, record.error_category, record.error_source)


def outcome(status: int, category: str | None, source: str | None) -> str:
    if category == "client_closed":
        return "cancelled"
    if source == "network":
        return "network_error"
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    if status >= 400:
        return "client_error"
    return "success"
