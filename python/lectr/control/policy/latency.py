"""Latency targets: this instance's recent request latencies per target, and their p95 against it."""

from __future__ import annotations

import collections
import math
from typing import Any

import msgspec

from lectr.types import LatencyTarget


class LatencySamples:
    """(time, latency) of the requests under each target, the latest 10 000."""

    def __init__(self) -> None:
        self._samples: dict[str, collections.deque[tuple[float, float]]] = {}

    def add(self, keys: list[str], now: float, latency_ms: float) -> None:
        for key in keys:
            samples = self._samples.setdefault(key, collections.deque(maxlen=10_000))
            samples.append((now, latency_ms))

    def status(self, t: LatencyTarget, now: float, window: float = 300.0) -> dict[str, Any]:
        """p95 of this instance's requests under the target over the last
        `window` seconds, and whether it is within the target."""
        samples = self._samples.get(f"{t.org_id}:{t.scope}", ())
        recent = sorted(ms for ts, ms in samples if ts >= now - window)
        p95 = recent[min(len(recent) - 1, math.ceil(0.95 * len(recent)) - 1)] if recent else None
        return msgspec.structs.asdict(t) | {
            "window_s": window,
            "samples": len(recent),
            "p95_ms": p95,
            "status": "no_data" if p95 is None else ("within" if p95 <= t.p95_ms else "over"),
        }
