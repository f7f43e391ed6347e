"""Insights as pure functions: the latency histogram and its p95, rollup
aggregation, window decomposition, the detector's statistics and the
recommendation rules (table-tested, savings checked by hand)."""

from __future__ import annotations

import itertools
import math
import random
import uuid

import msgspec
import pytest

from lectr.gateway.pricing import PriceTable
from lectr.insights import overview
from lectr.insights.anomalies import (
    MIN_RATIO_REQUESTS,
    WINDOW,
    Observed,
    anomaly_id,
    evaluate,
    excluded_windows,
    retry_delay,
)
from lectr.insights.histogram import HIST_BUCKETS, bucket_bounds, latency_bucket, percentile
from lectr.insights.recommendations import (
    MONTH,
    DowngradeMap,
    confidence,
    recommend,
    rule_for,
    traffic_cost,
)
from lectr.store.rollups import KEY_COLS, LEVELS, SUM_COLS, rollup_rows, window_pieces
from lectr.types import Record, WindowStats

PRICES = PriceTable.load()
DOWN = DowngradeMap.load()


def nearest_rank(values: list[float], q: float = 0.95) -> float:
    s = sorted(values)
    return s[math.ceil(q * len(s)) - 1]


# --- histogram --------------------------------------------------------------


def test_buckets_cover_the_line_without_gaps() -> None:
    assert latency_bucket(0) == 0 and latency_bucket(0.999) == 0 and latency_bucket(float("nan")) == 0
    assert latency_bucket(1.0) == 1 and latency_bucket(2.0) == 4 and latency_bucket(1024.0) == 31
    assert latency_bucket(1e9) == HIST_BUCKETS - 1
    for i in range(HIST_BUCKETS):
        low, high = bucket_bounds(i)
        if i:
            assert bucket_bounds(i - 1)[1] == pytest.approx(low)
        probe = low * 1.0001 if low else 0.5
        assert latency_bucket(probe) == i
        if not math.isinf(high):
            assert latency_bucket(high * 0.9999) == i
            assert high / max(low, 1) <= 2 ** (1 / 3) + 1e-9 or i == 0


@pytest.mark.parametrize("seed", range(6))
def test_p95_lies_in_the_bucket_of_the_true_p95(seed: int) -> None:
    rng = random.Random(seed)
    dist = [
        lambda: rng.lognormvariate(6, 0.8),
        lambda: rng.uniform(0, 50),
        lambda: rng.expovariate(1 / 900),
    ][seed % 3]
    values = [dist() for _ in range(rng.randint(1, 3000))]
    hist = [0] * HIST_BUCKETS
    for v in values:
        hist[latency_bucket(v)] += 1
    est = percentile(hist)
    assert est is not None
    assert latency_bucket(est) == latency_bucket(nearest_rank(values))


def test_p95_of_nothing_is_none() -> None:
    assert percentile([0] * HIST_BUCKETS) is None


# --- rollups ----------------------------------------------------------------


def rec(**kw: object) -> Record:
    base: dict[str, object] = {
        "id": uuid.uuid4().hex,
        "ts": 1_767_225_600.0,
        "org_id": "o",
        "endpoint": "/v1/chat/completions",
        "provider": "openai",
        "model_requested": "gpt-4o",
        "model_actual": "gpt-4o",
        "status_code": 200,
        "latency_ms": 100.0,
        "prompt_tokens": 100,
        "completion_tokens": 10,
        "cached_tokens": 0,
        "cost_usd": 0.00035,
    }
    base.update(kw)
    return Record(**base)  # type: ignore[arg-type]


def test_rollup_rows_sum_per_key_and_level() -> None:
    t = 1_767_225_600.0  # a UTC midnight
    records = [
        rec(ts=t + 1, latency_ms=10),
        rec(
            ts=t + 59, latency_ms=10, status_code=500, error_source="provider", error_category="server_error"
        ),
        rec(ts=t + 61, rule_id="rule_1", model_actual="gpt-4o-mini", cost_usd=None),
        rec(ts=t + 62, rule_id="budget:*:day", cached_tokens=500),  # more cached than prompt: clamped
        rec(ts=t + 63, status_code=499, error_category="client_closed", error_source="client", task="x"),
    ]
    out = rollup_rows(records)
    assert list(out) == [t for t, _ in LEVELS]
    col = {c: i for i, c in enumerate((*KEY_COLS, *SUM_COLS))}
    minute = out["rollup_minute"]
    assert [(r[col["bucket"]], r[col["requests"]]) for r in minute] == [
        (t, 2),
        (t + 60, 1),
        (t + 60, 1),
        (t + 60, 1),
    ]
    first = minute[0]
    assert first[col["errors"]] == 1 and first[col["upstream_errors"]] == 1
    assert first[col["l" + f"{latency_bucket(10):02d}"]] == 2
    by_model = {r[col["model_actual"]]: r for r in out["rollup_hour"]}
    routed = by_model["gpt-4o-mini"]
    assert routed[col["routed"]] == 1 and routed[col["priced"]] == 0 and routed[col["cost_usd"]] == 0
    day = out["rollup_day"]
    assert sum(r[col["requests"]] for r in day) == 5
    # A budget fallback's rule id is policy, not routing.
    assert sum(r[col["requests"]] for r in day if r[col["routed"]]) == 1
    assert sum(r[col["cached_tokens"]] for r in day) == 100
    assert sum(r[col["errors"]] for r in day) == 2  # 500 and the client-closed 499
    assert {r[col["task"]] for r in day} == {"", "x"}
    assert day == sorted(day)


@pytest.mark.parametrize("seed", range(20))
def test_window_pieces_tile_the_window_exactly(seed: int) -> None:
    rng = random.Random(seed)
    since = 1_767_225_600 + rng.randint(-5 * 86400, 5 * 86400) // 60 * 60
    until = (
        since + rng.choice([60, 3600, 7200, 86400, 200_000, 40 * 86400]) // 60 * 60 + rng.randint(0, 3) * 60
    )
    pieces = window_pieces(since, until)
    covered = sorted((lo, hi) for _, lo, hi in pieces)
    assert covered[0][0] == since and covered[-1][1] == until
    assert all(a[1] == b[0] for a, b in itertools.pairwise(covered))
    steps = dict(LEVELS)
    for table, lo, hi in pieces:
        assert lo % steps[table] == 0 and hi % steps[table] == 0 and lo < hi
    # Few rows: at most 2 x 59 minutes and 2 x 23 hours besides whole days.
    assert sum((hi - lo) // 60 for t, lo, hi in pieces if t == "rollup_minute") <= 118
    assert sum((hi - lo) // 3600 for t, lo, hi in pieces if t == "rollup_hour") <= 46


def test_overview_untagged_prompt_and_provider_status() -> None:
    def row(
        feature: str, provider: str, requests: int, upstream_errors: int, routed: int = 0
    ) -> tuple[object, ...]:
        sums: list[float] = [0] * len(SUM_COLS)
        sums[0], sums[2], sums[3] = requests, upstream_errors, requests
        sums[SUM_COLS.index("l30")] = requests
        return (feature, "m", "m", provider, "", routed, *sums)

    rows = [row("untagged", "openai", 30, 0), row("chat", "openai", 70, 1, 1), row("x", "groq", 10, 6)]
    ov = overview.build("o", 0, 3600, rows, untagged_threshold=0.25)
    assert ov.untagged.requests == 30 and ov.untagged.share == pytest.approx(30 / 110)
    assert ov.untagged.prompt is not None and "27%" in ov.untagged.prompt
    assert overview.build("o", 0, 3600, rows, untagged_threshold=0.3).untagged.prompt is None
    status = {p.provider: (p.status, p.success_pct) for p in ov.providers}
    assert status["openai"] == ("healthy", pytest.approx(99.0))
    assert status["groq"] == ("down", pytest.approx(40.0))
    assert ov.routed.requests == 70 and ov.totals.req_per_min == pytest.approx(110 / 60)
    assert [b.key for b in ov.by_task] == [None]


# --- detector statistics ----------------------------------------------------


def stats_of(samples: list[Observed], windows: int) -> WindowStats:
    """Baseline sums as the store computes them."""
    ok = [s for s in samples if s.requests >= MIN_RATIO_REQUESTS]
    return WindowStats(
        "o",
        "f",
        len(samples),
        sum(s.requests for s in samples),
        sum(s.requests**2 for s in samples),
        sum(s.cost for s in samples),
        sum(s.cost**2 for s in samples),
        len(ok),
        sum(s.errors / s.requests for s in ok),
        sum((s.errors / s.requests) ** 2 for s in ok),
        sum(s.p95_ms or 0 for s in ok),
        sum((s.p95_ms or 0) ** 2 for s in ok),
        sum(s.drifted / s.requests for s in ok),
        sum((s.drifted / s.requests) ** 2 for s in ok),
    )


def noisy_history(rng: random.Random, n: int = 576) -> list[Observed]:
    out = []
    for _ in range(n):
        req = max(0, round(rng.gauss(40, 6)))
        out.append(
            Observed(
                requests=req,
                errors=sum(rng.random() < 0.03 for _ in range(req)),
                cost=req * 0.002 * rng.uniform(0.9, 1.1),
                drifted=sum(rng.random() < 0.1 for _ in range(req)),
                p95_ms=rng.gauss(800, 60),
            )
        )
    return out


TYPICAL = Observed(requests=40, errors=1, cost=0.08, drifted=4, p95_ms=800.0)


@pytest.mark.parametrize(
    ("observed", "fires"),
    [
        (TYPICAL, set()),
        (Observed(requests=46, errors=2, cost=0.09, drifted=6, p95_ms=860.0), set()),  # within 2 sigma
        (Observed(requests=34, errors=0, cost=0.07, drifted=2, p95_ms=740.0), set()),
        (Observed(requests=40, errors=1, cost=0.4, drifted=4, p95_ms=800.0), {"cost_spike"}),
        (Observed(requests=40, errors=1, cost=0.08, drifted=4, p95_ms=2400.0), {"latency_degradation"}),
        (Observed(requests=40, errors=12, cost=0.08, drifted=4, p95_ms=800.0), {"error_rate_spike"}),
        (
            Observed(requests=120, errors=3, cost=0.08 * 3, drifted=12, p95_ms=800.0),
            {"traffic_high", "cost_spike"},
        ),
        (Observed(requests=5, errors=0, cost=0.01, drifted=0, p95_ms=None), {"traffic_low"}),
        (Observed(), {"traffic_low"}),
        (Observed(requests=40, errors=1, cost=0.08, drifted=30, p95_ms=800.0), {"model_drift"}),
    ],
)
def test_each_type_fires_on_its_deviation_only(observed: Observed, fires: set[str]) -> None:
    history = noisy_history(random.Random(7))
    found = evaluate(stats_of(history, len(history)), len(history), observed)
    assert {d.type for d in found} == fires
    for d in found:
        assert abs(d.deviation) > 2
        assert d.deviation == pytest.approx((d.observed - d.baseline) / d.sigma)
        assert d.severity == (
            "high" if abs(d.deviation) >= 4 else "medium" if abs(d.deviation) >= 3 else "low"
        )


def test_noise_alone_rarely_crosses_two_sigma() -> None:
    rng = random.Random(11)
    history = noisy_history(rng, 2016)
    stats = stats_of(history, len(history))
    # Fresh windows from the same process: well under the one-sided 2.3 %
    # per metric a Gaussian gives, thanks to the noise floors.
    fired = sum(bool(evaluate(stats, len(history), w)) for w in noisy_history(rng, 500))
    assert fired <= 10


def test_counts_treat_windows_without_traffic_as_zero() -> None:
    # 10 requests in every other window: mean 5 per window, not 10.
    history = [Observed(requests=10, cost=0.01) for _ in range(300)]
    found = evaluate(stats_of(history, 600), 600, Observed(requests=10, cost=0.01))
    assert found == []
    spike = evaluate(stats_of(history, 600), 600, Observed(requests=30, cost=0.03))
    assert {d.type for d in spike} == {"traffic_high", "cost_spike"}
    assert spike[0].baseline == pytest.approx(5.0)


def test_ratios_need_traffic_and_a_baseline() -> None:
    history = noisy_history(random.Random(3))
    stats = stats_of(history, len(history))
    # 9 requests, all failing: too few to call it an error-rate spike.
    assert "error_rate_spike" not in {
        d.type for d in evaluate(stats, len(history), Observed(requests=9, errors=9, cost=0.018))
    }
    # A baseline with 5 busy windows out of 576 says nothing about ratios
    # (the jump in traffic itself is news).
    few = stats_of(history[:5], len(history))
    found = evaluate(few, len(history), Observed(requests=40, errors=20, cost=0.0, drifted=40, p95_ms=1e5))
    assert {d.type for d in found} == {"traffic_high"}
    assert evaluate(None, 0, Observed(requests=100, cost=1.0)) == []


def test_flat_history_uses_the_noise_floor() -> None:
    history = [Observed(requests=20, errors=0, cost=0.02, drifted=0, p95_ms=500.0)] * 600
    stats = stats_of(history, 600)
    # 5 failures in 20 is 25 sigma above a 0 % baseline with its 1-point floor;
    # 1 failure (5 sigma) is not material.
    found = evaluate(stats, 600, Observed(requests=20, errors=5, cost=0.02, drifted=0, p95_ms=510.0))
    assert [(d.type, d.sigma, round(d.deviation)) for d in found] == [("error_rate_spike", 0.01, 25)]
    assert evaluate(stats, 600, Observed(requests=20, errors=1, cost=0.02, drifted=0, p95_ms=510.0)) == []


def test_excluded_windows_count_overlaps_once() -> None:
    w = WINDOW
    assert excluded_windows([(0, 3 * w), (2 * w, 5 * w), (10 * w, 11 * w)], w, 20 * w) == 5
    assert excluded_windows([(0, 100 * w)], 10 * w, 12 * w) == 2
    assert excluded_windows([], 0, w) == 0


def test_ids_and_retries() -> None:
    assert anomaly_id("o", "f", "cost_spike", 300) == anomaly_id("o", "f", "cost_spike", 300)
    assert anomaly_id("o", "f", "cost_spike", 300) != anomaly_id("o", "", "cost_spike", 300)
    assert [retry_delay(a) for a in (1, 2, 3, 9, 12)] == [5, 10, 20, 600, 600]


# --- recommendations --------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "prompt", "completion", "expected"),
    [
        ("classification", 200, 5, "high"),
        ("classification", 20000, 2000, "high"),  # the task type wins over sizes
        ("summarisation", 1500, 200, "high"),
        ("summarisation", 9000, 200, "medium"),  # long prompts: conservative
        ("extraction", 800, 300, "high"),
        ("extraction", 800, 1500, "medium"),  # complex output: conservative
        ("generation", 300, 50, "medium"),  # neutral: sizes decide, at most medium
        ("generation", 3000, 300, "low"),
        ("generation", 3000, 2000, None),
        (None, 300, 50, "medium"),
        (None, 6000, 350, "low"),
        (None, 20000, 50, None),
        ("reasoning", 100, 5, None),  # never, whatever the sizes say
        ("reasoning", 100000, 5000, None),
        ("translation", 100, 5, None),  # unknown task values: no recommendation
        ("Classification", 100, 5, None),  # exact values only
        ("", 100, 5, None),
    ],
)
def test_confidence_rules(task: str | None, prompt: int, completion: int, expected: str | None) -> None:
    assert confidence(task, prompt, completion)[0] == expected


T_UNTIL = 1_767_225_600 + 7 * 86400
T_SINCE = 1_767_225_600


def traffic(
    feature: str,
    model: str,
    task: str | None,
    n: int,
    prompt: int,
    completion: int,
    cached: int = 0,
    provider: str = "openai",
    actual: str | None = None,
    first: int = T_SINCE,
) -> tuple[object, ...]:
    return (feature, model, actual or model, provider, task or "", n, prompt, completion, cached, first)


def test_savings_arithmetic_by_hand() -> None:
    rows = [traffic("classify", "gpt-4o", "classification", 200, 200_000, 2_000)]
    (r,) = recommend("o", rows, T_SINCE, T_UNTIL, PRICES, DOWN)
    # gpt-4o: 200k x $2.50/M + 2k x $10/M = 0.50 + 0.02 = $0.52 for the 7 days;
    # gpt-4o-mini: 200k x $0.15/M + 2k x $0.60/M = 0.03 + 0.0012 = $0.0312.
    assert (r.model, r.target_model, r.confidence) == ("gpt-4o", "gpt-4o-mini", "high")
    assert r.current_cost_usd == pytest.approx(0.52)
    assert r.projected_cost_usd == pytest.approx(0.0312)
    assert r.window_days == pytest.approx(7.0)
    assert r.monthly_savings_usd == pytest.approx((0.52 - 0.0312) * 30 / 7)  # $2.0949
    assert r.avg_prompt_tokens == 1000 and r.avg_completion_tokens == 10


def test_cached_tokens_priced_at_the_cached_rate() -> None:
    rows = [traffic("sum", "claude-sonnet-4-5", "summarisation", 100, 100_000, 10_000, 40_000, "anthropic")]
    (r,) = recommend("o", rows, T_SINCE, T_UNTIL, PRICES, DOWN)
    # sonnet 4.5: 60k x 3 + 40k x 0.3 + 10k x 15 = 180000 + 12000 + 150000 = $0.342
    # haiku 4.5:  60k x 1 + 40k x 0.1 + 10k x 5  =  60000 +  4000 +  50000 = $0.114
    assert r.target_model == "claude-haiku-4-5"
    assert (r.current_cost_usd, r.projected_cost_usd) == (pytest.approx(0.342), pytest.approx(0.114))
    # Traffic seen only for the last 2 days is extrapolated from 2 days.
    two_days = T_UNTIL - 2 * 86400
    late = [
        traffic(
            "sum",
            "claude-sonnet-4-5",
            "summarisation",
            100,
            100_000,
            10_000,
            40_000,
            "anthropic",
            first=two_days,
        )
    ]
    (r2,) = recommend("o", late, T_SINCE, T_UNTIL, PRICES, DOWN)
    assert r2.monthly_savings_usd == pytest.approx((0.342 - 0.114) * 15)


def test_what_is_never_recommended() -> None:
    rows = [
        traffic("think", "gpt-4o", "reasoning", 5000, 500_000, 5_000),  # short, but reasoning
        traffic("odd", "gpt-4o", "translation", 5000, 500_000, 5_000),  # unknown task value
        traffic("few", "gpt-4o", "classification", 99, 9_900, 99),  # too little traffic
        traffic("cheap", "gpt-4o-mini", "classification", 500, 50_000, 500),  # nothing cheaper mapped
        traffic("priceless", "my-model", "classification", 500, 50_000, 500),  # unpriced
        traffic("az", "gpt-4o", "classification", 500, 50_000, 500, provider="azure"),  # no map for Azure
        # Already moved by a rule: the requested model is not what served it.
        traffic("moved", "gpt-4o", "classification", 500, 50_000, 500, actual="gpt-4o-mini"),
        # Untyped traffic of a feature that also reasons on this model: a
        # rule without a task condition would catch the reasoning too.
        traffic("mixed", "gpt-4o", "reasoning", 300, 30_000, 300),
        traffic("mixed", "gpt-4o", None, 300, 30_000, 300),
    ]
    assert recommend("o", rows, T_SINCE, T_UNTIL, PRICES, DOWN) == []


def test_per_task_groups_rank_by_savings_and_show_applied_rules() -> None:
    rows = [
        traffic("chat", "gpt-4.1", "classification", 400, 400_000, 4_000),
        traffic("chat", "gpt-4.1", "reasoning", 400, 4_000_000, 400_000),
        traffic("chat", "gpt-4.1", "generation", 400, 80_000, 20_000),  # 200 / 50: medium
        traffic("tags", "gemini-2.5-pro", None, 1000, 300_000, 10_000, provider="gemini"),
        # A dated snapshot maps as its base model; the rule matches it exactly.
        traffic("ext", "gpt-4o-2024-08-06", "extraction", 150, 150_000, 15_000),
    ]
    recs = recommend("o", rows, T_SINCE, T_UNTIL, PRICES, DOWN)
    got = [(r.feature, r.task, r.model, r.target_model, r.confidence) for r in recs]
    assert sorted(got) == sorted(
        [
            ("chat", "classification", "gpt-4.1", "gpt-4.1-mini", "high"),
            ("chat", "generation", "gpt-4.1", "gpt-4.1-mini", "medium"),
            ("tags", None, "gemini-2.5-pro", "gemini-2.5-flash", "medium"),
            ("ext", "extraction", "gpt-4o-2024-08-06", "gpt-4o-mini", "high"),
        ]
    )
    assert [r.monthly_savings_usd for r in recs] == sorted(
        (r.monthly_savings_usd for r in recs), reverse=True
    )
    assert len({r.id for r in recs}) == 4
    first = recs[0]
    rule = rule_for(first, "o", 30, 25)
    assert (rule.match_feature, rule.match_model, rule.match_task) == (first.feature, first.model, first.task)
    assert (rule.target_model, rule.split_percent, rule.target_provider) == (first.target_model, 25, None)
    applied = recommend(
        "o", rows, T_SINCE, T_UNTIL, PRICES, DOWN, rules=[msgspec.structs.replace(rule, id="rule_x")]
    )
    assert next(r for r in applied if r.id == first.id).applied_rule_id == "rule_x"
    assert all(r.applied_rule_id is None for r in applied if r.id != first.id)


def test_downgrade_map_targets_are_cheaper_models_of_the_same_provider() -> None:
    from lectr.gateway.providers import detect

    items = DOWN.items()
    assert {p for p, _, _ in items} >= {"openai", "anthropic", "gemini", "groq"}
    assert ("openai", "gpt-4o", ["gpt-4o-mini"]) in items
    for provider, model, targets in items:
        src = PRICES.price(model)
        assert src is not None, model
        for t in targets:
            dst = PRICES.price(t)
            assert dst is not None, t
            assert detect(t, None)[0].name == provider
            assert dst.input <= src.input and dst.output <= src.output
            assert traffic_cost(dst, 1000, 0, 100) < traffic_cost(src, 1000, 0, 100)
    assert DOWN.candidates("openai", "GPT-4o-2024-08-06") == ["gpt-4o-mini"]
    assert DOWN.candidates("anthropic", "gpt-4o") == []
    assert MONTH == 30 * 86400
