"""One proxied request as the handler learns it: the endpoint it came on,
what is known so far (org, tags, route, status, usage, timings), and the
Record it becomes at the end."""

from __future__ import annotations

import os
import time

import msgspec

from lectr.control.policy.admission import Admission
from lectr.errors import LectrError
from lectr.gateway import protocols
from lectr.gateway.upstream import Response
from lectr.types import Record


class Endpoint(msgspec.Struct, frozen=True):
    """A proxied endpoint."""

    path: str  # upstream path after the base URL, e.g. "/chat/completions"
    method: str
    has_body: bool
    protocol: str = protocols.CHAT  # chat | responses | messages
    # Whether a response to it uses tokens (not a listing, a stored
    # response fetched again or a free token count).
    billable: bool = True


def provider_category(status: int) -> str:
    """Error category of a provider's error status."""
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "auth_failed"
    if status >= 500:
        return "server_error"
    return "bad_request"


class Exchange:
    """What is learned about one request as it goes; becomes its Record."""

    __slots__ = (
        "admission",
        "billable",
        "body_up",
        "cache_write",
        "cached",
        "completion",
        "endpoint",
        "error_category",
        "error_source",
        "fallback_used",
        "feature",
        "id",
        "model_actual",
        "model_requested",
        "org_id",
        "prompt",
        "protocol",
        "provider",
        "provider_unknown",
        "reasoning",
        "rule_id",
        "start",
        "status",
        "streaming",
        "task",
        "token_source",
        "ts",
        "ttfb",
        "upstream",
        "upstream_ms",
        "upstream_start",
    )

    def __init__(self, org_id: str, endpoint: str, feature: str, task: str | None) -> None:
        self.ts = time.time()
        self.id = record_id(self.ts)
        self.admission: Admission | None = None
        self.start = time.perf_counter()
        self.org_id = org_id
        self.endpoint = endpoint
        self.feature = feature
        self.task = task
        self.provider = "openai"
        self.provider_unknown = False
        self.model_requested: str | None = None
        self.model_actual: str | None = None
        self.rule_id: str | None = None
        self.fallback_used: str | None = None
        self.status = 0
        self.error_category: str | None = None
        self.error_source: str | None = None
        self.streaming = False
        self.ttfb: float | None = None
        self.upstream: Response | None = None
        self.upstream_start = 0.0
        self.upstream_ms: float | None = None
        self.body_up = b""
        self.prompt: int | None = None
        self.completion: int | None = None
        self.cached: int | None = None
        self.cache_write: int | None = None
        self.reasoning: int | None = None
        self.protocol = protocols.CHAT
        self.billable = True
        self.token_source: str | None = None

    def fail(self, e: LectrError) -> None:
        self.status = e.status
        self.error_category = e.category
        self.error_source = e.source

    def upstream_done(self) -> None:
        """The provider's part is over (body complete, stream ended or failed)."""
        if self.upstream_start and self.upstream_ms is None:
            self.upstream_ms = (time.perf_counter() - self.upstream_start) * 1000.0

    def mark_first_byte(self) -> None:
        if self.ttfb is None:
            self.ttfb = (time.perf_counter() - self.start) * 1000.0

    def record(self, cost: float | None) -> Record:
        """The request's record, as it is at the end."""
        return Record(
            id=self.id,
            ts=self.ts,
            org_id=self.org_id,
            endpoint=self.endpoint,
            provider=self.provider,
            provider_unknown=self.provider_unknown,
            model_requested=self.model_requested,
            model_actual=self.model_actual,
            rule_id=self.rule_id,
            fallback_used=self.fallback_used,
            status_code=self.status,
            error_category=self.error_category,
            error_source=self.error_source,
            streaming=self.streaming,
            latency_ms=(time.perf_counter() - self.start) * 1000.0,
            ttfb_ms=self.ttfb,
            prompt_tokens=self.prompt,
            completion_tokens=self.completion,
            cached_tokens=self.cached,
            token_source=self.token_source,
            cost_usd=cost,
            feature=self.feature,
            task=self.task,
            cache_write_tokens=self.cache_write,
            reasoning_tokens=self.reasoning,
        )


def record_id(ts: float) -> str:
    """32 hex digits: the millisecond timestamp, then 80 random bits. Time
    order keeps the stores' id indexes append-mostly: random (uuid4) ids
    scatter every insert across the B-tree, which made SQLite's writer ~5x
    slower on a million-row table (11k vs 51k records/s)."""
    return f"{int(ts * 1000):012x}{os.urandom(10).hex()}"
