"""The metric collectors in one process, fed Records directly."""

from __future__ import annotations

import random
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lectr.observe.labels import (
    LATENCY_BUCKETS,
    OVERHEAD_BUCKETS,
    REJECTIONS,
    TASKS,
    LabelCap,
    status_class,
    upstream_outcome,
)
from lectr.observe.metrics import Metrics
from lectr.types import Record


def record(**kw: Any) -> Record:
    base: dict[str, Any] = {
        "id": "r",
        "ts": 0.0,
        "org_id": "org_1",
        "endpoint": "/v1/chat/completions",
        "provider": "openai",
        "model_requested": "gpt-4o-mini",
        "model_actual": "gpt-4o-mini",
        "status_code": 200,
        "latency_ms": 30.0,
        "ttfb_ms": 10.0,
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "cached_tokens": 40,
        "token_source": "provider",
        "cost_usd": 0.5,
        "feature": "search",
    }
    return Record(**(base | kw))


def values(m: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body, content_type = m.render()
    assert content_type.startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
    }


def get(m: Metrics, name: str, **labels: str) -> float:
    return sum(
        v for (n, lab), v in values(m).items() if n == name and set(labels.items()) <= set(dict(lab).items())
    )


@pytest.fixture
def metrics(monkeypatch: pytest.MonkeyPatch) -> Metrics:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    return Metrics(lambda: 0)


def test_one_request_is_one_update_of_each_family(metrics: Metrics) -> None:
    metrics.observe(record(), upstream_ms=25.0)
    assert get(metrics, "lectr_requests_total", feature="search", status_class="2xx", task="none") == 1
    assert get(metrics, "lectr_request_duration_seconds_count") == 1
    assert get(metrics, "lectr_request_duration_seconds_sum") == pytest.approx(0.030)
    assert get(metrics, "lectr_time_to_first_byte_seconds_sum") == pytest.approx(0.010)
    assert get(metrics, "lectr_gateway_overhead_seconds_sum") == pytest.approx(0.005)
    assert get(metrics, "lectr_upstream_requests_total", provider="openai", outcome="success") == 1
    assert get(metrics, "lectr_tokens_total", kind="prompt") == 100
    assert get(metrics, "lectr_tokens_total", kind="completion") == 20
    assert get(metrics, "lectr_tokens_total", kind="cached") == 40
    assert get(metrics, "lectr_cost_usd_total") == 0.5
    assert get(metrics, "lectr_errors_total") == 0
    assert get(metrics, "lectr_unpriced_requests_total") == 0


def test_requests_that_never_reached_a_provider_add_no_upstream_figures(metrics: Metrics) -> None:
    metrics.observe(
        record(
            status_code=400,
            error_category="invalid_request",
            error_source="proxy",
            cost_usd=None,
            prompt_tokens=None,
            completion_tokens=None,
            cached_tokens=None,
            model_actual=None,
        ),
        upstream_ms=None,
    )
    assert get(metrics, "lectr_requests_total", model="none", status_class="4xx") == 1
    assert get(metrics, "lectr_errors_total", category="invalid_request", source="proxy") == 1
    assert get(metrics, "lectr_upstream_requests_total") == 0
    assert get(metrics, "lectr_gateway_overhead_seconds_count") == 0
    assert get(metrics, "lectr_unpriced_requests_total") == 0  # no usage: nothing to price


def test_unpriced_is_counted_not_free(metrics: Metrics) -> None:
    metrics.observe(record(model_actual="acme-1", cost_usd=None), upstream_ms=1.0)
    assert get(metrics, "lectr_unpriced_requests_total", model="acme-1") == 1
    assert get(metrics, "lectr_cost_usd_total") == 0


def test_control_plane_counters_fill_from_the_record(metrics: Metrics) -> None:
    metrics.observe(
        record(rule_id="rule_7", fallback_used="anthropic/claude-3-5-haiku", provider="anthropic"),
        upstream_ms=5.0,
    )
    metrics.observe(
        record(status_code=429, error_category="budget_exceeded", error_source="proxy", cost_usd=None),
        upstream_ms=None,
    )
    assert get(metrics, "lectr_rule_hits_total", org="org_1", rule="rule_7") == 1
    assert get(metrics, "lectr_fallbacks_total", org="org_1", provider="anthropic") == 1
    assert get(metrics, "lectr_rejections_total", reason="budget_exceeded") == 1
    # The org's other reasons exist at zero from its first request on.
    assert (
        "lectr_rejections_total",
        frozenset({("org", "org_1"), ("reason", "rate_limit_exceeded")}),
    ) in values(metrics)
    metrics.set_budget_states({"ok": 3, "hard_exceeded": 1})
    assert get(metrics, "lectr_budgets", state="ok") == 3
    assert get(metrics, "lectr_budgets", state="soft_exceeded") == 0
    assert get(metrics, "lectr_budgets", state="hard_exceeded") == 1


def test_families_without_samples_are_still_described(metrics: Metrics) -> None:
    body = metrics.render()[0].decode()
    for name in ("lectr_rule_hits_total", "lectr_fallbacks_total", "lectr_requests_total"):
        assert f"# TYPE {name} counter" in body
    assert "_created" not in body


def test_label_cap_admits_the_first_values_only() -> None:
    cap = LabelCap(2, always=("untagged",))
    assert [cap(v) for v in ("a", "b", "c", "a", "untagged", "d", "b")] == [
        "a",
        "b",
        "other",
        "a",
        "untagged",
        "other",
        "b",
    ]


def test_tasks_outside_the_known_set_are_other(metrics: Metrics) -> None:
    metrics.observe(record(task="classification"), upstream_ms=1.0)
    metrics.observe(record(task="poetry"), upstream_ms=1.0)
    assert get(metrics, "lectr_requests_total", task="classification") == 1
    assert get(metrics, "lectr_requests_total", task="other") == 1


@pytest.mark.parametrize(
    ("kw", "outcome"),
    [
        ({}, "success"),
        ({"status_code": 400, "error_category": "bad_request", "error_source": "provider"}, "client_error"),
        ({"status_code": 429, "error_category": "rate_limited", "error_source": "provider"}, "rate_limited"),
        ({"status_code": 503, "error_category": "server_error", "error_source": "provider"}, "server_error"),
        (
            {"status_code": 502, "error_category": "provider_unreachable", "error_source": "network"},
            "network_error",
        ),
        (
            {"status_code": 200, "error_category": "stream_interrupted", "error_source": "network"},
            "network_error",
        ),
        ({"status_code": 499, "error_category": "client_closed", "error_source": "client"}, "cancelled"),
    ],
)
def test_upstream_outcome(kw: dict[str, Any], outcome: str) -> None:
    assert upstream_outcome(record(**kw)) == outcome


def test_writer_counters_sync_by_difference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    counts = {"queued": 5, "written": 3, "failures": 1}
    depth = [2]
    m = Metrics(lambda: depth[0], lambda: counts)
    m.sync()
    counts = {"queued": 9, "written": 9, "failures": 1, "spilled": 4}
    depth[0] = 0
    m.sync()
    assert get(m, "lectr_writer_records_total", outcome="queued") == 9
    assert get(m, "lectr_writer_records_total", outcome="written") == 9
    assert get(m, "lectr_writer_records_total", outcome="spilled") == 4
    assert get(m, "lectr_writer_records_total", outcome="dropped") == 0
    assert get(m, "lectr_writer_failures_total") == 1
    assert get(m, "lectr_writer_queue_depth") == 0


def test_inflight_gauges(metrics: Metrics) -> None:
    metrics.inflight(1)
    metrics.stream_started()
    assert get(metrics, "lectr_inflight_requests") == 1
    assert get(metrics, "lectr_inflight_streams") == 1
    metrics.stream_ended()
    metrics.inflight(-1)
    assert get(metrics, "lectr_inflight_requests") == 0
    assert get(metrics, "lectr_inflight_streams") == 0
    metrics.auth_rejected("invalid_lectr_key")
    assert get(metrics, "lectr_auth_rejections_total", code="invalid_lectr_key") == 1
    assert get(metrics, "lectr_auth_rejections_total", code="missing_lectr_key") == 0


# --- batching: the same exposition as one collector update per request -------------


def observe_directly(m: Metrics, record: Record, upstream_ms: float | None) -> None:
    """`Metrics.observe` as it was before batching: every update straight into
    prometheus-client, per request. The reference the batched totals must match."""
    org = record.org_id
    if org not in m._orgs_seen:
        m._orgs_seen.add(org)
        for reason in REJECTIONS:
            m.f.rejections.labels(org, reason)
    feature = m._features(record.feature)
    model = m._models(record.model_actual or "none")
    provider = record.provider
    task = record.task if record.task in TASKS else ("none" if record.task is None else "other")
    requested = m._models(record.model_requested or "none")
    m.f.requests.labels(
        org, feature, task, provider, model, requested, status_class(record.status_code)
    ).inc()
    m.f.duration.labels(org, feature, provider, model).observe(record.latency_ms / 1000.0)
    if record.ttfb_ms is not None:
        m.f.ttfb.labels(org, provider, model).observe(record.ttfb_ms / 1000.0)
    if upstream_ms is not None:
        m.f.overhead.observe(max(0.0, record.latency_ms - upstream_ms) / 1000.0)
        m.f.upstream.labels(provider, upstream_outcome(record)).inc()
        m.f.upstream_duration.labels(provider).observe(upstream_ms / 1000.0)
    source = record.token_source or "none"
    for kind, n in (
        ("prompt", record.prompt_tokens),
        ("completion", record.completion_tokens),
        ("cached", record.cached_tokens),
    ):
        if n:
            m.f.tokens.labels(org, feature, provider, model, kind, source).inc(n)
    if record.cost_usd is not None:
        m.f.cost.labels(org, feature, provider, model).inc(record.cost_usd)
    elif record.prompt_tokens is not None or record.completion_tokens is not None:
        m.f.unpriced.labels(org, provider, model).inc()
    if record.error_category is not None:
        m.f.errors.labels(
            org, feature, provider, model, record.error_category, record.error_source or "none"
        ).inc()
        if record.error_category in REJECTIONS:
            m.f.rejections.labels(org, record.error_category).inc()
    if record.rule_id is not None:
        m.f.rule_hits.labels(org, record.rule_id).inc()
    if record.fallback_used is not None:
        m.f.fallbacks.labels(org, provider).inc()


def traffic(n: int, seed: int = 7) -> list[tuple[Record, float | None]]:
    """Varied records, with latencies on, just past and far past bucket bounds."""
    rng = random.Random(seed)
    bounds_ms = [b * 1000.0 for b in (*LATENCY_BUCKETS, *OVERHEAD_BUCKETS)]
    out: list[tuple[Record, float | None]] = []
    for i in range(n):
        error = rng.choice([None, None, None, *REJECTIONS, "server_error", "client_closed"])
        latency = rng.choice([*bounds_ms, 0.0, 1e-3, 123.4, 400_000.0, rng.uniform(0, 2000)])
        upstream = rng.choice([None, latency, max(0.0, latency - rng.choice(bounds_ms)), latency + 5])
        priced = rng.random() < 0.6
        usage = rng.random() < 0.8
        out.append(
            (
                record(
                    id=str(i),
                    org_id=rng.choice(["org_1", "org_2", "org_3"]),
                    provider=rng.choice(["openai", "anthropic"]),
                    model_actual=rng.choice(["gpt-4o-mini", "gpt-4.1", "claude-3-5-haiku", None]),
                    model_requested=rng.choice(["gpt-4o-mini", "gpt-4o", None]),
                    feature=rng.choice(["search", "chat", "extract", "a", "b", "untagged"]),
                    task=rng.choice([None, "classification", "poetry"]),
                    status_code=rng.choice([200, 200, 400, 429, 499, 500, 502]),
                    error_category=error,
                    error_source=rng.choice([None, "proxy", "provider", "network"]) if error else None,
                    latency_ms=latency,
                    ttfb_ms=rng.choice([None, latency / 2, rng.choice(bounds_ms)]),
                    prompt_tokens=rng.choice([0, 17, 100]) if usage else None,
                    completion_tokens=rng.choice([0, 5]) if usage else None,
                    cached_tokens=rng.choice([None, 0, 40]) if usage else None,
                    token_source=rng.choice(["provider", "estimated", None]),
                    cost_usd=rng.choice([0.0, 0.25, 1e-6]) if priced else None,
                    rule_id=rng.choice([None, "rule_1", "rule_2"]),
                    fallback_used=rng.choice([None, None, "openai/gpt-4o-mini"]),
                ),
                upstream,
            )
        )
    return out


def test_batched_totals_export_what_per_request_updates_did(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    batched, direct = Metrics(lambda: 0, label_cap=3), Metrics(lambda: 0, label_cap=3)
    reqs = traffic(600)
    for i, (rec, up) in enumerate(reqs):
        batched.observe(rec, up)
        observe_directly(direct, rec, up)
        if i % 97 == 0:
            batched.flush()  # several flushes: totals add onto what earlier ones wrote
    for code in ("invalid_lectr_key", "invalid_lectr_key", "org_disabled"):
        batched.auth_rejected(code)
        direct.f.auth_rejections.labels(code).inc()
    got, want = values(batched), values(direct)
    assert got.keys() == want.keys()
    assert {k for k, _ in got} >= {
        "lectr_requests_total",
        "lectr_request_duration_seconds_bucket",
        "lectr_time_to_first_byte_seconds_bucket",
        "lectr_gateway_overhead_seconds_bucket",
        "lectr_upstream_duration_seconds_bucket",
        "lectr_tokens_total",
        "lectr_cost_usd_total",
        "lectr_unpriced_requests_total",
        "lectr_errors_total",
        "lectr_rejections_total",
        "lectr_rule_hits_total",
        "lectr_fallbacks_total",
    }
    assert any(dict(lab).get("feature") == "other" for _, lab in got)  # the cap was reached
    for k, v in want.items():
        # Sums add in a different order: equal up to float rounding; counts exactly.
        assert got[k] == (
            pytest.approx(v, rel=1e-12, abs=1e-15) if k[0].endswith(("_sum", "usd_total")) else v
        ), k
    # Everything was applied: another flush changes nothing.
    batched.flush()
    assert values(batched) == got


def test_nothing_reaches_the_collectors_until_a_flush(metrics: Metrics) -> None:
    metrics.observe(record(), upstream_ms=25.0)
    metrics.inflight(1)
    assert [s.value for f in metrics.f.requests.collect() for s in f.samples] == []
    assert metrics.f.inflight._value.get() == 0
    metrics.flush()
    assert [s.value for f in metrics.f.requests.collect() for s in f.samples] == [1.0]
    assert metrics.f.inflight._value.get() == 1


def test_values_a_request_lacks_create_no_series(metrics: Metrics) -> None:
    metrics.observe(record(ttfb_ms=None, prompt_tokens=0, cached_tokens=None), upstream_ms=None)
    names = {(n, dict(lab).get("kind")) for n, lab in values(metrics)}
    assert ("lectr_request_duration_seconds_count", None) in names
    assert not {n for n, _ in names if n.startswith(("lectr_time_to_first_byte", "lectr_upstream_duration"))}
    assert {k for n, k in names if n == "lectr_tokens_total"} == {"completion"}
