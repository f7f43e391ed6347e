"""Routing rules, evaluated in memory: the first enabled rule (ascending
priority) whose set conditions all match exactly decides the provider and/or
model; no match, or any error, leaves the request as it was. No I/O."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import msgspec

from lectr.types import Rule

log = logging.getLogger("lectr.routing")


class Route(msgspec.Struct, frozen=True):
    """Where a request goes: provider and model, and the rule that said so."""

    provider: str
    model: str | None
    rule_id: str | None = None


def _matches(r: Rule, feature: str, task: str | None, provider: str, model: str | None) -> bool:
    return (
        (r.match_feature is None or r.match_feature == feature)
        and (r.match_task is None or r.match_task == task)
        and (r.match_provider is None or r.match_provider == provider)
        and (r.match_model is None or r.match_model == model)
    )


def apply(
    rules: tuple[Rule, ...],
    feature: str,
    task: str | None,
    provider: str,
    model: str | None,
    roll: Callable[[], float] = random.random,
    serves: Callable[[str], bool] | None = None,
) -> Route:
    """The route for a request, given the org's enabled rules in priority
    order (as `control.compile_rules` keeps them). A rule with `split_percent` < 100 takes that
    share of its matches (by `roll()` in [0, 1)); the rest go on down the list.
    Routing never fails a request: any error means passthrough. With
    `serves`, a rule whose target provider cannot answer the request's
    protocol is passed over (a Messages request never goes to OpenAI)."""
    passthrough = Route(provider, model)
    try:
        for r in rules:
            if not _matches(r, feature, task, provider, model):
                continue
            if serves is not None and r.target_provider and not serves(r.target_provider):
                continue
            if r.split_percent < 100 and roll() * 100 >= r.split_percent:
                continue
            return Route(r.target_provider or provider, r.target_model or model, r.id)
    except Exception:
        log.exception("routing rule evaluation failed; passing the request through unchanged")
    return passthrough
