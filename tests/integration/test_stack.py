"""The scale-out stack end to end without containers, driven through nginx with the `openai` SDK.

`DevStack` (what `make stack` runs) brings up PostgreSQL,
Redis, two gateway instances, nginx and Prometheus. Checked: records from both
instances in PostgreSQL, one shared rate limit, rule changes applied by both
within 1 s, Prometheus scraping both, and SIGTERM to one instance mid-load
losing no accepted request's record.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools.harness import Mock
from devtools.stack import DevStack
from tests.integration.test_container import client  # no SDK retries: one request each

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.prometheus,
    pytest.mark.nginx,
]

TOKEN = "stack-admin-token"
MESSAGES: list[Any] = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def stack_mock(tmp_root: Path) -> Iterator[Mock]:
    # Its own mock provider, so nothing else's traffic shares its request log.
    with Mock(tmp_root) as m:
        yield m


@pytest.fixture(scope="module")
def stack(tmp_root: Path, stack_mock: Mock) -> Iterator[DevStack]:
    env = {
        "LECTR_ADMIN_TOKEN": TOKEN,
        "LECTR_OPENAI_BASE_URL": f"{stack_mock.url}/v1",
        "LECTR_WRITER_FLUSH_INTERVAL": "0.05",
    }
    with DevStack(
        base=tmp_root / f"stack-{uuid.uuid4().hex[:6]}", instances=2, scrape_interval="1s", env=env
    ) as s:
        yield s


# -- helpers ---------------------------------------------------------------------


def admin(url: str, method: str, path: str, body: Any = None) -> httpx.Response:
    r = httpx.request(method, url + path, json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
    return r


def control_versions(stack: DevStack) -> list[int]:
    return [int(httpx.get(u + "/readyz", timeout=5).json()["control_version"]) for u in stack.gateway_urls]


def converge(stack: DevStack, seconds: float = 1.0) -> float:
    """Seconds until every instance holds the newest control-plane version;
    fails past `seconds` (the spec's bound for a change to reach every instance)."""
    start = time.monotonic()
    target = max(control_versions(stack))
    while min(control_versions(stack)) < target:
        assert time.monotonic() - start < seconds, f"instances not converged within {seconds}s"
        time.sleep(0.01)
    return time.monotonic() - start


def new_org(stack: DevStack, name: str) -> tuple[str, str, str]:
    """(id, name, key) of a fresh org, known to every instance."""
    name = f"{name}-{uuid.uuid4().hex[:6]}"
    body = admin(stack.lb_url, "POST", "/admin/orgs", {"name": name}).json()
    converge(stack)
    return str(body["org"]["id"]), name, str(body["key"])


def stored(stack: DevStack, org: str) -> int:
    with psycopg.connect(stack.database_url) as c:
        row = c.execute("SELECT count(*) FROM requests WHERE org_id = %s", (org,)).fetchone()
    return int(row[0]) if row else 0


def wait_stored(stack: DevStack, org: str, expected: int, timeout: float = 15.0) -> int:
    deadline = time.monotonic() + timeout
    n = stored(stack, org)
    while n < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        n = stored(stack, org)
    return n


def counter(url: str, metric: str, **labels: str) -> float:
    """The sum of a counter's samples on one instance's /metrics matching `labels`."""
    text = httpx.get(url + "/metrics", timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def promql(stack: DevStack, expr: str) -> list[dict[str, Any]]:
    body = httpx.get(stack.prometheus_url + "/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.2)


# -- the acceptance --------------------------------------------------------------


def test_traffic_through_nginx_reaches_both_instances_and_postgres(stack: DevStack) -> None:
    org, _, key = new_org(stack, "spread")
    sdk = client(stack.lb_url, key)
    n = 40
    for _ in range(n - 1):
        r = sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert r.choices[0].message.content
    # Streams pass through nginx chunk by chunk.
    chunks = list(sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert len(chunks) > 2 and chunks[0].choices[0].delta is not None

    # Records carry no instance id: each instance's own counter says how many
    # it served, PostgreSQL holds one record per response.
    per_instance = [counter(u, "lectr_requests_total", org=org) for u in stack.gateway_urls]
    assert all(c > 0 for c in per_instance), per_instance
    assert sum(per_instance) == n
    assert wait_stored(stack, org, n) == n

    # Prometheus scrapes both instances (file discovery from the shared config).
    def scraped() -> bool:
        up = promql(stack, 'up{job="lectr"}')
        by_instance = {
            r["metric"]["instance"]: float(r["value"][1])
            for r in promql(stack, f'sum by (instance) (lectr_requests_total{{org="{org}"}})')
        }
        return (
            len(up) == 2
            and all(r["value"][1] == "1" for r in up)
            and sorted(by_instance.values()) == sorted(per_instance)
        )

    eventually(scraped, 20, "Prometheus sees both instances' counters")
    instances = {r["metric"]["instance"] for r in promql(stack, 'up{job="lectr"}')}
    assert instances == {u.removeprefix("http://") for u in stack.gateway_urls}


def test_one_rate_limit_shared_by_both_instances(stack: DevStack) -> None:
    org, name, key = new_org(stack, "limited")
    admin(stack.lb_url, "PUT", f"/admin/orgs/{name}/limits/*", {"requests_per_min": 10})
    converge(stack)
    sdk = client(stack.lb_url, key)
    ok, limited = 0, []
    for _ in range(30):
        try:
            sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            ok += 1
        except openai.RateLimitError as e:
            limited.append((e.code, int(e.response.headers["retry-after"])))
    # Per-instance limits would have let 10 through on each instance (20).
    assert (ok, len(limited)) == (10, 20)
    assert all(code == "rate_limit_exceeded" and retry >= 1 for code, retry in limited), limited
    rejected = [counter(u, "lectr_rejections_total", org=org) for u in stack.gateway_urls]
    assert all(r > 0 for r in rejected), f"both instances enforce the shared limit: {rejected}"


def rule_changes_reach_every_instance(
    lb_url: str, gateway_urls: list[str], org: str, key: str, admin: Callable[..., httpx.Response]
) -> None:
    """Create then disable a rule through the load balancer (one instance
    takes the change, PostgreSQL tells the other); each instance forwards by
    it within 1 s. Shared by the dev-stack and the compose tests."""
    direct = [client(u, key) for u in gateway_urls]

    def models() -> list[str]:
        return [sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES).model for sdk in direct]

    def applied_within(expected: str) -> float:
        start = time.monotonic()
        while models() != [expected] * len(direct):
            assert time.monotonic() - start < 1.0, f"not every instance forwards {expected} within 1 s"
            time.sleep(0.01)
        return time.monotonic() - start

    assert models() == ["gpt-4o"] * len(direct)
    admin(lb_url, "POST", f"/admin/orgs/{org}/rules", {"name": "r", "target_model": "gpt-4o-mini"})
    assert applied_within("gpt-4o-mini") < 1.0
    admin(lb_url, "PATCH", f"/admin/orgs/{org}/rules/r", {"enabled": False})
    assert applied_within("gpt-4o") < 1.0


def test_rule_changes_reach_both_instances_within_one_second(stack: DevStack) -> None:
    _, org, key = new_org(stack, "rules")
    assert len(stack.gateway_urls) == 2
    rule_changes_reach_every_instance(stack.lb_url, stack.gateway_urls, org, key, admin)


class Load:
    """Requests through nginx from a few threads, each with its own SDK
    client; counts what the clients were answered."""

    def __init__(self, url: str, key: str, threads: int = 6) -> None:
        self.accepted = 0
        self.failed = 0
        self.errors: dict[str, int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(url, key)) for _ in range(threads)]

    def _run(self, url: str, key: str) -> None:
        # A slow provider keeps requests in flight on every instance at any moment.
        sdk = client(url, key, **{"x-mock-latency-ms": "100"})
        while not self._stop.is_set():
            try:
                sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
                ok, error = True, ""
            except openai.APIError as e:
                ok, error = False, f"{type(e).__name__}: {getattr(e, 'status_code', '')}"
            with self._lock:
                if ok:
                    self.accepted += 1
                else:
                    self.failed += 1
                    self.errors[error] = self.errors.get(error, 0) + 1

    def wait_for(self, accepted: int, timeout: float = 20.0) -> None:
        eventually(lambda: self.accepted >= accepted, timeout, f"{accepted} accepted requests")

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)


def test_sigterm_to_one_instance_mid_load_loses_no_accepted_record(stack: DevStack) -> None:
    org, _, key = new_org(stack, "durable")
    with Load(stack.lb_url, key) as load:
        load.wait_for(50)
        served_by_second = counter(stack.gateway_urls[1], "lectr_requests_total", org=org)
        assert served_by_second > 0, "the instance to stop was taking part of the load"
        eventually(
            lambda: counter(stack.gateway_urls[1], "lectr_inflight_requests") > 0, 5, "requests in flight"
        )
        # SIGTERM with requests in flight: granian finishes what it accepted,
        # the writer drains every record into PostgreSQL, exit 0.
        assert stack.stop_gateway(1) == 0
        at_stop = load.accepted
        load.wait_for(at_stop + 50)  # the other instance carries on alone
    # An accepted request is a 2xx the client got; each must have its record.
    # A failure is a request nginx could not deliver (an instance closing a
    # kept-alive connection under it): never answered, so not accepted.
    n = wait_stored(stack, org, load.accepted)
    assert load.accepted <= n <= load.accepted + load.failed, (n, load.accepted, load.errors)
