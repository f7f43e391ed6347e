"""The background anomaly detector: each 5-minute window against a rolling 7-day baseline.

Per org and per feature, each metric against its baseline; a deviation over
2 sigma opens an anomaly, alerted once by webhook. One leader at a time (a
lease in the database); anomaly ids derive from what they describe, so a
second instance evaluating the same window cannot raise a duplicate.

Statistics. A scope's samples are its 5-minute windows (the minute rollups
summed, so late records are counted when their window is recomputed).
Counts (requests, cost) take every window of the span, a window without
traffic counting as zero; ratios (error rate, p95 latency, share of requests
whose model was changed) take only windows with at least 10 requests. Baseline
= mean, sigma = population standard deviation, each with a floor so a flat history
does not turn any wobble into an infinite deviation. Windows covered by a
dismissed anomaly of the same scope are left out of the baseline. A scope is
evaluated once it has 48 hours of history.

Materiality. On steady noise a 2-sigma excursion happens in about 2 % of
windows per metric, so six metrics per scope every 5 minutes would page all
day. An anomaly therefore also needs a change that matters (MIN_CHANGE):
traffic x1.5 or x0.5, cost x1.5, p95 x1.25, error rate +5 points with at
least 5 failures, changed-model share +15 points with at least 5 requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable

import msgspec

from lectr import _core
from lectr.gateway.upstream import Upstream
from lectr.insights.histogram import HIST_BUCKETS, percentile
from lectr.store.base import Store
from lectr.types import Anomaly, WindowStats

log = logging.getLogger("lectr.insights")

WINDOW = 300  # seconds per sample and per evaluation
GRACE = 60  # a window is evaluated this long after it closed (records still in flight)
BASELINE = 7 * 86400
MIN_HISTORY = 48 * 3600
SIGMAS = 2.0
MIN_RATIO_REQUESTS = 10  # a window's error rate, p95 or drift share needs this much traffic
MIN_RATIO_WINDOWS = 12  # and a baseline of at least this many such windows
MIN_TRAFFIC_LOW_MEAN = 5.0  # "too low" needs a baseline worth falling from
# Materiality: (factor over the baseline, points over it, events in the window).
MIN_CHANGE = {
    "traffic_high": (1.5, 0.0, 0),
    "traffic_low": (0.5, 0.0, 0),
    "cost_spike": (1.5, 0.0, 0),
    "latency_degradation": (1.25, 0.0, 0),
    "error_rate_spike": (1.0, 0.05, 5),
    "model_drift": (1.0, 0.15, 5),
}
LEASE_TTL = 60.0
ALERT_ATTEMPTS = 10
TYPES = (
    "cost_spike",
    "latency_degradation",
    "error_rate_spike",
    "traffic_high",
    "traffic_low",
    "model_drift",
)

Send = Callable[[bytes], Awaitable[bool]]


class Observed(msgspec.Struct, frozen=True):
    """One scope's figures in the window being evaluated."""

    requests: int = 0
    errors: int = 0
    cost: float = 0.0
    drifted: int = 0
    p95_ms: float | None = None


class Deviation(msgspec.Struct, frozen=True):
    type: str
    metric: str
    baseline: float
    sigma: float
    observed: float
    deviation: float
    severity: str


def severity(z: float) -> str:
    z = abs(z)
    return "high" if z >= 4 else "medium" if z >= 3 else "low"


def _mean_sd(total: float, squares: float, n: int) -> tuple[float, float]:
    mean = total / n
    return mean, math.sqrt(max(squares / n - mean * mean, 0.0))


def evaluate(
    stats: WindowStats | None, windows: int, obs: Observed, sigmas: float = SIGMAS
) -> list[Deviation]:
    """The metrics of one scope that deviate from their baseline.

    `windows` is how many 5-minute windows the baseline span holds (after
    dismissed ones are taken out); `stats` sums the samples with traffic in
    it (None: no traffic at all).
    """
    out: list[Deviation] = []

    def check(kind: str, metric: str, mean: float, sd: float, value: float, events: int = 0) -> None:
        z = (value - mean) / sd
        factor, points, least = MIN_CHANGE[kind]
        if factor < 1:
            material = value <= mean * factor
            beyond = z < -sigmas
        else:
            material = value >= mean * factor and value >= mean + points and events >= least
            beyond = z > sigmas
        if beyond and material:
            out.append(Deviation(kind, metric, mean, sd, value, z, severity(z)))

    if windows <= 0:
        return out
    s = stats or WindowStats("", "", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    mean, sd = _mean_sd(s.req, s.req_sq, windows)
    # Traffic counts are at least Poisson-noisy: sqrt(mean) is their floor.
    sd = max(sd, math.sqrt(mean), 1.0)
    if obs.requests >= MIN_RATIO_REQUESTS:
        check("traffic_high", "requests", mean, sd, obs.requests)
    if mean >= MIN_TRAFFIC_LOW_MEAN:
        check("traffic_low", "requests", mean, sd, obs.requests)
    mean, sd = _mean_sd(s.cost, s.cost_sq, windows)
    if obs.cost > 0:
        check("cost_spike", "cost_usd", mean, max(sd, 0.1 * mean, 1e-6), obs.cost)
    if obs.requests < MIN_RATIO_REQUESTS or s.n_ratio < MIN_RATIO_WINDOWS:
        return out
    mean, sd = _mean_sd(s.err, s.err_sq, s.n_ratio)
    check("error_rate_spike", "error_rate", mean, max(sd, 0.01), obs.errors / obs.requests, obs.errors)
    if obs.p95_ms is not None:
        mean, sd = _mean_sd(s.p95, s.p95_sq, s.n_ratio)
        check("latency_degradation", "p95_latency_ms", mean, max(sd, 0.05 * mean, 5.0), obs.p95_ms)
    mean, sd = _mean_sd(s.drift, s.drift_sq, s.n_ratio)
    check("model_drift", "model_changed_share", mean, max(sd, 0.02), obs.drifted / obs.requests, obs.drifted)
    return out


def excluded_windows(ranges: list[tuple[int, int]], lo: int, hi: int) -> int:
    """How many windows of [lo, hi) the (possibly overlapping) ranges cover."""
    covered: set[int] = set()
    for start, end in ranges:
        w = max(start, lo)
        while w < min(end, hi):
            covered.add(w)
            w += WINDOW
    return len(covered)


def anomaly_id(org_id: str, feature: str, kind: str, window: int) -> str:
    digest = hashlib.sha256(f"{org_id}\x00{feature}\x00{kind}\x00{window}".encode()).hexdigest()
    return "an_" + digest[:20]


def payload(a: Anomaly) -> bytes:
    """The webhook body for a new anomaly."""
    fields = msgspec.structs.asdict(a)
    for name in ("alert_state", "alert_attempts", "alerted_at"):
        fields.pop(name)
    return msgspec.json.encode({"event": "anomaly.detected", "anomaly": fields})


def webhook(upstream: Upstream, url: str) -> Send:
    """POST JSON to `url` through the gateway's HTTP client; True on 2xx."""

    async def send(body: bytes) -> bool:
        try:
            resp = await upstream.send(
                "POST", url, [("content-type", "application/json")], body, "bearer", False
            )
        except _core.UpstreamError as e:
            log.warning("anomaly webhook failed (%s)", type(e).__name__)
            return False
        if resp.status >= 300:
            log.warning("anomaly webhook answered %d", resp.status)
        return resp.status < 300

    return send


def retry_delay(attempt: int) -> float:
    """Seconds before delivery attempt `attempt + 1`: 5 s, doubling, at most 10 min."""
    return float(min(5 * 2 ** (attempt - 1), 600))


class Detector:
    """The background detector. `tick()` does one round; `run()` repeats it."""

    def __init__(
        self,
        store: Store,
        send: Send | None = None,
        clock: Callable[[], float] = time.time,
        retention_days: int = 0,
        poll: float = 15.0,
    ) -> None:
        self._store = store
        self._send = send
        self._clock = clock
        self._retention = retention_days
        self._poll = poll
        self._pruned = 0.0
        self.holder = uuid.uuid4().hex

    async def run(self) -> None:
        """Tick every `poll` seconds until cancelled (a tick with no newly
        closed window only renews the lease and retries due alerts)."""
        while True:
            try:
                await self.tick()
            except Exception as e:
                log.warning("anomaly detection failed (%s: %s); retrying", type(e).__name__, e)
            await asyncio.sleep(self._poll)

    async def tick(self, now: float | None = None) -> list[Anomaly]:
        """Evaluate the latest closed window if it is new; deliver due alerts.
        Returns the anomalies this call opened."""
        now = self._clock() if now is None else now
        leader, last = await self._store.detector_lease(self.holder, now, LEASE_TTL)
        if not leader:
            return []
        latest = int((now - GRACE) // WINDOW) * WINDOW - WINDOW
        opened: list[Anomaly] = []
        if last is None or latest > last:
            start = latest - BASELINE if last is None else max(last + WINDOW, latest - BASELINE)
            # The two windows before are recomputed too: records that arrived
            # late (writer retries, spill replays) still reach the baseline.
            await self._sample(min(start, latest - 2 * WINDOW), latest + WINDOW)
            opened = await self._evaluate(latest, now)
            await self._store.set_last_window(self.holder, latest)
        if now - self._pruned >= 3600:
            await self._store.prune_insights(now, self._retention)
            self._pruned = now
        await self.deliver(now)
        return opened

    async def _sample(self, since: int, until: int) -> None:
        rows = await self._store.rollup_windows(since, until, WINDOW)
        scopes: dict[tuple[str, str, int], list[float]] = {}
        for r in rows:
            org_id, feature, w = r[0], r[1], int(r[2])
            values = [float(x or 0) for x in r[3:]]
            scopes[(org_id, feature, w)] = values
            whole = scopes.setdefault((org_id, "", w), [0.0] * len(values))
            for i, v in enumerate(values):
                whole[i] += v
        samples = []
        for (org_id, feature, w), sums in scopes.items():
            hist = sums[4 : 4 + HIST_BUCKETS]
            samples.append(
                (org_id, feature, w, int(sums[0]), int(sums[1]), sums[2], int(sums[3]), percentile(hist))
            )
        await self._store.save_samples(sorted(samples))

    async def _evaluate(self, latest: int, now: float) -> list[Anomaly]:
        span_from = latest - BASELINE
        first = await self._store.first_seen(span_from - WINDOW)
        stats = {
            (s.org_id, s.feature): s
            for s in await self._store.baseline_sums(span_from, latest, MIN_RATIO_REQUESTS)
        }
        current = {
            (r[0], r[1]): Observed(int(r[2]), int(r[3]), float(r[4]), int(r[5]), r[6])
            for r in await self._store.samples_at(latest)
        }
        dismissed: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for org_id, feature, start, end in await self._store.dismissed_ranges(span_from):
            dismissed.setdefault((org_id, feature), []).append((start, end))
        ongoing = {
            (a.org_id, a.feature or "", a.type): a
            for a in await self._store.list_anomalies(ongoing_only=True)
        }
        opened = []
        for scope in sorted(set(stats) | set(current) | {(o, f) for o, f, _ in ongoing}):
            since = first.get(scope)
            found: dict[str, Deviation] = {}
            if since is not None and latest + WINDOW - since >= MIN_HISTORY:
                lo = max(since, span_from)
                windows = (latest - lo) // WINDOW - excluded_windows(dismissed.get(scope, []), lo, latest)
                found = {
                    d.type: d for d in evaluate(stats.get(scope), windows, current.get(scope, Observed()))
                }
            org_id, feature = scope
            for kind, d in found.items():
                prev = ongoing.get((org_id, feature, kind))
                a = Anomaly(
                    id=prev.id if prev else anomaly_id(org_id, feature, kind, latest),
                    org_id=org_id,
                    feature=feature or None,
                    type=kind,
                    metric=d.metric,
                    baseline=d.baseline,
                    sigma=d.sigma,
                    observed=d.observed,
                    deviation=d.deviation,
                    severity=d.severity,
                    window_start=prev.window_start if prev else latest,
                    window_end=latest + WINDOW,
                    detected_at=prev.detected_at if prev else now,
                    state="active",
                    ongoing=True,
                    alert_state="pending" if self._send else "none",
                )
                if prev is not None:
                    await self._store.continue_anomaly(a)
                elif await self._store.open_anomaly(a, now if self._send else None):
                    opened.append(a)
                    log.warning(
                        "anomaly %s: %s for %s (%s %.4g vs baseline %.4g, %.1f sigma)",
                        a.id, kind, feature or "the org", d.metric, d.observed, d.baseline, d.deviation,
                    )  # fmt: skip
            for (o, f, kind), prev in ongoing.items():
                if (o, f) == scope and kind not in found:
                    await self._store.end_anomaly(prev.id, now)
        return opened

    async def deliver(self, now: float | None = None) -> int:
        """Send due alerts (each claimed first, so one instance sends it);
        a failure is retried with backoff, up to ALERT_ATTEMPTS times."""
        if self._send is None:
            return 0
        now = self._clock() if now is None else now
        sent = 0
        for _ in range(20):
            a = await self._store.claim_alert(now, now + 60.0)
            if a is None:
                break
            if await self._send(payload(a)):
                await self._store.alert_done(a.id, "sent", now)
                sent += 1
            elif a.alert_attempts >= ALERT_ATTEMPTS:
                log.error("anomaly %s: webhook undelivered after %d attempts", a.id, a.alert_attempts)
                await self._store.alert_done(a.id, "failed", now)
            else:
                await self._store.alert_retry(a.id, now + retry_delay(a.alert_attempts))
        return sent
