"""Per-provider health from live traffic (this instance): a sliding window of
outcomes and latencies, and a circuit breaker that skips a failing provider
for a cool-down, then lets one trial request through (half-open)."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

import msgspec

WINDOW = 200  # outcomes kept per provider


class ProviderHealth(msgspec.Struct):
    """What the admin API shows for one provider."""

    provider: str
    requests: int
    avg_latency_ms: float | None
    success_pct: float | None
    status: str  # healthy, degraded, down
    breaker: str  # closed, open, half_open


class _State:
    __slots__ = ("failures_in_row", "half_open_trial", "opened_at", "outcomes", "total")

    def __init__(self) -> None:
        self.outcomes: collections.deque[tuple[bool, float]] = collections.deque(maxlen=WINDOW)
        self.failures_in_row = 0
        self.opened_at: float | None = None
        self.half_open_trial = False
        self.total = 0


class Health:
    """Health table and circuit breakers for every provider seen."""

    def __init__(
        self, failure_threshold: int = 5, cooldown: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = failure_threshold
        self._cooldown = cooldown
        self._clock = clock
        self._states: dict[str, _State] = {}

    def _state(self, provider: str) -> _State:
        s = self._states.get(provider)
        if s is None:
            s = self._states[provider] = _State()
        return s

    def breaker(self, provider: str) -> str:
        s = self._states.get(provider)
        if s is None or s.opened_at is None:
            return "closed"
        if self._clock() - s.opened_at >= self._cooldown:
            return "half_open"
        return "open"

    def allow(self, provider: str) -> bool:
        """Whether to send to `provider` now. While open: no. After the
        cool-down: one trial at a time (half-open)."""
        state = self.breaker(provider)
        if state == "closed":
            return True
        if state == "open":
            return False
        s = self._state(provider)
        if s.half_open_trial:
            return False
        s.half_open_trial = True
        return True

    def record(self, provider: str, ok: bool, latency_ms: float) -> None:
        """One finished attempt. Success closes the breaker; a run of
        failures (or a failed half-open trial) opens it."""
        s = self._state(provider)
        s.outcomes.append((ok, latency_ms))
        s.total += 1
        was_trial = s.half_open_trial
        s.half_open_trial = False
        if ok:
            s.failures_in_row = 0
            s.opened_at = None
            return
        s.failures_in_row += 1
        if was_trial or s.failures_in_row >= self._threshold:
            s.opened_at = self._clock()

    def table(self) -> list[ProviderHealth]:
        out = []
        for name, s in sorted(self._states.items()):
            n = len(s.outcomes)
            ok = sum(1 for good, _ in s.outcomes if good)
            pct = 100.0 * ok / n if n else None
            breaker = self.breaker(name)
            if breaker != "closed":
                status = "down"
            elif pct is not None and pct < 95.0:
                status = "degraded"
            else:
                status = "healthy"
            out.append(
                ProviderHealth(
                    provider=name,
                    requests=s.total,
                    avg_latency_ms=sum(lat for _, lat in s.outcomes) / n if n else None,
                    success_pct=pct,
                    status=status,
                    breaker=breaker,
                )
            )
        return out
