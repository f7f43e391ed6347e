"""Prometheus metrics: updated once per request (never per chunk) from the
finished Record, plus gauges read at scrape time."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from lectr.types import Record


class Metrics:
    """The gateway's collectors. The request path calls `inflight`,
    `stream_started` / `stream_ended` and `observe`; nothing else."""

    def __init__(self, queue_depth: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "lectr_requests",
            "Requests handled, by outcome.",
            ["org", "feature", "provider", "model", "status_class"],
            registry=self.registry,
        )
        self._inflight = Gauge("lectr_inflight_requests", "Requests in progress.", registry=self.registry)
        self._streams = Gauge("lectr_inflight_streams", "Streams in progress.", registry=self.registry)
        depth = Gauge("lectr_writer_queue_depth", "Records waiting to be written.", registry=self.registry)
        depth.set_function(lambda: float(queue_depth()))

    def inflight(self, delta: int) -> None:
        self._inflight.inc(delta)

    def stream_started(self) -> None:
        self._streams.inc()

    def stream_ended(self) -> None:
        self._streams.dec()

    def auth_rejected(self, code: str) -> None:
        """A request refused before an org was known (401s)."""

    def observe(self, record: Record, upstream_ms: float | None) -> None:
        """Account one finished request."""
        self._requests.labels(
            record.org_id,
            record.feature,
            record.provider,
            record.model_actual or "",
            f"{record.status_code // 100}xx",
        ).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
