"""Metric updates: one per finished request, shared by all worker processes.

Request metrics come from the finished Record (never per chunk); pipeline
gauges and counters are synced in the background (the families:
`collectors`).

Labels are bounded: `feature` and model values past `label_cap` distinct
values (per process) become `other`, tasks outside the known set become
`other`, absent values are `none`. Org keys never appear; orgs are ids.

Multi-process: `lectr serve` points `PROMETHEUS_MULTIPROC_DIR` at a fresh
directory, every worker writes its values to memory-mapped files there and
whichever worker answers `/metrics` reads them all, so counters neither reset
nor split between workers. Without that variable (one process, e.g. tests
building `App` in-process) the values live in this process only.

Batched: the request path only adds to plain in-process totals (one dict
entry per distinct label combination, histograms as per-bucket counts); the
totals reach the collectors in one go each second (`run`), before every
scrape this worker answers (`render`) and at `close`. A worker's own scrape
is therefore exact and another worker's figures lag by at most a second
(prometheus-client's multiprocess values cost an `os.getpid()` and an mmap
write per update, which per request was ~10 % of the serving thread).
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import re
from bisect import bisect_left
from collections.abc import Callable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest, values
from prometheus_client.multiprocess import mark_process_dead

from lectr.observe.batch import Shape, ShapeKey, add_observations, check_histograms, merge
from lectr.observe.collectors import Collectors
from lectr.observe.exposition import MULTIPROC_ENV, Exposition, multiprocess_dir
from lectr.observe.labels import (
    BUDGET_STATES,
    LATENCY_BUCKETS,
    LATENCY_STATES,
    NONE,
    OTHER,
    OVERHEAD_BUCKETS,
    POLICY_EVENTS,
    REJECTIONS,
    TASKS,
    UNTAGGED,
    WRITER_OUTCOMES,
    LabelCap,
    outcome,
    status_class,
)
from lectr.types import Record

log = logging.getLogger("lectr.metrics")

_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db$")

# How a record's cost is accounted: priced (cost_usd_total), unpriced (usage
# known, no price: unpriced_requests_total) or neither (no usage).
_PRICED, _UNPRICED, _NO_USAGE = 1, 2, 0


class Metrics(Collectors):
    """The gateway's collectors and their updates. The request path calls
    `inflight`, `stream_started` / `stream_ended`, `auth_rejected` and
    `observe`, which only add to in-process totals; the app runs `run` in
    the background and `close` at shutdown, and `render` answers scrapes,
    each of which applies the totals to the collectors (`flush`).
    Single-threaded: every method runs on the worker's event loop."""

    def __init__(
        self,
        queue_depth: Callable[[], int],
        writer_counts: Callable[[], Mapping[str, int]] = dict,
        label_cap: int = 100,
        policy_counts: Callable[[], Mapping[str, int]] = dict,
    ) -> None:
        self._queue_depth = queue_depth
        self._writer_counts = writer_counts
        self._writer_seen: dict[str, int] = {}
        self._policy_counts = policy_counts
        self._policy_seen: dict[str, int] = {}
        self._features = LabelCap(label_cap, always=(UNTAGGED,))
        self._models = LabelCap(label_cap, always=(NONE,))
        self._orgs_seen: set[str] = set()
        # Since the last flush: per-shape totals, 401s by code; and the
        # current in-flight counts the gauges are set to at each flush.
        self._shapes: dict[ShapeKey, Shape] = {}
        self._auth_pending: dict[str, int] = {}
        self._inflight_n = 0
        self._streams_n = 0
        self._dir = multiprocess_dir()
        if self._dir and not getattr(values.ValueClass, "_multiprocess", False):
            # Values would silently stay per process and split between workers.
            raise RuntimeError(f"{MULTIPROC_ENV} was set after prometheus_client was imported")
        super().__init__()
        self._exposition = Exposition(self._dir, self._declared) if self._dir else None
        check_histograms(
            (
                (self._duration, LATENCY_BUCKETS),
                (self._ttfb, LATENCY_BUCKETS),
                (self._upstream_duration, LATENCY_BUCKETS),
                (self._overhead, OVERHEAD_BUCKETS),
            ),
            self._overhead,
        )

    # --- the request path ------------------------------------------------

    def inflight(self, delta: int) -> None:
        self._inflight_n += delta

    def stream_started(self) -> None:
        self._streams_n += 1

    def stream_ended(self) -> None:
        self._streams_n -= 1

    def auth_rejected(self, code: str) -> None:
        """A request refused before an org was known (401s)."""
        self._auth_pending[code] = self._auth_pending.get(code, 0) + 1

    def observe(self, record: Record, upstream_ms: float | None) -> None:
        """Account one finished request (its only metric update): add it to
        the totals of its shape; `flush` turns them into collector updates."""
        task = record.task
        cost = record.cost_usd
        key: ShapeKey = (
            record.org_id,
            self._features(record.feature),
            task if task in TASKS else (NONE if task is None else OTHER),
            record.provider,
            self._models(record.model_actual or NONE),
            self._models(record.model_requested or NONE),
            record.status_code,
            record.error_category,
            record.error_source,
            record.token_source,
            record.rule_id,
            record.fallback_used is not None,
            upstream_ms is not None,
            _PRICED
            if cost is not None
            else _UNPRICED
            if record.prompt_tokens is not None or record.completion_tokens is not None
            else _NO_USAGE,
        )
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shapes[key] = Shape()
        shape.n += 1
        v = record.latency_ms / 1000.0
        h = shape.duration
        h[bisect_left(LATENCY_BUCKETS, v)] += 1
        h[-1] += v
        if record.ttfb_ms is not None:
            v = record.ttfb_ms / 1000.0
            h = shape.ttfb
            h[bisect_left(LATENCY_BUCKETS, v)] += 1
            h[-1] += v
        if upstream_ms is not None:
            v = max(0.0, record.latency_ms - upstream_ms) / 1000.0
            h = shape.overhead
            h[bisect_left(OVERHEAD_BUCKETS, v)] += 1
            h[-1] += v
            v = upstream_ms / 1000.0
            h = shape.upstream
            h[bisect_left(LATENCY_BUCKETS, v)] += 1
            h[-1] += v
        if record.prompt_tokens:
            shape.prompt += record.prompt_tokens
        if record.completion_tokens:
            shape.completion += record.completion_tokens
        if record.cached_tokens:
            shape.cached += record.cached_tokens
        if cost is not None:
            shape.cost += cost

    def flush(self) -> None:
        """Apply everything the request path accumulated since the last flush
        to the collectors: one update per distinct series, not per request."""
        self._inflight.set(self._inflight_n)
        self._streams.set(self._streams_n)
        if self._auth_pending:
            pending, self._auth_pending = self._auth_pending, {}
            for code, n in pending.items():
                self._auth_rejections.labels(code).inc(n)
        if not self._shapes:
            return
        shapes, self._shapes = self._shapes, {}
        counts: dict[Counter, dict[tuple[str, ...], float]] = {}
        observed: dict[Histogram, dict[tuple[str, ...], list[float]]] = {}

        def inc(family: Counter, labels: tuple[str, ...], amount: float) -> None:
            series = counts.setdefault(family, {})
            series[labels] = series.get(labels, 0) + amount

        def add(family: Histogram, labels: tuple[str, ...], buckets: list[float]) -> None:
            series = observed.setdefault(family, {})
            if labels in series:
                merge(series[labels], buckets)
            else:
                series[labels] = buckets

        for key, shape in shapes.items():
            (org, feature, task, provider, model, requested, status, category, source) = key[:9]
            token_source, rule, fallback, upstream, pricing = key[9:]
            n = shape.n
            if org not in self._orgs_seen:
                self._orgs_seen.add(org)
                for reason in REJECTIONS:
                    self._rejections.labels(org, reason)
            inc(
                self._requests,
                (org, feature, task, provider, model, requested, status_class(status)),
                n,
            )
            add(self._duration, (org, feature, provider, model), shape.duration)
            if any(shape.ttfb[:-1]):
                add(self._ttfb, (org, provider, model), shape.ttfb)
            if upstream:
                add(self._overhead, (), shape.overhead)
                inc(self._upstream, (provider, outcome(status, category, source)), n)
                add(self._upstream_duration, (provider,), shape.upstream)
            for kind, tokens in (
                ("prompt", shape.prompt),
                ("completion", shape.completion),
                ("cached", shape.cached),
            ):
                if tokens:
                    inc(self._tokens, (org, feature, provider, model, kind, token_source or NONE), tokens)
            if pricing == _PRICED:
                inc(self._cost, (org, feature, provider, model), shape.cost)
            elif pricing == _UNPRICED:
                inc(self._unpriced, (org, provider, model), n)
            if category is not None:
                inc(self._errors, (org, feature, provider, model, category, source or NONE), n)
                if category in REJECTIONS:
                    inc(self._rejections, (org, category), n)
            if rule is not None:
                inc(self._rule_hits, (org, rule), n)
            if fallback:
                inc(self._fallbacks, (org, provider), n)
        for counter, series in counts.items():
            for labels, amount in series.items():
                counter.labels(*labels).inc(amount)
        for histogram, hseries in observed.items():
            for labels, buckets in hseries.items():
                add_observations(histogram.labels(*labels) if labels else histogram, buckets)

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
        """Flush the request totals; copy the writer's counters and queue
        depth into the collectors."""
        self.flush()
        self._depth.set(self._queue_depth())
        counts = self._writer_counts()
        for name in (*WRITER_OUTCOMES, "failures"):
            delta = counts.get(name, 0) - self._writer_seen.get(name, 0)
            if delta > 0:
                self._writer_seen[name] = counts.get(name, 0)
                target = self._writer_failures if name == "failures" else self._writer.labels(name)
                target.inc(delta)
        policy = self._policy_counts()
        for name in POLICY_EVENTS:
            delta = policy.get(name, 0) - self._policy_seen.get(name, 0)
            if delta > 0:
                self._policy_seen[name] = policy.get(name, 0)
                self._policy_events.labels(name).inc(delta)

    async def run(self, interval: float = 1.0) -> None:
        """Sync every `interval` seconds, so any worker's scrape sees every
        worker's requests and pipeline within that time; forget dead
        workers' gauges."""
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
