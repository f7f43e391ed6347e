"""The control plane over real sockets: rules and fallbacks through the admin
API, failover against the mock's injected failures, the circuit breaker, and
live config across two instances sharing PostgreSQL."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.harness import Gateway, Mock, running
from devtools.ports import free_port
from devtools.services import Postgres
from tests.integration.test_proxy import CHAT, error_of, headers, post, tag

TOKEN = "control-admin-token"
LLAMA = {**CHAT, "model": "llama-3.1-8b-instant"}


def api(gw: Gateway, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(
        method, gw.url + path, json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )


def within(seconds: float, check: Callable[[], bool]) -> float:
    """Seconds until `check()` holds; fails if it takes longer than `seconds`."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, f"not within {seconds}s"
        time.sleep(0.01)
    return time.monotonic() - start


def new_org(gw: Gateway, name: str) -> str:
    key: str = api(gw, "POST", "/admin/orgs", {"name": name}).json()["key"]
    within(3, lambda: post(gw, key, CHAT).status_code == 200)
    return key


@pytest.fixture(scope="module")
def ctl(tmp_root: Path, mock: Mock) -> Iterator[Gateway]:
    dead = free_port()
    with running(
        tmp_root,
        mock,
        LECTR_ADMIN_TOKEN=TOKEN,
        LECTR_FIRST_BYTE_TIMEOUT="1.0",
        LECTR_GEMINI_BASE_URL=f"http://127.0.0.1:{dead}/v1",
    ) as gw:
        gw.start()
        yield gw


def test_rules_rewrite_the_model_and_are_recorded(ctl: Gateway, mock: Mock) -> None:
    key = new_org(ctl, "rules-" + uuid.uuid4().hex[:6])
    org = api(ctl, "GET", "/admin/orgs").json()["data"][-1]["name"]
    r = api(
        ctl,
        "POST",
        f"/admin/orgs/{org}/rules",
        {"name": "chat-to-mini", "match_feature": "chat", "target_model": "gpt-4o-mini"},
    )
    assert r.status_code == 201
    rule_id = r.json()["id"]
    feature = "chat"
    mark = tag()
    assert (
        post(
            ctl, key, {**CHAT, "model": "gpt-4o"}, **{"X-Lectr-Feature": feature, "X-Lectr-Task": mark}
        ).status_code
        == 200
    )
    assert json.loads(mock.requests()[-1]["body"])["model"] == "gpt-4o-mini"
    (rec,) = ctl.records(task=mark)
    assert (rec["model_requested"], rec["model_actual"], rec["rule_id"]) == ("gpt-4o", "gpt-4o-mini", rule_id)
    # Other features pass through untouched.
    post(ctl, key, {**CHAT, "model": "gpt-4o"}, **{"X-Lectr-Feature": "other"})
    assert json.loads(mock.requests()[-1]["body"])["model"] == "gpt-4o"

    for bad, why in (
        ({"name": "x", "target_provider": "bedrock"}, "not a provider"),
        ({"name": "x", "match_feature": "chat"}, "needs an action"),
        ({"name": "x", "target_model": "m", "split_percent": 0}, "split_percent"),
        ({"name": "x", "target_model": "m", "bogus": 1}, "bogus"),
    ):
        r = api(ctl, "POST", f"/admin/orgs/{org}/rules", bad)
        assert r.status_code == 400 and why in error_of(r)["message"], (bad, r.text)
    r = api(ctl, "POST", f"/admin/orgs/{org}/rules", {"name": "chat-to-mini", "target_model": "m"})
    assert r.status_code == 409

    api(ctl, "POST", f"/admin/orgs/{org}/rules", {"name": "second", "target_model": "gpt-4.1-nano"})
    r = api(ctl, "POST", f"/admin/orgs/{org}/rules/reorder", {"order": ["second", "chat-to-mini"]})
    assert [x["name"] for x in r.json()["data"]] == ["second", "chat-to-mini"]
    post(ctl, key, {**CHAT, "model": "gpt-4o"}, **{"X-Lectr-Feature": feature})
    assert json.loads(mock.requests()[-1]["body"])["model"] == "gpt-4.1-nano"
    assert api(ctl, "PATCH", f"/admin/orgs/{org}/rules/second", {"enabled": False}).json()["enabled"] is False
    post(ctl, key, {**CHAT, "model": "gpt-4o"}, **{"X-Lectr-Feature": feature})
    assert json.loads(mock.requests()[-1]["body"])["model"] == "gpt-4o-mini"
    assert api(ctl, "DELETE", f"/admin/orgs/{org}/rules/second").status_code == 200
    assert [x["name"] for x in api(ctl, "GET", f"/admin/orgs/{org}/rules").json()["data"]] == ["chat-to-mini"]


@pytest.fixture(scope="module")
def fb_org(ctl: Gateway) -> tuple[str, str]:
    name = "fb-" + uuid.uuid4().hex[:6]
    key = new_org(ctl, name)
    r = api(
        ctl,
        "PUT",
        f"/admin/orgs/{name}/fallbacks/*",
        {"targets": [{"provider": "openai", "model": "gpt-4o-mini"}]},
    )
    assert r.status_code == 200
    return name, key


def paths_since(mock: Mock, n: int) -> list[str]:
    return [r["path"] for r in mock.requests()[n:]]


@pytest.mark.parametrize(
    ("failure", "model"),
    [
        ({"x-mock-status": "500"}, LLAMA),
        ({"x-mock-status": "429"}, LLAMA),
        ({"x-mock-latency-ms": "3000"}, LLAMA),  # first-byte timeout (1 s)
        ({}, {**CHAT, "model": "gemini-2.0-flash"}),  # connect refused (gemini points at a closed port)
    ],
)
def test_failover_before_first_byte(
    ctl: Gateway, mock: Mock, fb_org: tuple[str, str], failure: dict[str, str], model: dict[str, Any]
) -> None:
    _, key = fb_org
    feature = tag()
    n = len(mock.requests())
    r = post(ctl, key, model, **{"X-Lectr-Feature": feature, "x-mock-only-path": "/groq", **failure})
    assert r.status_code == 200
    assert r.json()["model"] == "gpt-4o-mini"
    served = paths_since(mock, n)
    assert served[-1] == "/v1/chat/completions"
    (rec,) = ctl.records(feature=feature)
    assert (rec["provider"], rec["model_actual"], rec["fallback_used"]) == (
        "openai",
        "gpt-4o-mini",
        "openai/gpt-4o-mini",
    )
    assert rec["model_requested"] == model["model"]


def test_no_retry_after_first_byte(ctl: Gateway, mock: Mock, fb_org: tuple[str, str]) -> None:
    _, key = fb_org
    feature = tag()
    n = len(mock.requests())
    with httpx.stream(
        "POST",
        ctl.url + "/v1/chat/completions",
        json={**LLAMA, "stream": True},
        headers=headers(
            key, **{"X-Lectr-Feature": feature, "x-mock-reset-after": "2", "x-mock-chunks": "10"}
        ),
    ) as r:
        got = b""
        try:
            for part in r.iter_raw():
                got += part
        except httpx.HTTPError:
            pass
    assert got.count(b"data: ") == 2
    assert paths_since(mock, n) == ["/groq/openai/v1/chat/completions"]  # tried once, never the fallback
    (rec,) = ctl.records(feature=feature)
    assert (rec["error_category"], rec["fallback_used"], rec["provider"]) == (
        "stream_interrupted",
        None,
        "groq",
    )


def test_last_error_reaches_the_client_when_every_target_fails(ctl: Gateway, fb_org: tuple[str, str]) -> None:
    _, key = fb_org
    r = post(ctl, key, LLAMA, **{"x-mock-status": "503"})
    assert r.status_code == 503  # the fallback's own error, passed through
    assert r.json()["error"]["code"] == "503"


def test_circuit_breaker(tmp_root: Path, mock: Mock) -> None:
    with running(
        tmp_root,
        mock,
        LECTR_ADMIN_TOKEN=TOKEN,
        LECTR_BREAKER_FAILURE_THRESHOLD="3",
        LECTR_BREAKER_COOLDOWN="1.0",
    ) as gw:
        gw.start()
        key = new_org(gw, "breaker")
        api(
            gw,
            "PUT",
            "/admin/orgs/breaker/fallbacks/*",
            {"targets": [{"provider": "openai", "model": "gpt-4o-mini"}]},
        )
        fail = {"x-mock-status": "500", "x-mock-only-path": "/groq"}

        def groq_status() -> str:
            rows = {h["provider"]: h for h in api(gw, "GET", "/admin/health").json()["data"]}
            return str(rows["groq"]["breaker"])

        for _ in range(3):
            n = len(mock.requests())
            assert post(gw, key, LLAMA, **fail).status_code == 200
            assert paths_since(mock, n)[0].startswith("/groq")
        assert groq_status() == "open"
        n = len(mock.requests())
        assert post(gw, key, LLAMA).status_code == 200  # groq healthy again, but skipped while open
        assert paths_since(mock, n) == ["/v1/chat/completions"]
        within(3, lambda: groq_status() == "half_open")
        n = len(mock.requests())
        assert post(gw, key, LLAMA).status_code == 200  # the trial goes to groq and succeeds
        assert paths_since(mock, n) == ["/groq/openai/v1/chat/completions"]
        assert groq_status() == "closed"
        health = {h["provider"]: h for h in api(gw, "GET", "/admin/health").json()["data"]}
        assert health["groq"]["requests"] == 4 and health["openai"]["success_pct"] == 100.0


def test_two_instances_share_live_config(tmp_root: Path, mock: Mock, postgres: Postgres) -> None:
    env = {"LECTR_DATABASE_URL": postgres.new_database("c"), "LECTR_ADMIN_TOKEN": TOKEN}
    with running(tmp_root, mock, **env) as a, running(tmp_root, mock, **env) as b:
        a.start()
        b.start()
        key = api(a, "POST", "/admin/orgs", {"name": "shared"}).json()["key"]
        within(1.0, lambda: post(b, key, CHAT).status_code == 200)

        def model_seen_by_b() -> str:
            post(b, key, {**CHAT, "model": "gpt-4o"})
            return str(json.loads(mock.requests()[-1]["body"])["model"])

        assert model_seen_by_b() == "gpt-4o"
        api(a, "POST", "/admin/orgs/shared/rules", {"name": "r", "target_model": "gpt-4o-mini"})
        assert within(1.0, lambda: model_seen_by_b() == "gpt-4o-mini") < 1.0
        api(a, "PATCH", "/admin/orgs/shared/rules/r", {"enabled": False})
        assert within(1.0, lambda: model_seen_by_b() == "gpt-4o") < 1.0

        new = api(a, "POST", f"/admin/orgs/shared/keys/{key[7:15]}/rotate").json()["key"]
        assert within(1.0, lambda: post(b, key, CHAT).status_code == 401) < 1.0
        assert post(a, key, CHAT).status_code == 401
        within(1.0, lambda: post(b, new, CHAT).status_code == 200)


def test_cli_rules_and_fallbacks_reach_the_running_gateway(gateway: Gateway, mock: Mock) -> None:
    key = gateway.create_org("cli-rules")
    within(3, lambda: post(gateway, key, CHAT).status_code == 200)
    out = gateway.cli("rules", "add", "cli-rules", "mini", "--when-feature", "cli", "--model", "gpt-4.1-mini")
    assert "added at priority 10" in out
    assert "feature=cli" in gateway.cli("rules", "list", "cli-rules")

    def model() -> str:
        post(gateway, key, {**CHAT, "model": "gpt-4o"}, **{"X-Lectr-Feature": "cli"})
        return str(json.loads(mock.requests()[-1]["body"])["model"])

    within(2, lambda: model() == "gpt-4.1-mini")
    gateway.cli("rules", "disable", "cli-rules", "mini")
    within(2, lambda: model() == "gpt-4o")
    with pytest.raises(RuntimeError, match="not a provider"):
        gateway.cli("rules", "add", "cli-rules", "bad", "--provider", "bedrock")
    gateway.cli("fallbacks", "set", "cli-rules", "openai/gpt-4o-mini", "--on-status", "500")
    assert "openai/gpt-4o-mini" in gateway.cli("fallbacks", "list", "cli-rules")
