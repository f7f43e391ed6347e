"""The policy engine: spend limits, rate limits and latency targets, checked
at admission (one counter round trip) and settled at completion.

Admission reserves what a request may at most cost: its prompt (request bytes
÷ 3, a deliberate over-estimate of tokens) plus `max_tokens` (or
`budget_default_max_tokens` when the client sets none) at the model's prices.
Completion replaces the reservation with the actual cost. A hard cap is
therefore exceeded only by requests whose completion outgrows their
reservation — requests without `max_tokens` that generate more than the
default — and by at most what those requests produce beyond it; requests
under a fallback action are rewritten to the cheaper model without a
reservation. Spend per window is seeded from the request log when an instance
starts, so a restart does not reset a budget.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any

import msgspec

from lectr.control.policy.admission import Admission, PolicyConfig, by_org, estimate_tokens, plan
from lectr.control.policy.counters import Check, Counters, LocalCounters, Settle, Verdict
from lectr.control.policy.keys import STREAM_LEASE_MS, budget_key, limit_key, window_id
from lectr.control.policy.latency import LatencySamples
from lectr.errors import BudgetExceeded, LectrError, PolicyUnavailable, RateLimited, StreamsExceeded
from lectr.gateway.pricing import PriceTable
from lectr.types import Budget, LatencyTarget, RateLimit

log = logging.getLogger("lectr.policy")

WEBHOOK_EVENT_TTL_MS = 40 * 86_400_000


class Policy:
    """Admission and settlement against the configured counters."""

    def __init__(
        self,
        prices: PriceTable,
        redis_url: str | None,
        redis_timeout: float,
        fail_open: bool,
        default_max_tokens: int,
        on_alert: Any = None,
    ) -> None:
        self._prices = prices
        self._counters: Counters
        if redis_url:
            from lectr.control.policy.redis_counters import RedisCounters

            self._counters = RedisCounters(redis_url, redis_timeout)
        else:
            self._counters = LocalCounters()
        self._shared = redis_url is not None
        self._timeout = redis_timeout
        self._fail_open = fail_open
        self._default_max = default_max_tokens
        self._on_alert = on_alert
        self._config: dict[str, PolicyConfig] = {}
        self._latency = LatencySamples()
        self.unavailable_events = 0  # counter calls that failed or timed out (/readyz, metrics)
        self.reseeds = 0  # budget counters missing at admission (lost, or a new window), seeded from the log
        self._store: Any = None
        self._warned = False
        self._seeded: set[str] = set()
        self._unsettled: collections.deque[tuple[list[Settle], str]] = collections.deque(maxlen=100_000)

    def configure(self, budgets: list[Budget], limits: list[RateLimit], targets: list[LatencyTarget]) -> None:
        """Swap in the policy of every org (called when the snapshot changes)."""
        self._config = by_org(budgets, limits, targets)

    async def seed(self, store: Any) -> None:
        """Load each budget's spend in the current window from the request
        log into counters that have none yet (cold path). The store is kept:
        admission re-seeds a counter the shared store lost."""
        self._store = store
        now = time.time()
        for cfg in self._config.values():
            for b in cfg.budgets:
                key = budget_key(b, b.scope, now)
                if key in self._seeded:
                    continue
                await self._seed_one(b, key, now)
                self._seeded.add(key)

    async def _seed_one(self, b: Budget, key: str, now: float) -> None:
        _, start, end = window_id(b.period, now)
        # Without a request log (an engine never given a store), nothing is known spent.
        store = self._store
        spent = (
            0.0 if store is None else await store.spend(b.org_id, None if b.scope == "*" else b.scope, start)
        )
        await self._guard(self._counters.seed_budget(key, spent, int((end - now + 86_400) * 1000)))

    async def _admit(
        self, checks: list[Check], member: str, now_ms: int, budgets: list[tuple[Budget, str]]
    ) -> Verdict:
        """One admission; a budget counter the counter store does not hold
        (lost in a Redis restart, or a window just begun) is seeded from the
        request log first, so a hard cap holds across the loss."""
        for _ in range(3):
            verdict: Verdict = await self._guard(self._counters.admit(checks, member, now_ms))
            if verdict.failed < 0 or verdict.retry_after_ms >= 0:
                return verdict
            key = checks[verdict.failed].key
            budget = next(b for b, k in budgets if k == key)
            self.reseeds += 1
            if self.reseeds == 1 or self.reseeds % 1000 == 0:
                log.warning("budget counter %s missing from the policy store; re-seeding from the log", key)
            try:
                await self._seed_one(budget, key, now_ms / 1000)
            except PolicyUnavailable:
                raise
            except Exception as e:
                # The request log is unreadable: as unavailable as the counters.
                self.unavailable_events += 1
                log.warning("re-seeding budget %s failed (%s)", key, type(e).__name__)
                raise PolicyUnavailable("the policy store is unavailable; try again shortly") from None
        self.unavailable_events += 1
        raise PolicyUnavailable("the policy store is unavailable; try again shortly")

    async def _guard(self, aw: Any) -> Any:
        """Run a counter call; a slow or failed counter store is reported as
        PolicyUnavailable (the caller applies fail-open / fail-closed)."""
        # The bound is the counters' own (redis_timeout): one deadline per
        # admission or settlement round trip, the client's socket timeouts for
        # the rest. A second timer here would only add cost on the request path.
        try:
            return await aw
        except LectrError:
            raise
        except Exception as e:
            self.unavailable_events += 1
            if not self._warned:
                log.warning(
                    "policy counters unavailable (%s); failing %s",
                    type(e).__name__,
                    "open" if self._fail_open else "closed",
                )
                self._warned = True
            raise PolicyUnavailable("the policy store is unavailable; try again shortly") from None

    async def admit(
        self,
        org_id: str,
        feature: str,
        model: str | None,
        body_len: int,
        max_tokens: int | None,
        streaming: bool,
        member: str,
    ) -> Admission | None:
        """Check every limit and budget that applies; None when none does.
        Raises RateLimited, StreamsExceeded, BudgetExceeded, PolicyUnavailable."""
        cfg = self._config.get(org_id)
        if cfg is None:
            return None
        now = time.time()
        now_ms = int(now * 1000)
        estimate = estimate_tokens(body_len, max_tokens, self._default_max)
        price = self._prices.cost(model, *estimate, 0)
        p = plan(cfg, org_id, feature, streaming, estimate, price, now)
        checks, settles, names, budgets = p.checks, p.settles, p.names, p.budgets
        targets = [(t, f"{org_id}:{t.scope}") for t in cfg.targets if t.scope in ("*", feature)]
        if not checks:
            return Admission(member, [], [], targets=targets)
        try:
            verdict = await self._admit(checks, member, now_ms, budgets)
        except PolicyUnavailable:
            if self._fail_open:
                return None
            raise
        if verdict.failed < 0:
            return Admission(member, settles, budgets, targets=targets)
        failed = checks[verdict.failed]
        if failed.kind in ("req", "tok"):
            raise RateLimited(f"rate limit of {names[verdict.failed]} reached", verdict.retry_after_ms)
        if failed.kind == "str":
            raise StreamsExceeded(f"limit of {names[verdict.failed]} reached", verdict.retry_after_ms)
        budget = next(b for b, k in budgets if k == failed.key)
        await self._alert(budget, "hard", failed.key, now)
        if budget.action == "fallback" and budget.fallback_model:
            # Served by the cheaper model, without a reservation against the
            # exhausted budget (nothing was taken: admission is all or nothing);
            # other limits are still enforced. Each budget gets a hold of
            # nothing instead, so the settlement that adds the cost applies once.
            rest = [c if c.kind != "bud" else Check("hold", c.key, 0.0, 0.0) for c in checks]
            try:
                verdict = await self._guard(self._counters.admit(rest, member, now_ms))
            except PolicyUnavailable:
                if self._fail_open:
                    return None
                raise
            if verdict.failed >= 0:
                raise RateLimited("rate limit reached", verdict.retry_after_ms)
            # Their cost still counts as spend: budgets settle with nothing reserved.
            return Admission(
                member,
                [s if s.kind != "bud" else msgspec.structs.replace(s, reserved=0.0) for s in settles],
                budgets,
                model_override=budget.fallback_model,
                overridden_by=budget,
                targets=targets,
            )
        spent, _ = await self._guard(self._counters.budget(failed.key))
        raise BudgetExceeded(
            f"the {budget.period}ly spend limit of ${budget.hard_usd:.2f} for "
            f"{'this org' if budget.scope == '*' else 'feature ' + repr(budget.scope)} is reached "
            f"(spent ${spent:.2f}); it resets at the start of the next UTC {budget.period}"
        )

    async def settle(self, adm: Admission, tokens: int | None, cost: float | None, latency_ms: float) -> None:
        """Replace the reservations with what the request actually used."""
        now = time.time()
        self._latency.add([key for _, key in adm.targets], now, latency_ms)
        if not adm.settles:
            return
        actual = [
            msgspec.structs.replace(
                s,
                actual=(cost or 0.0)
                if s.kind == "bud"
                else float(tokens if tokens is not None else s.reserved),
            )
            for s in adm.settles
        ]
        try:
            spent = await self._guard(self._counters.settle(actual, adm.member))
        except PolicyUnavailable:
            # A dropped settlement would hold its reservation (and stream slot)
            # until the window ends: retry it from the background instead.
            self._unsettled.append((actual, adm.member))
            return
        for (budget, key), total in zip(adm.budgets, spent, strict=False):
            if budget.soft_usd is not None and total >= budget.soft_usd:
                await self._alert(budget, "soft", key, now)
            if budget.hard_usd is not None and total >= budget.hard_usd:
                await self._alert(budget, "hard", key, now)

    async def run(self, interval: float = 0.5) -> None:
        """Retry settlements that failed while the counter store was away.
        One that did reach it (a timeout after the script ran) is not applied
        again: settlement is idempotent per member (see `counters`)."""
        delay = interval
        while True:
            await asyncio.sleep(delay)
            delay = interval
            while self._unsettled:
                settles, member = self._unsettled[0]
                try:
                    await self._guard(self._counters.settle(settles, member))
                except PolicyUnavailable:
                    delay = min(delay * 2, 10.0)
                    break
                self._unsettled.popleft()

    async def _alert(self, budget: Budget, level: str, key: str, now: float) -> None:
        """One webhook per budget, level and window, across all instances."""
        try:
            first = await self._guard(self._counters.once(f"{key}:alert:{level}", WEBHOOK_EVENT_TTL_MS))
        except PolicyUnavailable:
            return
        if first and self._on_alert is not None:
            spent, _ = await self._guard(self._counters.budget(key))
            wid, _, _ = window_id(budget.period, now)
            self._on_alert(
                {
                    "event": f"budget.{level}_cap_reached",
                    "org_id": budget.org_id,
                    "feature": budget.scope,
                    "budget": {
                        "period": budget.period,
                        "soft_usd": budget.soft_usd,
                        "hard_usd": budget.hard_usd,
                        "action": budget.action,
                    },
                    "spend_usd": round(spent, 6),
                    "window": wid,
                    "at": now,
                }
            )

    async def state(self, org_id: str) -> dict[str, Any]:
        """Current spend, remaining budget, limit usage and latency status."""
        cfg = self._config.get(org_id, PolicyConfig())
        now = time.time()
        now_ms = int(now * 1000)
        budgets = []
        for b in cfg.budgets:
            key = budget_key(b, b.scope, now)
            spent, reserved = await self._guard(self._counters.budget(key))
            wid, _, end = window_id(b.period, now)
            state = "ok"
            if b.hard_usd is not None and spent >= b.hard_usd:
                state = "hard_cap"
            elif b.soft_usd is not None and spent >= b.soft_usd:
                state = "soft_cap"
            budgets.append(
                msgspec.structs.asdict(b)
                | {
                    "window": wid,
                    "resets_at": end,
                    "spent_usd": spent,
                    "reserved_usd": reserved,
                    "remaining_usd": None if b.hard_usd is None else max(0.0, b.hard_usd - spent - reserved),
                    "state": state,
                }
            )
        limits = []
        for lim in cfg.limits:
            base = limit_key(org_id, lim.scope)
            limits.append(
                msgspec.structs.asdict(lim)
                | {
                    "requests_last_min": await self._guard(
                        self._counters.usage("req", f"{base}:req", 60_000, now_ms)
                    ),
                    "tokens_last_min": await self._guard(
                        self._counters.usage("tok", f"{base}:tok", 60_000, now_ms)
                    ),
                    "open_streams": await self._guard(
                        self._counters.usage("str", f"{base}:str", STREAM_LEASE_MS, now_ms)
                    ),
                }
            )
        return {
            "shared": self._shared,
            "budgets": budgets,
            "rate_limits": limits,
            "latency_targets": [self._latency.status(t, now) for t in cfg.targets],
        }

    async def summary(self) -> tuple[dict[str, int], dict[str, int]]:
        """Budgets per state and latency targets per state, for metrics."""
        budgets: dict[str, int] = {}
        targets: dict[str, int] = {}
        now = time.time()
        for cfg in self._config.values():
            for b in cfg.budgets:
                spent, _ = await self._guard(self._counters.budget(budget_key(b, b.scope, now)))
                if b.hard_usd is not None and spent >= b.hard_usd:
                    state = "hard_exceeded"
                elif b.soft_usd is not None and spent >= b.soft_usd:
                    state = "soft_exceeded"
                else:
                    state = "ok"
                budgets[state] = budgets.get(state, 0) + 1
            for t in cfg.targets:
                status = self._latency.status(t, now)["status"]
                targets[status] = targets.get(status, 0) + 1
        return budgets, targets

    async def close(self) -> None:
        await self._counters.close()
