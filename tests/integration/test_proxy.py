"""The gateway over real sockets: the openai SDK and raw HTTP against
`lectr serve`, forwarding to the mock provider."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import openai
import pytest

from devtools.harness import Gateway, Mock
from lectr import _core

PROVIDER_KEY = "sk-test-provider-key-0123456789"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
IGNORED_HEADERS = {"date", "server", "content-length", "transfer-encoding", "connection", "keep-alive"}


def tag() -> str:
    return "t-" + uuid.uuid4().hex[:10]


def headers(key: str, **extra: str) -> dict[str, str]:
    return {"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}", **extra}


def post(
    gw: Gateway, key: str | None, body: Any, path: str = "/v1/chat/completions", **h: str
) -> httpx.Response:
    hdrs = headers(key, **h) if key else {"Authorization": f"Bearer {PROVIDER_KEY}", **h}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(gw.url + path, content=data, headers=hdrs, timeout=30)


def last_request(mock: Mock) -> dict[str, Any]:
    return mock.requests()[-1]


def mock_headers(req: dict[str, Any]) -> dict[str, str]:
    return {k.lower(): v for k, v in req["headers"]}


def comparable(h: httpx.Headers) -> dict[str, str]:
    return {k.lower(): v for k, v in h.items() if k.lower() not in IGNORED_HEADERS}


# --- pass-through fidelity ---------------------------------------------------


def test_non_stream_equals_direct_byte_for_byte(gateway: Gateway, mock: Mock, key: str) -> None:
    via = post(gateway, key, CHAT)
    direct = httpx.post(f"{mock.url}/v1/chat/completions", content=json.dumps(CHAT).encode())
    assert via.status_code == 200
    assert via.content == direct.content
    assert comparable(via.headers) == comparable(direct.headers)


def test_request_body_reaches_provider_unchanged(gateway: Gateway, mock: Mock, key: str) -> None:
    raw = (
        b'{ "model":"gpt-4o-mini",  "messages":[{"role":"user",'
        b'"content":"spaces \\u00e9 kept"}],"temperature":0.25}'
    )
    assert post(gateway, key, raw).status_code == 200
    assert last_request(mock)["body"].encode() == raw


def test_stream_without_usage_request_is_identical_to_direct(gateway: Gateway, mock: Mock, key: str) -> None:
    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}],"stream":true}'
    feature = tag()
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        content=body,
        headers=headers(key, **{"X-Lectr-Feature": feature}),
    ) as r:
        via = r.read()
    # The gateway asked the provider for usage on the client's behalf...
    injected = body[:-1] + b',"stream_options":{"include_usage":true}}'
    assert last_request(mock)["body"].encode() == injected
    # ...yet the client gets exactly what it would have got directly,
    direct = httpx.post(f"{mock.url}/v1/chat/completions", content=body).content
    assert via == direct
    assert b'"usage"' not in via
    # and the record holds the provider's exact figures.
    (rec,) = gateway.records(feature=feature)
    assert (rec["token_source"], rec["streaming"]) == ("provider", 1)
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (len(injected) // 4, 5)


def test_stream_with_client_usage_is_identical_to_direct(gateway: Gateway, mock: Mock, key: str) -> None:
    body = json.dumps({**CHAT, "stream": True, "stream_options": {"include_usage": True}}).encode()
    feature = tag()
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        content=body,
        headers=headers(key, **{"X-Lectr-Feature": feature}),
    ) as r:
        via = r.read()
    assert last_request(mock)["body"].encode() == body
    direct = httpx.post(f"{mock.url}/v1/chat/completions", content=body).content
    assert via == direct
    assert b'"prompt_tokens"' in via
    (rec,) = gateway.records(feature=feature)
    assert rec["prompt_tokens"] == len(body) // 4
    assert rec["completion_tokens"] == 5


def test_usage_injection_is_what_the_provider_sees(gateway: Gateway, mock: Mock, key: str) -> None:
    body = b'{"model":"gpt-4o-mini","stream":true,"messages":[]}'
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", content=body, headers=headers(key)) as r:
        r.read()
    assert (
        last_request(mock)["body"] == '{"model":"gpt-4o-mini","stream":true,"messages":[],'
        '"stream_options":{"include_usage":true}}'
    )


def test_openai_sdk_non_stream_and_stream(gateway: Gateway, key: str) -> None:
    feature = tag()
    client = openai.OpenAI(
        base_url=gateway.url + "/v1",
        api_key=PROVIDER_KEY,
        default_headers={"X-Lectr-Key": key, "X-Lectr-Feature": feature, "X-Lectr-Task": "classification"},
    )
    r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "Hello from the mock provider"
    assert r.usage is not None and r.usage.completion_tokens == 5
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        if c.choices
    )
    assert text == "Hello from the mock provider"
    recs = gateway.records(expect=2, feature=feature)
    assert [r["streaming"] for r in recs] == [0, 1]
    assert all(r["task"] == "classification" and r["token_source"] == "provider" for r in recs)
    # gpt-4o-mini: $0.15 / 1M input, $0.60 / 1M output.
    for r in recs:
        assert r["cost_usd"] == pytest.approx(
            (r["prompt_tokens"] * 0.15 + r["completion_tokens"] * 0.60) / 1e6
        )


def test_embeddings_models_and_legacy_completions(gateway: Gateway, key: str) -> None:
    feature = tag()
    client = openai.OpenAI(
        base_url=gateway.url + "/v1",
        api_key=PROVIDER_KEY,
        default_headers={"X-Lectr-Key": key, "X-Lectr-Feature": feature},
    )
    emb = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(emb.data) == 2
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini"]
    comp = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="say hi")
    assert comp.choices[0].text == "Hello from the mock provider"
    recs = {r["endpoint"]: r for r in gateway.records(expect=3, feature=feature)}
    assert recs["/v1/embeddings"]["completion_tokens"] == 0
    assert recs["/v1/embeddings"]["cost_usd"] == pytest.approx(
        recs["/v1/embeddings"]["prompt_tokens"] * 0.02 / 1e6
    )
    assert recs["/v1/models"]["model_requested"] is None
    assert recs["/v1/completions"]["completion_tokens"] == 5


# --- headers and errors ------------------------------------------------------


def error_of(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"}
    assert {"message", "type", "code"} <= set(body["error"])
    return body["error"]  # type: ignore[no-any-return]


def test_rejected_keys_never_reach_the_provider(gateway: Gateway, mock: Mock, key: str) -> None:
    before = len(mock.requests())
    r = post(gateway, None, CHAT)
    assert r.status_code == 401 and error_of(r)["code"] == "missing_lectr_key"
    r = post(gateway, "lc_key_" + "x" * 43, CHAT)
    assert r.status_code == 401 and error_of(r)["code"] == "invalid_lectr_key"
    r = post(gateway, "nonsense", CHAT)
    assert r.status_code == 401 and error_of(r)["code"] == "invalid_lectr_key"
    r = post(gateway, key[:-1] + ("A" if key[-1] != "A" else "B"), CHAT)
    assert r.status_code == 401 and error_of(r)["code"] == "invalid_lectr_key"
    assert len(mock.requests()) == before


def test_lectr_headers_are_stripped_and_auth_forwarded(gateway: Gateway, mock: Mock, key: str) -> None:
    post(gateway, key, CHAT, **{"X-Lectr-Feature": "f", "X-Lectr-Task": "extraction", "X-Custom": "kept"})
    h = mock_headers(last_request(mock))
    assert not [k for k in h if k.startswith("x-lectr-")]
    assert h["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert h["x-custom"] == "kept"


def test_feature_and_task_tags(gateway: Gateway, key: str) -> None:
    long150, long300 = "f" * 150, "g" * 300
    post(gateway, key, CHAT, **{"X-Lectr-Feature": long150, "X-Lectr-Task": "not-a-task"})
    post(gateway, key, CHAT, **{"X-Lectr-Feature": long300})
    post(gateway, key, CHAT, **{"X-Lectr-Feature": 'Odd, Value; "quoted"'})
    (a,) = gateway.records(feature=long150)
    assert a["task"] == "not-a-task"
    assert gateway.records(feature="g" * 256)
    assert gateway.records(feature='Odd, Value; "quoted"')
    before = len(gateway.records(expect=0, feature="untagged"))
    post(gateway, key, CHAT, **{"X-Lectr-Feature": ""})
    assert len(gateway.records(expect=before + 1, feature="untagged")) == before + 1


@pytest.mark.parametrize(
    ("model", "provider_header", "provider", "path", "unknown"),
    [
        ("gpt-4o-mini", None, "openai", "/v1/chat/completions", 0),
        ("claude-3-5-haiku-20241022", None, "anthropic", "/anthropic/v1/chat/completions", 0),
        ("llama-3.1-8b-instant", None, "groq", "/groq/openai/v1/chat/completions", 0),
        ("gemini-2.0-flash", None, "gemini", "/gemini/v1beta/openai/chat/completions", 0),
        ("my-finetune", None, "openai", "/v1/chat/completions", 1),
        ("my-finetune", "groq", "groq", "/groq/openai/v1/chat/completions", 0),
        ("gpt-4o", "Anthropic", "anthropic", "/anthropic/v1/chat/completions", 0),
    ],
)
def test_provider_detection_and_override(
    gateway: Gateway,
    mock: Mock,
    key: str,
    model: str,
    provider_header: str | None,
    provider: str,
    path: str,
    unknown: int,
) -> None:
    feature = tag()
    extra = {"X-Lectr-Feature": feature}
    if provider_header:
        extra["X-Lectr-Provider"] = provider_header
    assert post(gateway, key, {**CHAT, "model": model}, **extra).status_code == 200
    req = last_request(mock)
    assert req["path"] == path
    h = mock_headers(req)
    if provider == "anthropic":
        assert h["x-api-key"] == PROVIDER_KEY
        assert "authorization" not in h
        assert h["anthropic-version"] == "2023-06-01"
    else:
        assert h["authorization"] == f"Bearer {PROVIDER_KEY}"
    (rec,) = gateway.records(feature=feature)
    assert (rec["provider"], rec["provider_unknown"]) == (provider, unknown)


def test_invalid_provider_names_the_valid_ones(gateway: Gateway, mock: Mock, key: str) -> None:
    before = len(mock.requests())
    r = post(gateway, key, CHAT, **{"X-Lectr-Provider": "bedrock"})
    assert r.status_code == 400
    err = error_of(r)
    assert err["code"] == "invalid_provider"
    for name in ("openai", "anthropic", "groq", "gemini", "azure"):
        assert name in err["message"]
    assert len(mock.requests()) == before


def test_azure_needs_config_then_rewrites(gateway: Gateway, mock: Mock) -> None:
    key = gateway.create_org("azure-org")
    # The new org reaches the running gateway through the control snapshot.
    for _ in range(50):
        r = post(gateway, key, CHAT, **{"X-Lectr-Provider": "azure"})
        if r.status_code != 401:
            break
    assert r.status_code == 400 and error_of(r)["code"] == "azure_config_missing"
    gateway.cli("orgs", "azure", "azure-org", "--endpoint", f"{mock.url}/", "--api-version", "2024-10-21")
    for _ in range(50):
        r = post(gateway, key, CHAT, **{"X-Lectr-Provider": "azure"})
        if r.status_code == 200:
            break
    assert r.status_code == 200
    req = last_request(mock)
    assert req["path"] == "/openai/deployments/gpt-4o-mini/chat/completions"
    assert req["query"] == "api-version=2024-10-21"
    h = mock_headers(req)
    assert h["api-key"] == PROVIDER_KEY and "authorization" not in h
    # A deployment name is one path segment, whatever it holds.
    before = len(mock.requests())
    for bad in (".", "..", " "):
        r = post(gateway, key, {**CHAT, "model": bad}, **{"X-Lectr-Provider": "azure"})
        assert r.status_code == 400 and error_of(r)["code"] == "invalid_request", bad
        assert "deployment" in error_of(r)["message"]
    assert len(mock.requests()) == before
    # Others are percent-encoded into that one segment and reach the endpoint.
    for odd in ("a/../b", "x?y#z", "p%2e"):
        r = post(gateway, key, {**CHAT, "model": odd}, **{"X-Lectr-Provider": "azure"})
        assert r.status_code == 200, odd
        req = last_request(mock)
        assert req["path"] == f"/openai/deployments/{odd}/chat/completions", odd
        assert req["query"] == "api-version=2024-10-21"


def test_bad_bodies(gateway: Gateway, mock: Mock, key: str) -> None:
    before = len(mock.requests())
    for body in (b"not json", b"[1,2]", b"", b'{"messages": []}', b'{"model": 4}', b'{"model":"m"'):
        r = post(gateway, key, body)
        assert r.status_code == 400, body
        assert error_of(r)["code"] == "invalid_request"
    # A stream whose stream_options cannot take include_usage would come back
    # without the usage its cost is read from.
    for options in ("1", "[]", '"x"'):
        body = b'{"model":"gpt-4o-mini","messages":[],"stream":true,"stream_options":%s}'
        r = post(gateway, key, body % options.encode())
        assert r.status_code == 400, options
        assert error_of(r)["code"] == "invalid_request"
        assert "'stream_options' must be an object" in error_of(r)["message"]
    big = json.dumps({**CHAT, "pad": "x" * (2 * 1024 * 1024)}).encode()
    r = post(gateway, key, big)
    assert r.status_code == 413 and error_of(r)["code"] == "request_too_large"
    assert len(mock.requests()) == before


def test_unknown_route_and_method(gateway: Gateway, key: str) -> None:
    r = httpx.get(gateway.url + "/v1/nope", headers=headers(key))
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"
    r = httpx.get(gateway.url + "/v1/chat/completions", headers=headers(key))
    assert r.status_code == 405 and error_of(r)["code"] == "method_not_allowed"


def test_provider_errors_pass_through(gateway: Gateway, mock: Mock, key: str) -> None:
    feature = tag()
    for status in (429, 500):
        r = post(gateway, key, CHAT, **{"x-mock-status": str(status), "X-Lectr-Feature": feature})
        direct = httpx.post(
            f"{mock.url}/v1/chat/completions", json=CHAT, headers={"x-mock-status": str(status)}
        )
        assert r.status_code == status
        assert r.content == direct.content
        assert r.headers["x-mock-error"] == "1"
    recs = gateway.records(expect=2, feature=feature)
    assert [(r["status_code"], r["error_category"], r["error_source"]) for r in recs] == [
        (429, "rate_limited", "provider"),
        (500, "server_error", "provider"),
    ]
    assert all(r["cost_usd"] is None and r["prompt_tokens"] is None for r in recs)


def test_unknown_model_is_unpriced_not_free(gateway: Gateway, key: str) -> None:
    feature = tag()
    post(gateway, key, {**CHAT, "model": "gpt-unreleased-9"}, **{"X-Lectr-Feature": feature})
    (rec,) = gateway.records(feature=feature)
    assert rec["prompt_tokens"] > 0 and rec["cost_usd"] is None


def test_estimated_tokens_when_provider_reports_none(gateway: Gateway, key: str) -> None:
    feature = tag()
    body = {**CHAT, "stream": True}
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        json=body,
        headers=headers(key, **{"X-Lectr-Feature": feature, "x-mock-no-usage": "1"}),
    ) as r:
        r.read()
    post(gateway, key, CHAT, **{"X-Lectr-Feature": feature, "x-mock-no-usage": "1"})
    recs = gateway.records(expect=2, feature=feature)
    expected_completion = _core.count_tokens("Hello from the mock provider", "gpt-4o-mini")
    for rec in recs:
        assert rec["token_source"] == "estimated"
        assert rec["completion_tokens"] == expected_completion
        assert rec["prompt_tokens"] == _core.estimate_prompt_tokens(json.dumps(CHAT).encode(), "gpt-4o-mini")
        assert rec["cost_usd"] is not None
