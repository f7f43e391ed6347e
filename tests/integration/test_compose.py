"""deploy/compose.yaml for real (+ compose.local.yaml): nginx, 2 gateways, PostgreSQL, Redis, Prometheus.

The compose engine is Debian's docker-compose (v1), or `docker compose` when
that plugin exists. Every service uses host networking on free loopback
ports; nginx, PostgreSQL, Redis and Prometheus are Debian's packages in a
local base image (no registry is reachable), Grafana is left out (profile).
Checked: requests through nginx, records from both instances in PostgreSQL,
a rule change seen by both within 1 s, Prometheus scraping both, and `down`
under load losing no answered request's record. Metrics are scraped from
the gateways directly, never through nginx (which may close /metrics).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools.harness import ROOT, Mock
from devtools.ports import free_port
from tests.docker_engine import DOCKER, Engine, install_missing
from tests.integration.test_container import MESSAGES, Load, client
from tests.integration.test_stack import rule_changes_reach_every_instance

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(1800)]

TOKEN = "compose-admin-token"
DEPLOY = ROOT / "deploy"


def compose_command() -> list[str]:
    if subprocess.run([DOCKER, "compose", "version"], capture_output=True).returncode == 0:
        return [DOCKER, "compose"]
    return ["docker-compose"]


class Stack:
    """One compose project of deploy/compose.yaml + deploy/compose.local.yaml on free ports."""

    def __init__(self, tmp: Path, image: str, mock: Mock) -> None:
        self.project = f"lectrtest{uuid.uuid4().hex[:6]}"
        ports = {
            k: free_port()
            for k in ("GATEWAY_PORT", "GATEWAY_1_PORT", "GATEWAY_2_PORT", "POSTGRES_PORT", "REDIS_PORT")
        }
        ports["PROMETHEUS_PORT"] = free_port()
        targets = tmp / f"{self.project}-targets"
        targets.mkdir()
        (targets / "gateways.json").write_text(
            json.dumps(
                [
                    {
                        "targets": [
                            f"127.0.0.1:{ports['GATEWAY_1_PORT']}",
                            f"127.0.0.1:{ports['GATEWAY_2_PORT']}",
                        ],
                        "labels": {"stack": "compose-test"},
                    }
                ]
            )
        )
        targets.chmod(0o755)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("LECTR_", "COMPOSE_"))},
            **{k: str(v) for k, v in ports.items()},
            "PROMETHEUS_TARGETS": str(targets),
            "LECTR_IMAGE": image,
            "LECTR_ADMIN_TOKEN": TOKEN,
            "LECTR_OPENAI_BASE_URL": f"{mock.url}/v1",
        }
        self.lb_url = f"http://127.0.0.1:{ports['GATEWAY_PORT']}"
        self.gateway_urls = [f"http://127.0.0.1:{ports[k]}" for k in ("GATEWAY_1_PORT", "GATEWAY_2_PORT")]
        self.prometheus_url = f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}"
        self.database_url = f"postgresql://lectr:lectr@127.0.0.1:{ports['POSTGRES_PORT']}/lectr"

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        cmd = [
            *compose_command(),
            "-p",
            self.project,
            "-f",
            str(DEPLOY / "compose.yaml"),
            "-f",
            str(DEPLOY / "compose.local.yaml"),
            *args,
        ]
        r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            logs = subprocess.run(
                [*cmd[: cmd.index(args[0])], "logs", "--no-color", "--tail", "40"],
                env=self.env,
                capture_output=True,
                text=True,
            )
            raise RuntimeError(f"{' '.join(args)} failed:\n{r.stdout}{r.stderr}\n{logs.stdout[-6000:]}")
        return r

    def up(self) -> float:
        start = time.monotonic()
        # No --build: compose v1 cannot pass the CA secret; the image is built already.
        self.compose("up", "-d", "--no-build")
        # `up` returns once nginx's container has started, not once nginx
        # listens: wait until a request through it reaches an instance.
        deadline = time.monotonic() + 60
        while not self._lb_answers():
            if time.monotonic() > deadline:
                state = self.compose("ps").stdout + self.compose("logs", "--no-color", "--tail", "60").stdout
                raise RuntimeError(f"nginx at {self.lb_url} does not answer /healthz:\n{state[-8000:]}")
            time.sleep(0.2)
        return time.monotonic() - start

    def _lb_answers(self) -> bool:
        try:
            return httpx.get(self.lb_url + "/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False


@pytest.fixture(scope="module")
def stack_mock(tmp_root: Path) -> Iterator[Mock]:
    m = Mock(tmp_root)
    yield m
    m.proc.terminate()
    m.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def stack(engine: Engine, image: str, tmp_root: Path, stack_mock: Mock) -> Iterator[Stack]:
    subprocess.run(
        [str(DEPLOY / "local-bases.sh"), "services"], check=True, env={**os.environ, "DOCKER": DOCKER}
    )
    s = Stack(tmp_root, image, stack_mock)
    try:
        seconds = s.up()
        print(f"\ncompose up (to nginx started, gateways healthy): {seconds:.1f} s")
        yield s
    finally:
        s.compose("down", "-v", "--timeout", "40")


def test_the_compose_engine_here_accepts_the_files() -> None:
    # Debian's docker-compose 1.29 rejected compose.yaml's top-level `name:`;
    # `config` parses and merges without a daemon.
    install_missing()
    for files in (["compose.yaml"], ["compose.yaml", "compose.local.yaml"]):
        args = [a for f in files for a in ("-f", str(DEPLOY / f))]
        r = subprocess.run([*compose_command(), *args, "config", "-q"], capture_output=True, text=True)
        assert r.returncode == 0, f"{files}: {r.stdout}{r.stderr}"


def admin(url: str, method: str, path: str, body: Any = None) -> httpx.Response:
    r = httpx.request(method, url + path, json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
    return r


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.1)


def control_versions(stack: Stack) -> list[int]:
    return [int(httpx.get(u + "/readyz", timeout=5).json()["control_version"]) for u in stack.gateway_urls]


def new_org(stack: Stack) -> tuple[str, str, str]:
    name = f"org-{uuid.uuid4().hex[:6]}"
    body = admin(stack.lb_url, "POST", "/admin/orgs", {"name": name}).json()
    target = max(control_versions(stack))
    eventually(lambda: min(control_versions(stack)) >= target, 5, "both instances know the org")
    return str(body["org"]["id"]), name, str(body["key"])


def stored(stack: Stack, org: str) -> int:
    with psycopg.connect(stack.database_url, connect_timeout=5) as c:
        row = c.execute("SELECT count(*) FROM requests WHERE org_id = %s", (org,)).fetchone()
    return int(row[0]) if row else 0


def counter(url: str, metric: str, **labels: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_requests_through_nginx_reach_both_instances_postgres_and_prometheus(stack: Stack) -> None:
    org, _, key = new_org(stack)
    sdk = client(stack.lb_url, key)
    n = 20
    for _ in range(n - 1):
        assert sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices[0].message.content
    chunks = list(sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert len(chunks) > 2
    # Each instance's own counter (read directly, not through nginx) says it served some.
    per_instance = [counter(u, "lectr_requests_total", org=org) for u in stack.gateway_urls]
    assert all(c > 0 for c in per_instance) and sum(per_instance) == n, per_instance
    eventually(lambda: stored(stack, org) >= n, 15, f"{n} records in PostgreSQL")
    assert stored(stack, org) == n

    def scraped() -> bool:
        body = httpx.get(
            stack.prometheus_url + "/api/v1/query",
            params={"query": f'sum by (instance) (lectr_requests_total{{org="{org}"}})'},
            timeout=10,
        ).json()
        values = sorted(float(r["value"][1]) for r in body["data"]["result"])
        return values == sorted(per_instance)

    # Debian's Prometheus with the shared config (15 s scrape interval).
    eventually(scraped, 60, "Prometheus holds both instances' counters")


def test_a_rule_change_reaches_both_instances_within_one_second(stack: Stack) -> None:
    _, org, key = new_org(stack)
    assert len(stack.gateway_urls) == 2
    rule_changes_reach_every_instance(stack.lb_url, stack.gateway_urls, org, key, admin)


def test_down_under_load_loses_no_answered_request(stack: Stack) -> None:
    org, _, key = new_org(stack)
    with Load(stack.lb_url, key) as load:
        load.wait_for(60)
        # compose stops nginx first, then the gateways (SIGTERM: drain into
        # PostgreSQL), then PostgreSQL and Redis; the volumes stay.
        stack.compose("down", "--timeout", "40")
    # PostgreSQL again on the same volume: every answered request is there.
    stack.compose("up", "-d", "--no-build", "postgres")
    eventually(lambda: _reachable(stack), 60, "PostgreSQL back")
    n = stored(stack, org)
    assert load.accepted <= n <= load.accepted + load.failed, (n, load.accepted, load.failed)
    assert load.accepted >= 60


def _reachable(stack: Stack) -> bool:
    try:
        stored(stack, "-")
        return True
    except psycopg.OperationalError:
        return False
