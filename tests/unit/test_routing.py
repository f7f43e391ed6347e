"""Routing rule semantics and the circuit breaker, table-tested."""

from __future__ import annotations

import pytest

from lectr.control import compile_rules
from lectr.gateway import routing
from lectr.gateway.breaker import Health
from lectr.types import Rule


def rule(name: str, priority: int, **kw: object) -> Rule:
    return Rule(id=name, org_id="o", name=name, priority=priority, **kw)  # type: ignore[arg-type]


RULES = compile_rules(
    [
        rule("chat-mini", 10, match_feature="chat", target_model="gpt-4o-mini"),
        rule("off", 5, match_feature="chat", target_model="never", enabled=False),
        rule(
            "reason-claude",
            20,
            match_task="reasoning",
            match_provider="openai",
            target_provider="anthropic",
            target_model="claude-sonnet-4",
        ),
        rule("exact-model", 30, match_model="gpt-4", target_model="gpt-4.1"),
        rule("both", 40, match_feature="search", match_task="extraction", target_provider="groq"),
    ]
)


@pytest.mark.parametrize(
    ("feature", "task", "provider", "model", "expected"),
    [
        ("chat", None, "openai", "gpt-4o", ("openai", "gpt-4o-mini", "chat-mini")),  # disabled rule skipped
        ("chat", "reasoning", "openai", "gpt-4o", ("openai", "gpt-4o-mini", "chat-mini")),  # priority wins
        ("other", "reasoning", "openai", "gpt-4o", ("anthropic", "claude-sonnet-4", "reason-claude")),
        ("other", "reasoning", "groq", "llama-3", ("groq", "llama-3", None)),  # provider condition unmet
        ("x", None, "openai", "gpt-4", ("openai", "gpt-4.1", "exact-model")),
        ("x", None, "openai", "gpt-4-turbo", ("openai", "gpt-4-turbo", None)),  # exact, not prefix
        ("search", "extraction", "openai", "gpt-4o", ("groq", "gpt-4o", "both")),  # AND of conditions
        ("search", None, "openai", "gpt-4o", ("openai", "gpt-4o", None)),
        ("Chat", None, "openai", "gpt-4o", ("openai", "gpt-4o", None)),  # exact string, no normalising
    ],
)
def test_rule_table(
    feature: str, task: str | None, provider: str, model: str, expected: tuple[str, str, str | None]
) -> None:
    r = routing.apply(RULES, feature, task, provider, model)
    assert (r.provider, r.model, r.rule_id) == expected


def test_wildcard_rule_matches_everything() -> None:
    rules = compile_rules([rule("all", 1, target_model="m")])
    assert routing.apply(rules, "any", None, "openai", "x").rule_id == "all"


def test_rules_stay_within_the_protocol_family() -> None:
    rules = compile_rules(
        [
            rule("to-openai", 1, target_provider="openai", target_model="gpt-4o"),
            rule("m", 2, target_model="m2"),
        ]
    )
    # A Messages request (only Anthropic answers it) passes over the rule to OpenAI.
    r = routing.apply(rules, "f", None, "anthropic", "claude-x", serves=lambda p: p == "anthropic")
    assert (r.provider, r.model, r.rule_id) == ("anthropic", "m2", "m")
    r = routing.apply(rules, "f", None, "anthropic", "claude-x")
    assert (r.provider, r.rule_id) == ("openai", "to-openai")


def test_split_sends_a_share_and_lets_the_rest_fall_through() -> None:
    rules = compile_rules(
        [rule("canary", 1, target_model="new", split_percent=10), rule("rest", 2, target_model="old")]
    )
    assert routing.apply(rules, "f", None, "openai", "m", roll=lambda: 0.05).model == "new"
    assert routing.apply(rules, "f", None, "openai", "m", roll=lambda: 0.10).model == "old"
    share = sum(routing.apply(rules, "f", None, "openai", "m").model == "new" for _ in range(4000)) / 4000
    assert 0.07 < share < 0.13


def test_evaluation_error_passes_through() -> None:
    def broken() -> float:
        raise RuntimeError("boom")

    rules = compile_rules([rule("split", 1, target_model="new", split_percent=50)])
    r = routing.apply(rules, "f", None, "openai", "m", roll=broken)
    assert (r.provider, r.model, r.rule_id) == ("openai", "m", None)


def test_breaker_opens_skips_half_opens_and_closes() -> None:
    now = [0.0]
    h = Health(failure_threshold=3, cooldown=10.0, clock=lambda: now[0])
    for _ in range(2):
        h.record("groq", False, 5.0)
    assert h.allow("groq") and h.breaker("groq") == "closed"
    h.record("groq", False, 5.0)
    assert h.breaker("groq") == "open" and not h.allow("groq")
    now[0] = 10.0
    assert h.breaker("groq") == "half_open"
    assert h.allow("groq")  # one trial...
    assert not h.allow("groq")  # ...at a time
    h.record("groq", False, 5.0)  # trial failed: open again for a new cool-down
    assert h.breaker("groq") == "open"
    now[0] = 20.0
    assert h.allow("groq")
    h.record("groq", True, 5.0)
    assert h.breaker("groq") == "closed" and h.allow("groq")
    (row,) = h.table()
    assert (row.provider, row.requests, row.status) == ("groq", 5, "degraded")
    assert row.success_pct == pytest.approx(20.0)
