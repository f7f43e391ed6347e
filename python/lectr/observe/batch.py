"""The request path's metric totals between flushes: one shape per label
combination, histograms as per-bucket counts, applied to prometheus-client
in bulk."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Histogram

from lectr.observe.labels import LATENCY_BUCKETS, OVERHEAD_BUCKETS

# What decides a finished request's label sets (and which families it
# touches): org feature task provider model model_requested status_code
# error_category error_source token_source rule_id fallback? upstream? pricing.
ShapeKey = tuple[
    str, str, str, str, str, str, int, str | None, str | None, str | None, str | None, bool, bool, int
]


def buckets(bounds: tuple[float, ...]) -> list[float]:
    """Per-bucket counts for `bounds` and +Inf (not cumulative), then the sum."""
    return [0] * (len(bounds) + 1) + [0.0]


class Shape:
    """The totals of the requests since the last flush that share one key."""

    __slots__ = ("cached", "completion", "cost", "duration", "n", "overhead", "prompt", "ttfb", "upstream")

    def __init__(self) -> None:
        self.n = 0
        self.duration = buckets(LATENCY_BUCKETS)
        self.ttfb = buckets(LATENCY_BUCKETS)
        self.overhead = buckets(OVERHEAD_BUCKETS)
        self.upstream = buckets(LATENCY_BUCKETS)
        self.prompt = 0
        self.completion = 0
        self.cached = 0
        self.cost = 0.0


def check_histograms(layout: Iterable[tuple[Histogram, tuple[float, ...]]], unlabelled: Histogram) -> None:
    # `add_observations` writes prometheus-client's per-bucket values
    # directly (it has no public bulk observe): fail at start, not with wrong
    # figures, if a release lays them out differently. (A labelled family's
    # children are checked through the unlabelled one: creating a child
    # here would export a bogus series.)
    ok = all(getattr(h, "_upper_bounds", None) == [*bounds, float("inf")] for h, bounds in layout)
    ok = ok and len(getattr(unlabelled, "_buckets", ())) == len(unlabelled._upper_bounds)
    if not (ok and callable(getattr(getattr(unlabelled, "_sum", None), "inc", None))):
        raise RuntimeError("unsupported prometheus_client version: Histogram internals changed")


def add_observations(child: Histogram, counts: list[float]) -> None:
    """Exactly what `child.observe(v)` for each batched value would have
    written: observe adds 1 to the first bucket whose bound is >= v (counts
    are stored per bucket, made cumulative at collection) and v to the sum."""
    buckets = child._buckets
    for i, c in enumerate(counts[:-1]):
        if c:
            buckets[i].inc(c)
    child._sum.inc(counts[-1])


def merge(into: list[float], counts: list[float]) -> None:
    for i, c in enumerate(counts):
        into[i] += c
