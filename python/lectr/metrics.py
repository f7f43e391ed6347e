"""Prometheus collectors: one update per finished request, shared by all worker processes.

Request metrics come from the finished Record (never per chunk); pipeline
gauges and counters are synced in the background. Every family, its labels
and its meaning (`lectr_` prefix omitted):

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
                                                                      replayed dropped
writer_failures_total                                                 failed batch writes
```

Labels are bounded: `feature` and model values past `label_cap` distinct
values (per process) become `other`, tasks outside the known set become
`other`, absent values are `none`. Org keys never appear; orgs are ids.

Multi-process: `lectr serve` points `PROMETHEUS_MULTIPROC_DIR` at a fresh
directory, every worker writes its values to memory-mapped files there and
whichever worker answers `/metrics` reads them all, so counters neither reset
nor split between workers. Without that variable (one process, e.g. tests
building `App` in-process) the values live in this process only.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from lectr.types import Record

log = logging.getLogger("lectr.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# `_created` series double the series count and nothing here uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

UNTAGGED = "untagged"
OTHER = "other"
NONE = "none"
TASKS = frozenset({"classification", "summarisation", "extraction", "generation", "reasoning"})
# error_category values that are policy rejections (429s produced by the gateway).
REJECTIONS = ("rate_limit_exceeded", "budget_exceeded", "concurrent_streams_exceeded")
AUTH_CODES = ("missing_lectr_key", "invalid_lectr_key", "org_disabled")
BUDGET_STATES = ("ok", "soft_exceeded", "hard_exceeded")
LATENCY_STATES = ("within", "over", "no_data")
WRITER_OUTCOMES = ("queued", "written", "retried", "spilled", "replayed", "dropped")
UPSTREAM_OUTCOMES = (
    "success",
    "client_error",
    "rate_limited",
    "server_error",
    "network_error",
    "cancelled",
)
TOKEN_KINDS = ("prompt", "completion", "cached")

# Seconds. Requests and first bytes span milliseconds (cached embeddings) to
# minutes (long generations; first_byte_timeout defaults to 120 s).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# The gateway's own share should sit well under a millisecond.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db$")


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
    if record.error_category == "client_closed":
        return "cancelled"
    if record.error_source == "network":
        return "network_error"
    if record.status_code == 429:
        return "rate_limited"
    if record.status_code >= 500:
        return "server_error"
    if record.status_code >= 400:
        return "client_error"
    return "success"


def prepare_multiprocess_dir(path: Path) -> Path:
    """Create `path` and remove value files a previous run left there, so a
    new instance starts from zero (called by `lectr serve` before workers)."""
    path.mkdir(parents=True, exist_ok=True)
    for f in path.glob("*.db"):
        f.unlink()
    return path


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


class _Exposition:
    """All workers' values from the shared directory, plus HELP/TYPE of the
    families no worker has written yet, as a single process would show them."""

    def __init__(self, path: str, declared: list[MetricWrapperBase]) -> None:
        self._collector = MultiProcessCollector(None, path)  # type: ignore[no-untyped-call]
        self._declared = declared

    def collect(self) -> Iterable[Metric]:
        families = list(self._collector.collect())  # type: ignore[no-untyped-call]
        seen = {f.name for f in families}
        for m in self._declared:
            families.extend(d for d in m.describe() if d.name not in seen)
        return sorted(families, key=lambda f: f.name)


class Metrics:
    """The gateway's collectors. The request path calls `inflight`,
    `stream_started` / `stream_ended`, `auth_rejected` and `observe`; the
    app runs `run` in the background and `close` at shutdown."""

    def __init__(
        self,
        queue_depth: Callable[[], int],
        writer_counts: Callable[[], Mapping[str, int]] = dict,
        label_cap: int = 100,
    ) -> None:
        self._queue_depth = queue_depth
        self._writer_counts = writer_counts
        self._writer_seen: dict[str, int] = {}
        self._features = LabelCap(label_cap, always=(UNTAGGED,))
        self._models = LabelCap(label_cap, always=(NONE,))
        self._orgs_seen: set[str] = set()
        self._dir = multiprocess_dir()
        if self._dir and not getattr(values.ValueClass, "_multiprocess", False):
            # Values would silently stay per process and split between workers.
            raise RuntimeError(f"{MULTIPROC_ENV} was set after prometheus_client was imported")
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
        # Fixed label sets start at zero so their series exist before the first event.
        for code in AUTH_CODES:
            self._auth_rejections.labels(code)
        for outcome in WRITER_OUTCOMES:
            self._writer.labels(outcome)
        for state in BUDGET_STATES:
            self._budgets.labels(state).set(0)
        for state in LATENCY_STATES:
            self._latency_targets.labels(state).set(0)
        self._declared: list[MetricWrapperBase] = [
            m for m in vars(self).values() if isinstance(m, MetricWrapperBase)
        ]
        self._exposition = _Exposition(self._dir, self._declared) if self._dir else None

    # --- the request path ------------------------------------------------

    def inflight(self, delta: int) -> None:
        self._inflight.inc(delta)

    def stream_started(self) -> None:
        self._streams.inc()

    def stream_ended(self) -> None:
        self._streams.dec()

    def auth_rejected(self, code: str) -> None:
        """A request refused before an org was known (401s)."""
        self._auth_rejections.labels(code).inc()

    def observe(self, record: Record, upstream_ms: float | None) -> None:
        """Account one finished request (its only metric update)."""
        org = record.org_id
        if org not in self._orgs_seen:
            self._orgs_seen.add(org)
            for reason in REJECTIONS:
                self._rejections.labels(org, reason)
        feature = self._features(record.feature)
        model = self._models(record.model_actual or NONE)
        provider = record.provider
        task = record.task if record.task in TASKS else (NONE if record.task is None else OTHER)
        self._requests.labels(
            org,
            feature,
            task,
            provider,
            model,
            self._models(record.model_requested or NONE),
            status_class(record.status_code),
        ).inc()
        self._duration.labels(org, feature, provider, model).observe(record.latency_ms / 1000.0)
        if record.ttfb_ms is not None:
            self._ttfb.labels(org, provider, model).observe(record.ttfb_ms / 1000.0)
        if upstream_ms is not None:
            self._overhead.observe(max(0.0, record.latency_ms - upstream_ms) / 1000.0)
            self._upstream.labels(provider, upstream_outcome(record)).inc()
            self._upstream_duration.labels(provider).observe(upstream_ms / 1000.0)
        source = record.token_source or NONE
        for kind, n in (
            ("prompt", record.prompt_tokens),
            ("completion", record.completion_tokens),
            ("cached", record.cached_tokens),
        ):
            if n:
                self._tokens.labels(org, feature, provider, model, kind, source).inc(n)
        if record.cost_usd is not None:
            self._cost.labels(org, feature, provider, model).inc(record.cost_usd)
        elif record.prompt_tokens is not None or record.completion_tokens is not None:
            self._unpriced.labels(org, provider, model).inc()
        if record.error_category is not None:
            self._errors.labels(
                org, feature, provider, model, record.error_category, record.error_source or NONE
            ).inc()
            if record.error_category in REJECTIONS:
                self._rejections.labels(org, record.error_category).inc()
        if record.rule_id is not None:
            self._rule_hits.labels(org, record.rule_id).inc()
        if record.fallback_used is not None:
            self._fallbacks.labels(org, provider).inc()

    # --- control plane -----------------------------------------------------

    def set_budget_states(self, counts: Mapping[str, int]) -> None:
        """How many budgets are in each state (called by the budget policy)."""
        for state in BUDGET_STATES:
            self._budgets.labels(state).set(counts.get(state, 0))

    def set_latency_target_states(self, counts: Mapping[str, int]) -> None:
        """How many latency targets are within or over (called by the policy)."""
        for state in LATENCY_STATES:
            self._latency_targets.labels(state).set(counts.get(state, 0))

    # --- background and exposition ------------------------------------------

    def sync(self) -> None:
        """Copy the writer's counters and queue depth into the collectors."""
        self._depth.set(self._queue_depth())
        counts = self._writer_counts()
        for name in (*WRITER_OUTCOMES, "failures"):
            delta = counts.get(name, 0) - self._writer_seen.get(name, 0)
            if delta > 0:
                self._writer_seen[name] = counts.get(name, 0)
                target = self._writer_failures if name == "failures" else self._writer.labels(name)
                target.inc(delta)

    async def run(self, interval: float = 1.0) -> None:
        """Sync every `interval` seconds, so any worker's scrape sees every
        worker's pipeline within that time; forget dead workers' gauges."""
        while True:
            try:
                self.sync()
                self._reap_dead_workers()
            except Exception as e:  # a missed sync is retried next round
                log.warning("metrics sync failed: %s", type(e).__name__)
            await asyncio.sleep(interval)

    def close(self) -> None:
        """Final sync; a stopping worker's gauges leave the sums."""
        self.sync()
        if self._dir:
            mark_process_dead(os.getpid(), self._dir)  # type: ignore[no-untyped-call]

    def _reap_dead_workers(self) -> None:
        # A worker that died without `close` would otherwise keep counting in
        # the in-flight and queue sums; its counters stay (they are history).
        if not self._dir:
            return
        for f in glob.glob(os.path.join(self._dir, "gauge_live*_*.db")):
            m = _LIVE_GAUGE_FILE.search(f)
            if m is None or int(m.group(1)) == os.getpid():
                continue
            pid = int(m.group(1))
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                mark_process_dead(pid, self._dir)  # type: ignore[no-untyped-call]
            except PermissionError:
                pass

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type."""
        self.sync()
        body = generate_latest(self._exposition or self.registry)
        return body, CONTENT_TYPE_LATEST
