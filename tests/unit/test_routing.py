"""Routing rule semantics (the Rust core's plan), the failover path it
builds, and the circuit breaker, table-tested."""

from __future__ import annotations

import random

import msgspec
import pytest

from lectr import _core, errors
from lectr.config import Settings
from lectr.control import compile_rules
from lectr.control.snapshot import compile_router
from lectr.gateway import providers
from lectr.gateway.breaker import Health
from lectr.types import FallbackChain, OrgEntry, Rule, Target

CATALOG = providers.catalog(Settings())
PATHS = {"chat": ("/chat/completions", "/v1/chat/completions"), "messages": ("/messages", "/v1/messages")}


def plan(
    rules: tuple[Rule, ...],
    feature: str,
    task: str | None,
    provider: str | None,
    model: str,
    protocol: str = "chat",
    roll: float = 0.5,
    chains: tuple[FallbackChain, ...] = (),
) -> _core.Plan:
    router = compile_router([OrgEntry("o", "o")], [], {"o": rules}, chains)
    body = msgspec.json.encode({"model": model, "messages": []})
    path, client_path = PATHS[protocol]
    return router.plan(CATALOG, "o", protocol, path, client_path, feature, task, provider, body, "", roll)


class _Route(msgspec.Struct):
    provider: str
    model: str | None
    rule_id: str | None


def apply(
    rules: tuple[Rule, ...],
    feature: str,
    task: str | None,
    provider: str,
    model: str,
    protocol: str = "chat",
    roll: float | None = None,
) -> _Route:
    p = plan(rules, feature, task, provider, model, protocol, random.random() if roll is None else roll)
    return _Route(p.hops()[0].provider, p.route_model, p.rule_id)


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
    r = apply(RULES, feature, task, provider, model)
    assert (r.provider, r.model, r.rule_id) == expected


def test_wildcard_rule_matches_everything() -> None:
    rules = compile_rules([rule("all", 1, target_model="m")])
    assert apply(rules, "any", None, "openai", "x").rule_id == "all"


def test_rules_stay_within_the_protocol_family() -> None:
    rules = compile_rules(
        [
            rule("to-openai", 1, target_provider="openai", target_model="gpt-4o"),
            rule("m", 2, target_model="m2"),
        ]
    )
    # A Messages request (only Anthropic answers it) passes over the rule to OpenAI.
    r = apply(rules, "f", None, "anthropic", "claude-x", protocol="messages")
    assert (r.provider, r.model, r.rule_id) == ("anthropic", "m2", "m")
    r = apply(rules, "f", None, "anthropic", "claude-x")
    assert (r.provider, r.rule_id) == ("openai", "to-openai")


def test_split_sends_a_share_and_lets_the_rest_fall_through() -> None:
    rules = compile_rules(
        [rule("canary", 1, target_model="new", split_percent=10), rule("rest", 2, target_model="old")]
    )
    assert apply(rules, "f", None, "openai", "m", roll=0.05).model == "new"
    assert apply(rules, "f", None, "openai", "m", roll=0.10).model == "old"
    share = sum(apply(rules, "f", None, "openai", "m").model == "new" for _ in range(4000)) / 4000
    assert 0.07 < share < 0.13


def test_a_rule_to_a_provider_we_cannot_call_is_passed_over() -> None:
    rules = compile_rules([rule("nowhere", 1, target_provider="nope"), rule("m", 2, target_model="m2")])
    r = apply(rules, "f", None, "openai", "m")
    assert (r.provider, r.model, r.rule_id) == ("openai", "m2", "m")


def test_failover_path_keeps_to_the_protocol_and_skips_the_route_itself() -> None:
    chain = FallbackChain(
        org_id="o",
        targets=(
            Target("anthropic", "claude-a"),
            Target("openai", "gpt-4o"),
            Target("anthropic", "claude-b"),
        ),
        on_status=(500, 529),
    )
    p = plan((), "f", None, None, "claude-a", "messages", chains=(chain,))
    hops = p.hops()
    assert [(h.provider, h.model) for h in hops] == [("anthropic", "claude-a"), ("anthropic", "claude-b")]
    assert p.retry_on == [500, 529]
    url, _ = p.prepare(hops[0])
    assert url == "https://api.anthropic.com/v1/messages" and hops[0].auth_style == "x-api-key"
    # A hop with another model gets its own body; the route's is the client's own bytes.
    assert msgspec.json.decode(p.prepare(hops[1])[1])["model"] == "claude-b"
    cheaper = p.overridden("claude-c", "budget:*:day")
    assert (cheaper.rule_id, cheaper.hops()[0].model, cheaper.route_model) == (
        "budget:*:day",
        "claude-c",
        "claude-c",
    )


def test_a_failover_to_azure_that_keeps_the_model_addresses_its_deployment() -> None:
    org = OrgEntry("o", "o", azure_endpoint="https://r.openai.azure.com", azure_api_version="2024-10-21")
    chain = FallbackChain(org_id="o", targets=(Target("azure", ""),), on_status=(500,))
    router = compile_router([org], [], {}, [chain])
    body = msgspec.json.encode({"model": "gpt-4o-mini", "messages": []})
    p = router.plan(CATALOG, "o", "chat", *PATHS["chat"], "f", None, None, body, "", 0.5)
    hop = p.hops()[1]
    assert (hop.provider, hop.model) == ("azure", "gpt-4o-mini")
    url, up = p.prepare(hop)
    assert (
        url
        == "https://r.openai.azure.com/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21"
    )
    assert up is body


@pytest.mark.parametrize(
    ("body", "provider", "protocol", "code"),
    [
        (b"[1]", None, "chat", "invalid_request"),
        (b'{"messages": []}', None, "chat", "invalid_request"),
        (b'{"model": "gpt-4o"}', "nope", "chat", "invalid_provider"),
        (b'{"model": "gpt-4o"}', None, "messages", "unsupported_endpoint"),
    ],
)
def test_plan_refuses_what_no_provider_should_see(
    body: bytes, provider: str | None, protocol: str, code: str
) -> None:
    router = compile_router([OrgEntry("o", "o")], [], {}, [])
    path, client_path = PATHS[protocol]
    with pytest.raises(_core.Refused) as e:
        router.plan(CATALOG, "o", protocol, path, client_path, "f", None, provider, body, "", 0.5)
    assert e.value.args[0] == code
    assert isinstance(errors.refused(e.value), errors.LectrError)
    assert errors.refused(e.value).code == code


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
