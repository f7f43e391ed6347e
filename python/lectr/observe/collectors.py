"""The gateway's Prometheus families, declared once on a registry of their own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
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

# `_created` series double the series count and nothing here uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Collectors:
    """Every family on `registry`, its fixed label sets at zero; `Metrics`
    adds the updates. Each family, its labels and its meaning (`lectr_`
    prefix omitted):

    ```
    requests_total                    org feature task provider model model_requested status_class
    request_duration_seconds          org feature provider model          total time, histogram
    time_to_first_byte_seconds        org provider model                  histogram
    gateway_overhead_seconds          -                                   total minus upstream time
    upstream_requests_total           provider outcome                    health: success, client_error,
                                                                          rate_limited, server_error,
                                                                          network_error, cancelled
    upstream_duration_seconds         provider                            histogram
    tokens_total                      org feature provider model kind source
    cost_usd_total                    org feature provider model          priced requests only
    unpriced_requests_total           org provider model                  usage known, model not in prices
    errors_total                      org feature provider model category source
    rejections_total                  org reason                          rate limit, budget, streams (429)
    auth_rejections_total             code                                401s, before an org is known
    rule_hits_total                   org rule
    fallbacks_total                   org provider                        provider that finally served
    budgets                           state                               budgets per state (set by policy)
    latency_targets                   state                               p95 targets within / over / no_data
    inflight_requests, inflight_streams                                   gauges, summed over workers
    writer_queue_depth                                                    gauge, summed over workers
    writer_records_total              outcome                             queued written retried spilled
                                                                          replayed dropped quarantined
    writer_failures_total                                                 failed batch writes
    policy_events_total               event                               unavailable (a counter call failed),
                                                                          reseeded (a budget counter missing
                                                                          at admission: lost, or a new window)
    ```
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry

        self._requests = Counter(
            "lectr_requests",
            "Requests handled (after authentication), by outcome status class.",
            ["org", "feature", "task", "provider", "model", "model_requested", "status_class"],
            registry=r,
        )
        self._duration = Histogram(
            "lectr_request_duration_seconds",
            "Total time from request to the last byte sent to the client.",
            ["org", "feature", "provider", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._ttfb = Histogram(
            "lectr_time_to_first_byte_seconds",
            "Time from request to the first response byte sent to the client.",
            ["org", "provider", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._overhead = Histogram(
            "lectr_gateway_overhead_seconds",
            "Time the gateway added: total duration minus time spent waiting on the provider.",
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self._upstream = Counter(
            "lectr_upstream_requests",
            "Calls to providers by outcome; the basis of per-provider health.",
            ["provider", "outcome"],
            registry=r,
        )
        self._upstream_duration = Histogram(
            "lectr_upstream_duration_seconds",
            "Time spent on the provider call, until its body or stream ended.",
            ["provider"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._tokens = Counter(
            "lectr_tokens",
            "Tokens by kind (prompt, completion, cached) and source (provider, estimated).",
            ["org", "feature", "provider", "model", "kind", "source"],
            registry=r,
        )
        self._cost = Counter(
            "lectr_cost_usd",
            "Estimated cost in USD of priced requests.",
            ["org", "feature", "provider", "model"],
            registry=r,
        )
        self._unpriced = Counter(
            "lectr_unpriced_requests",
            "Requests with usage but no price for their model (cost unknown, not zero).",
            ["org", "provider", "model"],
            registry=r,
        )
        self._errors = Counter(
            "lectr_errors",
            "Failed requests by error category and source (proxy, provider, network, client).",
            ["org", "feature", "provider", "model", "category", "source"],
            registry=r,
        )
        self._rejections = Counter(
            "lectr_rejections",
            "Requests refused by policy: rate limits, budgets, concurrent streams.",
            ["org", "reason"],
            registry=r,
        )
        self._auth_rejections = Counter(
            "lectr_auth_rejections",
            "Requests refused before an org was known (401).",
            ["code"],
            registry=r,
        )
        self._rule_hits = Counter(
            "lectr_rule_hits", "Requests a routing rule applied to.", ["org", "rule"], registry=r
        )
        self._fallbacks = Counter(
            "lectr_fallbacks",
            "Requests served by a fallback after the primary failed, by the provider that served.",
            ["org", "provider"],
            registry=r,
        )
        self._budgets = Gauge(
            "lectr_budgets",
            "Configured budgets by state (ok, soft_exceeded, hard_exceeded).",
            ["state"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self._latency_targets = Gauge(
            "lectr_latency_targets",
            "Configured p95 latency targets by state (within, over, no_data).",
            ["state"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self._inflight = Gauge(
            "lectr_inflight_requests", "Requests in progress.", multiprocess_mode="livesum", registry=r
        )
        self._streams = Gauge(
            "lectr_inflight_streams", "Streams in progress.", multiprocess_mode="livesum", registry=r
        )
        self._depth = Gauge(
            "lectr_writer_queue_depth",
            "Records waiting in memory to be written.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self._writer = Counter(
            "lectr_writer_records",
            "Records through the capture pipeline by outcome.",
            ["outcome"],
            registry=r,
        )
        self._writer_failures = Counter(
            "lectr_writer_failures", "Batch writes to the store that failed.", registry=r
        )
        self._policy_events = Counter(
            "lectr_policy_events",
            "Policy counter store events: unavailable (a failed or timed-out call), "
            "reseeded (a budget counter missing at admission, lost or a new window, seeded from the log).",
            ["event"],
            registry=r,
        )
        # Fixed label sets start at zero so their series exist before the first event.
        for event in POLICY_EVENTS:
            self._policy_events.labels(event)
        for code in AUTH_CODES:
            self._auth_rejections.labels(code)
        for name in WRITER_OUTCOMES:
            self._writer.labels(name)
        for state in BUDGET_STATES:
            self._budgets.labels(state).set(0)
        for state in LATENCY_STATES:
            self._latency_targets.labels(state).set(0)
        self._declared: list[MetricWrapperBase] = [
            m for m in vars(self).values() if isinstance(m, MetricWrapperBase)
        ]
