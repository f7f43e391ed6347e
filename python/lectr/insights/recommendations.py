"""Model recommendations: cheaper models per feature, model and task (pure functions).

A cheaper model of the same provider (from the downgrade map, shipped as
data) when quality is unlikely to change, with a confidence and the monthly
savings the observed traffic would have made at list prices.

Confidence. The task type decides when it is set: classification → high;
summarisation → high, medium when prompts are long; extraction → high,
medium when outputs are long (complex structures); reasoning → never, whatever
else the traffic says; a value outside the five → no recommendation.
Generation and untyped traffic rely on token sizes alone: short outputs from
moderate prompts → medium, somewhat longer → low, anything else → none.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from lectr.gateway.pricing import Price, PriceTable
from lectr.types import Rule

TASKS = ("classification", "summarisation", "extraction", "generation", "reasoning")
LONG_PROMPT = 4000  # tokens: summarising more than this is done conservatively
LONG_OUTPUT = 800  # tokens: extraction output this long is complex
SHORT_OUTPUT = 100  # heuristics: classification-like answers
SHORT_PROMPT = 4000
MODERATE_OUTPUT = 400
MODERATE_PROMPT = 8000
MIN_REQUESTS = 100  # per feature, model and task over the lookback
MONTH = 30 * 86400
_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


class _MapFile(msgspec.Struct):
    providers: dict[str, dict[str, list[str]]]


class DowngradeMap:
    """Per provider: model → cheaper models of the same provider, closest first."""

    def __init__(self, providers: dict[str, dict[str, list[str]]]) -> None:
        self._map = {p: {m.lower(): c for m, c in models.items()} for p, models in providers.items()}

    @classmethod
    def load(cls, override_file: str | None = None) -> DowngradeMap:
        """The shipped map; an override file (same shape) replaces whole providers' entries per model."""
        shipped = resources.files("lectr").joinpath("data/downgrades.json").read_bytes()
        providers = msgspec.json.decode(shipped, type=_MapFile).providers
        if override_file:
            try:
                extra = msgspec.json.decode(Path(override_file).read_bytes(), type=_MapFile).providers
            except (OSError, msgspec.ValidationError, msgspec.DecodeError) as e:
                raise ValueError(f"downgrades file {override_file!r} is invalid: {e}") from None
            for provider, models in extra.items():
                providers.setdefault(provider, {}).update(models)
        return cls(providers)

    def candidates(self, provider: str, model: str) -> list[str]:
        models = self._map.get(provider, {})
        name = model.lower()
        return models.get(name) or models.get(_SUFFIX.sub("", name)) or []

    def items(self) -> list[tuple[str, str, list[str]]]:
        return [(p, m, c) for p, models in self._map.items() for m, c in models.items()]


class Recommendation(msgspec.Struct, kw_only=True):
    """Serve `target_model` instead of `model` for this feature (and task)."""

    id: str
    feature: str
    model: str
    provider: str
    task: str | None  # None: traffic without a task type
    target_model: str
    confidence: str  # high, medium, low
    reason: str
    requests: int
    avg_prompt_tokens: float
    avg_completion_tokens: float
    window_days: float
    current_cost_usd: float  # the window's traffic at list prices
    projected_cost_usd: float  # the same tokens on target_model
    monthly_savings_usd: float
    applied_rule_id: str | None = None


def confidence(task: str | None, avg_prompt: float, avg_completion: float) -> tuple[str | None, str]:
    """(confidence or None, why) for downgrading traffic of this shape."""
    if task == "reasoning":
        return None, "reasoning is never downgraded"
    if task is not None and task not in TASKS:
        return None, f"task {task!r} is not a known task type"
    if task == "classification":
        return "high", "classification: smaller models classify about as well"
    if task == "summarisation":
        if avg_prompt > LONG_PROMPT:
            return "medium", "summarisation of long prompts"
        return "high", "summarisation of short prompts"
    if task == "extraction":
        if avg_completion > LONG_OUTPUT:
            return "medium", "extraction with long (complex) outputs"
        return "high", "extraction with short outputs"
    # Generation is neutral: like untyped traffic, only sizes speak, and
    # never with more than medium confidence.
    what = "generation" if task == "generation" else "no task type"
    if avg_completion <= SHORT_OUTPUT and avg_prompt <= SHORT_PROMPT:
        return "medium", f"{what}; short outputs from moderate prompts"
    if avg_completion <= MODERATE_OUTPUT and avg_prompt <= MODERATE_PROMPT:
        return "low", f"{what}; moderate prompt and output sizes"
    return None, f"{what}; long prompts or outputs"


def traffic_cost(price: Price, prompt: float, cached: float, completion: float) -> float:
    """USD of token sums at a model's list price (cached tokens at the cached rate)."""
    cached_rate = price.cached_input if price.cached_input is not None else price.input
    return ((prompt - cached) * price.input + cached * cached_rate + completion * price.output) / 1_000_000


def recommendation_id(org_id: str, feature: str, model: str, provider: str, task: str | None) -> str:
    key = "\x00".join((org_id, feature, model, provider, task or ""))
    return "rec_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def recommend(
    org_id: str,
    rows: Sequence[Sequence[Any]],
    since: int,
    until: int,
    prices: PriceTable,
    downgrades: DowngradeMap,
    rules: Sequence[Rule] = (),
    min_requests: int = MIN_REQUESTS,
) -> list[Recommendation]:
    """Recommendations from traffic rows (as `Store.traffic` returns them:
    feature, model requested, model actual, provider, task, requests, prompt,
    completion and cached tokens, first hour), best savings first."""
    groups: dict[tuple[str, str, str, str | None], list[float]] = {}
    reasoning: set[tuple[str, str]] = set()
    for feature, requested, actual, provider, task, n, prompt, completion, cached, first in rows:
        if task == "reasoning":
            reasoning.add((feature, requested))
        # Traffic a rule or fallback already moved is not this model's.
        if not requested or requested != actual:
            continue
        g = groups.setdefault((feature, requested, provider, task or None), [0, 0, 0, 0, first])
        g[0] += n or 0
        g[1] += prompt or 0
        g[2] += completion or 0
        g[3] += cached or 0
        g[4] = min(g[4], first)
    out = []
    for (feature, model, provider, task), (n, prompt, completion, cached, first) in groups.items():
        if n < min_requests:
            continue
        level, reason = confidence(task, prompt / n, completion / n)
        if level is None:
            continue
        if task is None and (feature, model) in reasoning:
            # A rule without a task condition would also move the feature's
            # reasoning traffic on this model, which is never downgraded.
            continue
        current = prices.price(model)
        if current is None:
            continue
        now_cost = traffic_cost(current, prompt, cached, completion)
        for target in downgrades.candidates(provider, model):
            p = prices.price(target)
            if p is not None and traffic_cost(p, prompt, cached, completion) < now_cost:
                break
        else:
            continue
        new_cost = traffic_cost(p, prompt, cached, completion)
        # Extrapolated from at least a day, so a new feature's first hour is not a month.
        span = max(until - max(since, int(first)), 86400)
        applied = next(
            (
                r.id
                for r in rules
                if (r.match_feature, r.match_model, r.match_task, r.target_model)
                == (feature, model, task, target)
            ),
            None,
        )
        out.append(
            Recommendation(
                id=recommendation_id(org_id, feature, model, provider, task),
                feature=feature,
                model=model,
                provider=provider,
                task=task,
                target_model=target,
                confidence=level,
                reason=reason,
                requests=int(n),
                avg_prompt_tokens=prompt / n,
                avg_completion_tokens=completion / n,
                window_days=span / 86400,
                current_cost_usd=now_cost,
                projected_cost_usd=new_cost,
                monthly_savings_usd=(now_cost - new_cost) * MONTH / span,
                applied_rule_id=applied,
            )
        )
    out.sort(key=lambda r: (-r.monthly_savings_usd, r.id))
    return out


def rule_for(rec: Recommendation, org_id: str, priority: int, split_percent: int = 100) -> Rule:
    """The routing rule that applies a recommendation."""
    name = f"{rec.id} {rec.feature[:40]}: {rec.model} -> {rec.target_model}"[:100]
    return Rule(
        id="",
        org_id=org_id,
        name=name,
        priority=priority,
        match_feature=rec.feature,
        match_model=rec.model,
        match_task=rec.task,
        target_model=rec.target_model,
        split_percent=split_percent,
    )
