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
import math
import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from lectr.control.policy.counters import Check, Counters, LocalCounters, Settle
from lectr.errors import BudgetExceeded, LectrError, PolicyUnavailable, RateLimited, StreamsExceeded
from lectr.gateway.pricing import PriceTable
from lectr.types import Budget, LatencyTarget, RateLimit

log = logging.getLogger("lectr.policy")

STREAM_LEASE_MS = 3_600_000  # an open-stream entry older than this was leaked by a dead instance
WEBHOOK_EVENT_TTL_MS = 40 * 86_400_000


def window_id(period: str, now: float) -> tuple[str, float, float]:
    """(id, start, end) of the UTC day or month containing `now`."""
    t = datetime.fromtimestamp(now, UTC)
    if period == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        end_ts = start.timestamp() + 86_400
        return start.strftime("%Y%m%d"), start.timestamp(), end_ts
    start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    nxt = start.replace(year=start.year + (start.month == 12), month=start.month % 12 + 1)
    return start.strftime("%Y%m"), start.timestamp(), nxt.timestamp()


def scope_of(feature: str, scope: str) -> str | None:
    return None if scope == "*" else feature


class Admission(msgspec.Struct):
    """What admission took, to be settled at completion."""

    member: str
    settles: list[Settle]
    budgets: list[tuple[Budget, str]]  # (budget, counter key) reserved against
    model_override: str | None = None
    overridden_by: Budget | None = None
    targets: list[tuple[LatencyTarget, str]] = msgspec.field(default_factory=list)


class PolicyConfig(msgspec.Struct, frozen=True):
    """One org's policy, from the control snapshot."""

    budgets: tuple[Budget, ...] = ()
    limits: tuple[RateLimit, ...] = ()
    targets: tuple[LatencyTarget, ...] = ()


def estimate_tokens(body_len: int, max_tokens: int | None, default_max: int) -> tuple[int, int]:
    """(prompt, completion) tokens reserved for a request."""
    return math.ceil(body_len / 3), max_tokens if max_tokens is not None else default_max


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
        self._latency: dict[str, collections.deque[tuple[float, float]]] = {}
        self.unavailable_events = 0
        self._warned = False
        self._seeded: set[str] = set()
        self._unsettled: collections.deque[tuple[list[Settle], str]] = collections.deque(maxlen=100_000)

    def configure(self, budgets: list[Budget], limits: list[RateLimit], targets: list[LatencyTarget]) -> None:
        """Swap in the policy of every org (called when the snapshot changes)."""
        cfg: dict[str, dict[str, list[Any]]] = {}
        for b in budgets:
            cfg.setdefault(b.org_id, {"b": [], "l": [], "t": []})["b"].append(b)
        for limit in limits:
            cfg.setdefault(limit.org_id, {"b": [], "l": [], "t": []})["l"].append(limit)
        for t in targets:
            cfg.setdefault(t.org_id, {"b": [], "l": [], "t": []})["t"].append(t)
        self._config = {
            org: PolicyConfig(tuple(c["b"]), tuple(c["l"]), tuple(c["t"])) for org, c in cfg.items()
        }

    @staticmethod
    def budget_key(b: Budget, feature: str, now: float) -> str:
        wid, _, _ = window_id(b.period, now)
        return f"lectr:bud:{b.org_id}:{b.period}:{wid}:{scope_of(feature, b.scope) or '*'}"

    async def seed(self, store: Any) -> None:
        """Load each budget's spend in the current window from the request
        log into counters that have none yet (cold path)."""
        now = time.time()
        for cfg in self._config.values():
            for b in cfg.budgets:
                _, start, end = window_id(b.period, now)
                key = self.budget_key(b, b.scope, now)
                if key in self._seeded:
                    continue
                if b.scope == "*":
                    spent = await store.spend(b.org_id, None, start)
                else:
                    spent = await store.spend(b.org_id, b.scope, start)
                await self._guard(self._counters.seed_budget(key, spent, int((end - now + 86_400) * 1000)))
                self._seeded.add(key)

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
        prompt_est, completion_est = estimate_tokens(body_len, max_tokens, self._default_max)
        checks: list[Check] = []
        settles: list[Settle] = []
        names: list[str] = []
        for lim in cfg.limits:
            scope = scope_of(feature, lim.scope)
            if lim.scope not in ("*", feature):
                continue
            base = f"lectr:{org_id}:{scope or '*'}"
            if lim.requests_per_min is not None:
                checks.append(Check("req", f"{base}:req", lim.requests_per_min))
                names.append(f"{lim.requests_per_min} requests/min")
            if lim.tokens_per_min is not None:
                amount = prompt_est + completion_est
                checks.append(Check("tok", f"{base}:tok", lim.tokens_per_min, amount))
                settles.append(Settle("tok", f"{base}:tok", amount))
                names.append(f"{lim.tokens_per_min} tokens/min")
            if streaming and lim.concurrent_streams is not None:
                checks.append(Check("str", f"{base}:str", lim.concurrent_streams, 1, STREAM_LEASE_MS))
                settles.append(Settle("str", f"{base}:str", 1))
                names.append(f"{lim.concurrent_streams} concurrent streams")
        budgets: list[tuple[Budget, str]] = []
        price = self._prices.cost(model, prompt_est, completion_est, 0)
        for b in cfg.budgets:
            if b.scope not in ("*", feature) or b.hard_usd is None:
                continue
            key = self.budget_key(b, feature, now)
            # Unpriced models reserve nothing: their cost is unknown (and recorded as null).
            reserve_usd = price or 0.0
            checks.append(Check("bud", key, b.hard_usd, reserve_usd))
            settles.append(Settle("bud", key, reserve_usd))
            budgets.append((b, key))
            names.append(f"budget {b.scope}/{b.period}")
        targets = [(t, f"{org_id}:{t.scope}") for t in cfg.targets if t.scope in ("*", feature)]
        if not checks:
            return Admission(member, [], [], targets=targets)
        try:
            verdict = await self._guard(self._counters.admit(checks, member, now_ms))
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
        for _, key in adm.targets:
            samples = self._latency.setdefault(key, collections.deque(maxlen=10_000))
            samples.append((now, latency_ms))
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
            key = self.budget_key(b, b.scope, now)
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
            base = f"lectr:{org_id}:{lim.scope}"
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
            "latency_targets": [self.latency_status(t, now) for t in cfg.targets],
        }

    async def summary(self) -> tuple[dict[str, int], dict[str, int]]:
        """Budgets per state and latency targets per state, for metrics."""
        budgets: dict[str, int] = {}
        targets: dict[str, int] = {}
        now = time.time()
        for cfg in self._config.values():
            for b in cfg.budgets:
                spent, _ = await self._guard(self._counters.budget(self.budget_key(b, b.scope, now)))
                if b.hard_usd is not None and spent >= b.hard_usd:
                    state = "hard_exceeded"
                elif b.soft_usd is not None and spent >= b.soft_usd:
                    state = "soft_exceeded"
                else:
                    state = "ok"
                budgets[state] = budgets.get(state, 0) + 1
            for t in cfg.targets:
                status = self.latency_status(t, now)["status"]
                targets[status] = targets.get(status, 0) + 1
        return budgets, targets

    def latency_status(self, t: LatencyTarget, now: float, window: float = 300.0) -> dict[str, Any]:
        """p95 of this instance's requests under the target over the last
        `window` seconds, and whether it is within the target."""
        samples = self._latency.get(f"{t.org_id}:{t.scope}", ())
        recent = sorted(ms for ts, ms in samples if ts >= now - window)
        p95 = recent[min(len(recent) - 1, math.ceil(0.95 * len(recent)) - 1)] if recent else None
        return msgspec.structs.asdict(t) | {
            "window_s": window,
            "samples": len(recent),
            "p95_ms": p95,
            "status": "no_data" if p95 is None else ("within" if p95 <= t.p95_ms else "over"),
        }

    async def close(self) -> None:
        await self._counters.close()
