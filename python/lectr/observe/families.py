"""The Prometheus families the gateway exports: name, help, labels and
buckets of each (the table in `observe.metrics`), and the fixed label sets
that start at zero so their series exist before the first event."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from lectr.observe.labels import (
    AUTH_CODES,
    BUDGET_STATES,
    LATENCY_BUCKETS,
    LATENCY_STATES,
    OVERHEAD_BUCKETS,
    POLICY_EVENTS,
    WRITER_OUTCOMES,
)


class Families:
    """Every collector, registered in the registry `r`."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.requests = Counter(
            "lectr_requests",
            "Requests handled (after authentication), by outcome status class.",
            ["org", "feature", "task", "provider", "model", "model_requested", "status_class"],
            registry=r,
        )
        self.duration = Histogram(
            "lectr_request_duration_seconds",
            "Total time from request to the last byte sent to the client.",
            ["org", "feature", "provider", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttfb = Histogram(
            "lectr_time_to_first_byte_seconds",
            "Time from request to the first response byte sent to the client.",
            ["org", "provider", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "lectr_gateway_overhead_seconds",
            "Time the gateway added: total duration minus time spent waiting on the provider.",
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.upstream = Counter(
            "lectr_upstream_requests",
            "Calls to providers by outcome; the basis of per-provider health.",
            ["provider", "outcome"],
            registry=r,
        )
        self.upstream_duration = Histogram(
            "lectr_upstream_duration_seconds",
            "Time spent on the provider call, until its body or stream ended.",
            ["provider"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "lectr_tokens",
            "Tokens by kind (prompt, completion, cached) and source (provider, estimated).",
            ["org", "feature", "provider", "model", "kind", "source"],
            registry=r,
        )
        self.cost = Counter(
            "lectr_cost_usd",
            "Estimated cost in USD of priced requests.",
            ["org", "feature", "provider", "model"],
            registry=r,
        )
        self.unpriced = Counter(
            "lectr_unpriced_requests",
            "Requests with usage but no price for their model (cost unknown, not zero).",
            ["org", "provider", "model"],
            registry=r,
        )
        self.errors = Counter(
            "lectr_errors",
            "Failed requests by error category and source (proxy, provider, network, client).",
            ["org", "feature", "provider", "model", "category", "source"],
            registry=r,
        )
        self.rejections = Counter(
            "lectr_rejections",
            "Requests refused by policy: rate limits, budgets, concurrent streams.",
            ["org", "reason"],
            registry=r,
        )
        self.auth_rejections = Counter(
            "lectr_auth_rejections",
            "Requests refused before an org was known (401).",
            ["code"],
            registry=r,
        )
        self.rule_hits = Counter(
            "lectr_rule_hits", "Requests a routing rule applied to.", ["org", "rule"], registry=r
        )
        self.fallbacks = Counter(
            "lectr_fallbacks",
            "Requests served by a fallback after the primary failed, by the provider that served.",
            ["org", "provider"],
            registry=r,
        )
        self.budgets = Gauge(
            "lectr_budgets",
            "Configured budgets by state (ok, soft_exceeded, hard_exceeded).",
            ["state"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.latency_targets = Gauge(
            "lectr_latency_targets",
            "Configured p95 latency targets by state (within, over, no_data).",
            ["state"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.inflight = Gauge(
            "lectr_inflight_requests", "Requests in progress.", multiprocess_mode="livesum", registry=r
        )
        self.streams = Gauge(
            "lectr_inflight_streams", "Streams in progress.", multiprocess_mode="livesum", registry=r
        )
        self.depth = Gauge(
            "lectr_writer_queue_depth",
            "Records waiting in memory to be written.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.writer = Counter(
            "lectr_writer_records",
            "Records through the capture pipeline by outcome.",
            ["outcome"],
            registry=r,
        )
        self.writer_failures = Counter(
            "lectr_writer_failures", "Batch writes to the store that failed.", registry=r
        )
        self.policy_events = Counter(
            "lectr_policy_events",
            "Policy counter store events: unavailable (a failed or timed-out call), "
            "reseeded (a budget counter missing at admission, lost or a new window, seeded from the log).",
            ["event"],
            registry=r,
        )
        # Fixed label sets start at zero so their series exist before the first event.
        for event in POLICY_EVENTS:
            self.policy_events.labels(event)
        for code in AUTH_CODES:
            self.auth_rejections.labels(code)
        for name in WRITER_OUTCOMES:
            self.writer.labels(name)
        for state in BUDGET_STATES:
            self.budgets.labels(state).set(0)
        for state in LATENCY_STATES:
            self.latency_targets.labels(state).set(0)

    def declared(self) -> list[MetricWrapperBase]:
        return [m for m in vars(self).values() if isinstance(m, MetricWrapperBase)]
