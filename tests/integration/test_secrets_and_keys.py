"""Secrets never land on disk or in logs; key and org lifecycle through the CLI
reaches a running gateway without a restart."""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

import anthropic
import httpx
import openai

from devtools.harness import Gateway, Mock, running
from tests.integration.test_proxy import CHAT, error_of, post


def wait_status(gw: Gateway, key: str, status: int, timeout: float = 3.0) -> float:
    """Seconds until a request with `key` gets `status`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if post(gw, key, CHAT).status_code == status:
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"key did not get {status} within {timeout}s")


def test_no_provider_key_or_prompt_on_disk_or_in_logs(tmp_root: Path, mock: Mock) -> None:
    secret_key = "sk-SECRET-provider-key-7f3a9c"
    prompt = "PROMPT-CANARY the quarterly numbers are 4242"
    with running(tmp_root, mock, LECTR_LOG_LEVEL="debug") as gw:
        key = gw.create_org("secrets")
        gw.start()
        client = openai.OpenAI(
            base_url=gw.url + "/v1",
            api_key=secret_key,
            default_headers={"X-Lectr-Key": key, "X-Lectr-Feature": "canary"},
        )
        msgs = [{"role": "user", "content": prompt}]
        client.chat.completions.create(model="gpt-4o-mini", messages=msgs)  # type: ignore[arg-type]
        for _ in client.chat.completions.create(model="gpt-4o-mini", messages=msgs, stream=True):  # type: ignore[arg-type]
            pass
        client.chat.completions.create(model="claude-3-5-haiku", messages=msgs)  # type: ignore[arg-type]
        # Errors too: a provider error, an unreachable provider, a bad body.
        post(
            gw,
            key,
            {**CHAT, "messages": msgs},
            **{"x-mock-status": "500", "Authorization": f"Bearer {secret_key}"},
        )
        httpx.post(
            gw.url + "/v1/chat/completions",
            content=f"{{bad json {prompt}".encode(),
            headers={"X-Lectr-Key": key, "Authorization": f"Bearer {secret_key}"},
        )
        # The agent protocols: Responses and Messages, streamed and not, and
        # a Messages stream that breaks (the error path logs).
        client.responses.create(model="gpt-4o-mini", input=prompt)
        for _ in client.responses.create(model="gpt-4o-mini", input=prompt, stream=True):
            pass
        claude = anthropic.Anthropic(
            base_url=gw.url,
            api_key=secret_key,
            default_headers={"X-Lectr-Key": key, "X-Lectr-Feature": "canary-agents"},
            max_retries=0,
        )
        amsgs = [{"role": "user", "content": prompt}]
        claude.messages.create(model="claude-sonnet-4", max_tokens=16, messages=amsgs)  # type: ignore[arg-type]
        with claude.messages.stream(model="claude-sonnet-4", max_tokens=16, messages=amsgs) as s:  # type: ignore[arg-type]
            s.get_final_message()
        claude.messages.count_tokens(model="claude-sonnet-4", messages=amsgs)  # type: ignore[arg-type]
        with contextlib.suppress(anthropic.APIError):
            claude.messages.create(
                model="claude-sonnet-4",
                max_tokens=16,
                messages=amsgs,  # type: ignore[arg-type]
                stream=True,
                extra_headers={"x-mock-reset-after": "2"},
            ).close()
        assert len(gw.records(expect=5, feature="canary")) == 5
        assert len(gw.records(expect=4, feature="canary-agents")) == 4
        assert len(gw.records(expect=11)) == 11
        metrics = httpx.get(gw.url + "/metrics").content
        gw.stop()
        files = [p for p in gw.data_dir.rglob("*") if p.is_file()] + [gw.log]
        assert any(p.name.startswith("lectr.db") for p in files)
        blobs = [(str(p), p.read_bytes()) for p in files] + [("/metrics", metrics)]
        # The completion text too (the mock's words; no provider-side echo).
        for where, data in blobs:
            for needle in (secret_key, prompt, "quarterly numbers", key, "from the mock provider"):
                assert needle.encode() not in data, f"{needle!r} found in {where}"


def test_key_lifecycle_applies_to_the_running_gateway(gateway: Gateway) -> None:
    out = gateway.cli("orgs", "create", "lifecycle")
    key = out.strip().splitlines()[-1]
    assert re.fullmatch(r"lc_key_[A-Za-z0-9_-]{43}", key)
    assert key not in gateway.cli("orgs", "list")
    wait_status(gateway, key, 200)

    listing = gateway.cli("keys", "list", "lifecycle")
    prefix = key[len("lc_key_") :][:8]
    assert f"lc_key_{prefix}..." in listing and key not in listing

    rotated = gateway.cli("keys", "rotate", "lifecycle", prefix).strip().splitlines()[-1]
    assert wait_status(gateway, key, 401) < 1.0
    r = post(gateway, key, CHAT)
    assert error_of(r)["code"] == "invalid_lectr_key"
    wait_status(gateway, rotated, 200)

    gateway.cli("orgs", "disable", "lifecycle")
    assert wait_status(gateway, rotated, 401) < 1.0
    assert error_of(post(gateway, rotated, CHAT))["code"] == "org_disabled"
    gateway.cli("orgs", "enable", "lifecycle")
    wait_status(gateway, rotated, 200)

    gateway.cli("keys", "revoke", "lifecycle", rotated[len("lc_key_") :][:8])
    assert wait_status(gateway, rotated, 401) < 1.0


def test_readyz_reports_storage_and_queue(gateway: Gateway) -> None:
    body = httpx.get(gateway.url + "/readyz").json()
    assert body["status"] == "ok" and body["storage"] == "ok"
    assert {"depth", "written", "dropped"} <= set(body["writer"])
    assert httpx.get(gateway.url + "/healthz").json() == {"status": "ok"}
