"""The policy engine over real sockets: one rate limit shared by two instances
through a real Redis, tokens/min, concurrent streams, budgets under
concurrency (reject and fallback), webhooks, Redis dying, latency targets."""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.harness import Gateway, Mock, running
from devtools.ports import free_port
from devtools.services import RedisServer
from tests.integration.test_proxy import CHAT, PROVIDER_KEY, error_of

TOKEN = "policy-admin-token"


def api(gw: Gateway, method: str, path: str, body: Any = None) -> httpx.Response:
    r = httpx.request(
        method, gw.url + path, json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    assert r.status_code < 500, r.text
    return r


def call(gw: Gateway, key: str, body: dict[str, Any], **h: str) -> httpx.Response:
    # Sent as json.dumps bytes, so tests can compute the mock's usage from them.
    return httpx.post(
        gw.url + "/v1/chat/completions",
        content=json.dumps(body).encode(),
        timeout=60,
        headers={"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}", **h},
    )


def wait_policy(gw: Gateway, org: str, field: str, n: int = 1) -> None:
    """Until this instance's policy engine has `n` entries of `field` for the org."""
    deadline = time.monotonic() + 5
    while len(api(gw, "GET", f"/admin/orgs/{org}/policy").json()[field]) < n:
        assert time.monotonic() < deadline, f"{field} not applied"
        time.sleep(0.02)


def new_org(gw: Gateway) -> tuple[str, str]:
    name = "p-" + uuid.uuid4().hex[:8]
    key = api(gw, "POST", "/admin/orgs", {"name": name}).json()["key"]
    deadline = time.monotonic() + 5
    while call(gw, key, CHAT).status_code == 401:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # Budgets seed their spend from the request log: let the probe reach it.
    while not api(gw, "GET", f"/admin/orgs/{name}/requests?limit=1").json()["data"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return name, key


@pytest.fixture(scope="module")
def pair(tmp_root: Path, mock: Mock, redis_server: RedisServer) -> Iterator[tuple[Gateway, Gateway]]:
    """Two instances sharing one SQLite file and one Redis."""
    data = tmp_root / f"shared-{uuid.uuid4().hex[:6]}"
    env = {"LECTR_REDIS_URL": redis_server.url, "LECTR_ADMIN_TOKEN": TOKEN, "LECTR_DATA_DIR": str(data)}
    with running(tmp_root, mock, **env) as a, running(tmp_root, mock, **env) as b:
        a.start()
        b.start()
        yield a, b


def test_one_request_limit_across_two_instances(pair: tuple[Gateway, Gateway]) -> None:
    a, b = pair
    org, key = new_org(a)
    api(a, "PUT", f"/admin/orgs/{org}/limits/*", {"requests_per_min": 100})
    wait_policy(a, org, "rate_limits")
    wait_policy(b, org, "rate_limits")
    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda i: call((a, b)[i % 2], key, CHAT), range(300)))
    ok = [r for r in results if r.status_code == 200]
    limited = [r for r in results if r.status_code == 429]
    assert len(ok) == 100
    assert len(limited) == 200
    for r in limited:
        assert error_of(r)["code"] == "rate_limit_exceeded"
        assert 1 <= int(r.headers["retry-after"]) <= 60
    state = api(b, "GET", f"/admin/orgs/{org}/policy").json()
    assert state["shared"] is True and state["rate_limits"][0]["requests_last_min"] == 100


def test_tokens_per_minute_reserve_and_settle(pair: tuple[Gateway, Gateway]) -> None:
    a, b = pair
    org, key = new_org(a)
    limit = 2000
    api(a, "PUT", f"/admin/orgs/{org}/limits/*", {"tokens_per_min": limit})
    wait_policy(a, org, "rate_limits")
    wait_policy(b, org, "rate_limits")
    body = {**CHAT, "max_tokens": 100}
    raw = json.dumps(body).encode()
    reserve = math.ceil(len(raw) / 3) + 100  # the documented reservation
    actual = len(raw) // 4 + 5  # the mock's usage: prompt = bytes // 4, completion = 5 chunks
    used, expected = 0, 0
    while used + reserve <= limit:
        used += actual
        expected += 1
    codes = [call((a, b)[i % 2], key, body).status_code for i in range(expected + 5)]
    assert codes == [200] * expected + [429] * 5
    tokens = api(a, "GET", f"/admin/orgs/{org}/policy").json()["rate_limits"][0]["tokens_last_min"]
    assert tokens == expected * actual  # reservations were replaced by actual usage


def test_concurrent_streams(pair: tuple[Gateway, Gateway]) -> None:
    a, b = pair
    org, key = new_org(a)
    api(a, "PUT", f"/admin/orgs/{org}/limits/*", {"concurrent_streams": 2})
    wait_policy(b, org, "rate_limits")
    slow = {"x-mock-chunks": "30", "x-mock-interval-ms": "50"}
    opened = threading.Barrier(3)
    results: list[int] = []

    def stream(gw: Gateway) -> None:
        with httpx.stream(
            "POST",
            gw.url + "/v1/chat/completions",
            json={**CHAT, "stream": True},
            timeout=60,
            headers={"X-Lectr-Key": key, "Authorization": "Bearer sk", **slow},
        ) as r:
            results.append(r.status_code)
            opened.wait(timeout=10)
            r.read()

    threads = [threading.Thread(target=stream, args=(gw,)) for gw in (a, b)]
    for t in threads:
        t.start()
    opened.wait(timeout=10)  # both streams are open
    r = call(b, key, {**CHAT, "stream": True})
    assert r.status_code == 429 and error_of(r)["code"] == "concurrent_streams_exceeded"
    assert "retry-after" in r.headers
    assert call(a, key, CHAT).status_code == 200  # non-streamed requests are not streams
    for t in threads:
        t.join()
    assert results == [200, 200]
    assert call(a, key, {**CHAT, "stream": True}).status_code == 200  # closed streams were released


class Hooks(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        Hooks.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def hook_server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", free_port()), Hooks)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/hook"
    srv.shutdown()


@pytest.fixture(scope="module")
def budget_gw(tmp_root: Path, mock: Mock, redis_server: RedisServer, hook_server: str) -> Iterator[Gateway]:
    with running(
        tmp_root,
        mock,
        LECTR_REDIS_URL=redis_server.url,
        LECTR_ADMIN_TOKEN=TOKEN,
        LECTR_BUDGET_WEBHOOK_URL=hook_server,
        # These tests are about concurrency, not Redis failures: a generous
        # timeout, and fail-closed so a timeout on a loaded CI box surfaces
        # as a 503 instead of a silent fail-open overshoot.
        LECTR_REDIS_TIMEOUT="5",
        LECTR_POLICY_FAIL_OPEN="false",
    ) as gw:
        gw.start()
        yield gw


# gpt-4o: $2.50 / 1M input, $10 / 1M output. 6000 completion tokens ~ $0.06.
EXPENSIVE = {**CHAT, "model": "gpt-4o", "max_tokens": 6000}
SIX_K = {"x-mock-chunks": "6000"}


def test_budget_hard_cap_holds_under_concurrency(budget_gw: Gateway) -> None:
    gw = budget_gw
    org, key = new_org(gw)
    api(gw, "PUT", f"/admin/orgs/{org}/budgets/*/month", {"soft_usd": 0.5, "hard_usd": 1.0})
    wait_policy(gw, org, "budgets")
    raw = json.dumps(EXPENSIVE).encode()
    cost = ((len(raw) // 4) * 2.5 + 6000 * 10) / 1e6  # what the mock's usage costs
    assert 50 * cost > 3.0
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda _: call(gw, key, EXPENSIVE, **SIX_K), range(50)))
    ok = [r for r in results if r.status_code == 200]
    rejected = [r for r in results if r.status_code == 429]
    assert len(ok) + len(rejected) == 50
    assert all(error_of(r)["code"] == "budget_exceeded" for r in rejected)
    # Settlement follows the response: wait until no reservation is left.
    deadline = time.monotonic() + 10
    while (budget := api(gw, "GET", f"/admin/orgs/{org}/policy").json()["budgets"][0])["reserved_usd"] > 1e-9:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # Every request declared max_tokens, so the documented overshoot bound is 0.
    assert budget["spent_usd"] <= 1.0
    # Spend is every priced request of the org this month (the probe included).
    recs = gw.records(expect=51, org_id=budget["org_id"])  # the 50 and the probe
    assert budget["spent_usd"] == pytest.approx(sum(r["cost_usd"] or 0 for r in recs))
    assert [
        r["cost_usd"] for r in recs if r["status_code"] == 200 and r["model_actual"] == "gpt-4o"
    ] == pytest.approx([cost] * len(ok))
    assert len(ok) == int(1.0 // (math.ceil(len(raw) / 3) * 2.5e-6 + 6000 * 10e-6))  # filled to the cap
    assert budget["state"] == "soft_cap"
    # One webhook per crossing (soft at $0.50, hard when the cap refused), not per request.
    deadline = time.monotonic() + 10
    while len([h for h in Hooks.received if h["org_id"] == budget["org_id"]]) < 2:
        assert time.monotonic() < deadline, Hooks.received
        time.sleep(0.05)
    events = sorted(h["event"] for h in Hooks.received if h["org_id"] == budget["org_id"])
    assert events == ["budget.hard_cap_reached", "budget.soft_cap_reached"]
    assert call(gw, key, EXPENSIVE, **SIX_K).status_code == 429
    # Alerts are queued during admission, before the 429 is answered: the
    # instance's alert list is complete now, and holds no repeat.
    alerts = api(gw, "GET", f"/admin/orgs/{org}/policy").json()["alerts"]
    assert sorted(a["event"]["event"] for a in alerts) == [
        "budget.hard_cap_reached",
        "budget.soft_cap_reached",
    ]
    assert all(a["delivered"] for a in alerts)


def test_budget_fallback_serves_the_cheaper_model(budget_gw: Gateway, mock: Mock) -> None:
    gw = budget_gw
    org, key = new_org(gw)
    api(
        gw,
        "PUT",
        f"/admin/orgs/{org}/budgets/*/day",
        {"hard_usd": 0.5, "action": "fallback", "fallback_model": "gpt-4o-mini"},
    )
    wait_policy(gw, org, "budgets")
    feature = "fb-" + uuid.uuid4().hex[:6]
    with ThreadPoolExecutor(20) as pool:
        results = list(
            pool.map(lambda _: call(gw, key, EXPENSIVE, **{**SIX_K, "X-Lectr-Feature": feature}), range(20))
        )
    assert all(r.status_code == 200 for r in results)
    models = [r.json()["model"] for r in results]
    assert 0 < models.count("gpt-4o") <= 8 and models.count("gpt-4o-mini") == 20 - models.count("gpt-4o")
    recs = gw.records(expect=20, feature=feature)
    over = [r for r in recs if r["model_actual"] == "gpt-4o-mini"]
    assert over and all(r["rule_id"] == "budget:*:day" and r["model_requested"] == "gpt-4o" for r in over)
    budget = api(gw, "GET", f"/admin/orgs/{org}/policy").json()["budgets"][0]
    everything = gw.records(expect=21, org_id=budget["org_id"])  # the 20 and new_org's probe
    assert budget["spent_usd"] == pytest.approx(sum(r["cost_usd"] for r in everything))


@pytest.mark.redis
@pytest.mark.parametrize("fail_open", [True, False])
def test_redis_dying_fails_open_or_closed_without_hanging(
    tmp_root: Path, mock: Mock, fail_open: bool
) -> None:
    redis = RedisServer()
    try:
        with running(
            tmp_root,
            mock,
            LECTR_REDIS_URL=redis.url,
            LECTR_ADMIN_TOKEN=TOKEN,
            LECTR_POLICY_FAIL_OPEN=str(fail_open).lower(),
            LECTR_REDIS_TIMEOUT="0.1",
        ) as gw:
            gw.start()
            org, key = new_org(gw)
            api(gw, "PUT", f"/admin/orgs/{org}/limits/*", {"requests_per_min": 1000})
            wait_policy(gw, org, "rate_limits")
            assert call(gw, key, CHAT).status_code == 200
            redis.kill()
            for _ in range(5):
                start = time.monotonic()
                r = call(gw, key, CHAT)
                assert time.monotonic() - start < 2.0  # bounded by the Redis timeout, never a hang
                if fail_open:
                    assert r.status_code == 200
                else:
                    assert r.status_code == 503 and error_of(r)["code"] == "policy_unavailable"
    finally:
        redis.destroy()


def test_latency_targets(budget_gw: Gateway) -> None:
    gw = budget_gw
    org, key = new_org(gw)
    api(gw, "PUT", f"/admin/orgs/{org}/latency-targets/*", {"p95_ms": 60_000})
    api(gw, "PUT", f"/admin/orgs/{org}/latency-targets/slow", {"p95_ms": 0.001})
    wait_policy(gw, org, "latency_targets", 2)
    for _ in range(5):
        call(gw, key, CHAT, **{"X-Lectr-Feature": "slow"})
    targets = {t["scope"]: t for t in api(gw, "GET", f"/admin/orgs/{org}/policy").json()["latency_targets"]}
    assert targets["*"]["status"] == "within" and targets["*"]["samples"] >= 5
    assert targets["slow"]["status"] == "over" and targets["slow"]["p95_ms"] > 0.001


def test_policy_validation(budget_gw: Gateway) -> None:
    org, _ = new_org(budget_gw)
    for path, body, why in (
        ("budgets/*/week", {"hard_usd": 1}, "period"),
        ("budgets/*/day", {}, "soft_usd and/or hard_usd"),
        ("budgets/*/day", {"soft_usd": 2, "hard_usd": 1}, "soft_usd must not exceed"),
        ("budgets/*/day", {"hard_usd": 1, "action": "fallback"}, "fallback_model"),
        ("limits/*", {}, "requests_per_min"),
        ("limits/*", {"requests_per_min": 0}, "at least 1"),
        ("latency-targets/*", {"p95_ms": -1}, "positive"),
    ):
        r = api(budget_gw, "PUT", f"/admin/orgs/{org}/{path}", body)
        assert r.status_code == 400 and why in error_of(r)["message"], (path, body, r.text)
