"""The OpenAI Responses API and Anthropic's Messages API through the gateway,
with the official `openai` and `anthropic` SDKs over real sockets: objects
and stream bytes equal a direct call's, and the record's usage and cost
equal the mock's usage x price for every token class."""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic
import httpx
import openai
import pytest

from devtools.harness import Gateway, Mock
from lectr.gateway.pricing import PriceTable
from tests.integration.test_proxy import PROVIDER_KEY, mock_headers, tag

PRICES = PriceTable.load()
INPUT = [{"role": "user", "content": "hello there"}]


def oa(url: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=PROVIDER_KEY, default_headers=headers, max_retries=0)


def an(url: str, **headers: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=PROVIDER_KEY, default_headers=headers, max_retries=0)


def one_record(gw: Gateway, feature: str) -> dict[str, Any]:
    rows = gw.records(expect=1, feature=feature)
    assert len(rows) == 1, rows
    return rows[0]


def raw_stream(url: str, body: dict[str, Any], **headers: str) -> bytes:
    with httpx.stream(
        "POST",
        url,
        content=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {PROVIDER_KEY}", **headers},
    ) as r:
        assert r.status_code == 200
        return b"".join(r.iter_raw())


# --- OpenAI Responses -----------------------------------------------------------


def responses_clients(
    gw: Gateway, mock: Mock, key: str, **h: str
) -> tuple[openai.OpenAI, openai.OpenAI, str]:
    f = tag()
    direct = oa(mock.url + "/v1", **h)
    via = oa(gw.url + "/v1", **{"X-Lectr-Key": key, "X-Lectr-Feature": f, **h})
    return direct, via, f


def assert_responses_record(rec: dict[str, Any], usage: Any, model: str, streaming: bool) -> None:
    cached = usage.input_tokens_details.cached_tokens
    written = usage.input_tokens_details.cache_write_tokens
    reasoning = usage.output_tokens_details.reasoning_tokens
    assert rec["endpoint"] == "/v1/responses"
    assert rec["provider"] == "openai"
    assert rec["status_code"] == 200 and rec["error_category"] is None
    assert bool(rec["streaming"]) is streaming
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (usage.input_tokens, usage.output_tokens)
    assert (rec["cached_tokens"], rec["reasoning_tokens"], rec["cache_write_tokens"]) == (
        cached,
        reasoning,
        written,
    )
    assert rec["token_source"] == "provider"
    p = PRICES.price(model)
    assert p is not None and p.cached_input is not None
    # OpenAI bills cache writes at the input price (the table has no cache_write for it).
    write_rate = p.cache_write if p.cache_write is not None else p.input
    fresh = usage.input_tokens - cached - written
    expect = (
        fresh * p.input + cached * p.cached_input + written * write_rate + usage.output_tokens * p.output
    ) / 1e6
    assert rec["cost_usd"] == pytest.approx(expect, rel=1e-12)


def test_responses_create_equals_direct_with_usage_and_cost(gateway: Gateway, mock: Mock, key: str) -> None:
    h = {"x-mock-cached": "6", "x-mock-reasoning": "4", "x-mock-cache-write": "3"}
    direct, via, f = responses_clients(gateway, mock, key, **h)
    a = direct.responses.create(model="o4-mini", input=INPUT)  # type: ignore[arg-type]
    b = via.responses.create(model="o4-mini", input=INPUT)  # type: ignore[arg-type]
    assert a.model_dump() == b.model_dump()
    assert b.output_text == "Hello from the mock provider"
    assert b.usage is not None and b.usage.input_tokens_details.cached_tokens == 6
    assert_responses_record(one_record(gateway, f), b.usage, "o4-mini", streaming=False)


def test_responses_stream_events_and_bytes_equal_direct(gateway: Gateway, mock: Mock, key: str) -> None:
    h = {"x-mock-cached": "3", "x-mock-reasoning": "2", "x-mock-cache-write": "1"}
    direct, via, f = responses_clients(gateway, mock, key, **h)
    a = [e.model_dump() for e in direct.responses.create(model="gpt-4.1", input=INPUT, stream=True)]  # type: ignore[arg-type]
    b = [e.model_dump() for e in via.responses.create(model="gpt-4.1", input=INPUT, stream=True)]  # type: ignore[arg-type]
    assert a == b
    assert [e["type"] for e in b][:2] == ["response.created", "response.in_progress"]
    assert b[-1]["type"] == "response.completed"
    usage = openai.types.responses.ResponseUsage.model_validate(b[-1]["response"]["usage"])
    assert_responses_record(one_record(gateway, f), usage, "gpt-4.1", streaming=True)

    body = {"model": "gpt-4.1", "input": INPUT, "stream": True}
    g = tag()
    direct_bytes = raw_stream(mock.url + "/v1/responses", body, **h)
    via_bytes = raw_stream(
        gateway.url + "/v1/responses", body, **{"X-Lectr-Key": key, "X-Lectr-Feature": g, **h}
    )
    assert via_bytes == direct_bytes
    assert b"event: response.completed" in via_bytes


def test_responses_stream_helper(gateway: Gateway, mock: Mock, key: str) -> None:
    direct, via, f = responses_clients(gateway, mock, key, **{"x-mock-cached": "2"})
    with direct.responses.stream(model="gpt-4o", input=INPUT) as s:  # type: ignore[arg-type]
        text_a = "".join(e.delta for e in s if e.type == "response.output_text.delta")
        final_a = s.get_final_response()
    with via.responses.stream(model="gpt-4o", input=INPUT) as s:  # type: ignore[arg-type]
        text_b = "".join(e.delta for e in s if e.type == "response.output_text.delta")
        final_b = s.get_final_response()
    assert text_a == text_b == "Hello from the mock provider"
    assert final_a.model_dump() == final_b.model_dump()
    assert final_b.usage is not None
    assert_responses_record(one_record(gateway, f), final_b.usage, "gpt-4o", streaming=True)


def test_stored_responses_pass_through(gateway: Gateway, mock: Mock, key: str) -> None:
    _, via, f = responses_clients(gateway, mock, key)
    assert via.responses.retrieve("resp_abc").id == "resp_abc"
    assert via.responses.cancel("resp_abc").status == "cancelled"
    items = via.responses.input_items.list("resp_abc", limit=5)
    assert [i.id for i in items.data] == ["msg_in"]
    via.responses.delete("resp_abc")
    paths = [(r["method"], r["path"], r["query"]) for r in mock.requests()[-4:]]
    assert paths == [
        ("GET", "/v1/responses/resp_abc", ""),
        ("POST", "/v1/responses/resp_abc/cancel", ""),
        ("GET", "/v1/responses/resp_abc/input_items", "limit=5"),
        ("DELETE", "/v1/responses/resp_abc", ""),
    ]
    rows = gateway.records(expect=4, feature=f)
    assert len(rows) == 4
    # Fetching a stored response again uses no tokens.
    assert all(r["prompt_tokens"] is None and r["cost_usd"] is None for r in rows)
    r = httpx.get(gateway.url + "/v1/responses/..%2Fetc", headers={"X-Lectr-Key": key})
    assert r.status_code == 404


def test_responses_on_azure_use_the_v1_path(gateway: Gateway, mock: Mock) -> None:
    key = gateway.create_org("azure-responses")
    gateway.cli(
        "orgs", "azure", "azure-responses", "--endpoint", f"{mock.url}/", "--api-version", "2024-10-21"
    )
    deadline = time.monotonic() + 10
    while True:  # the new org, then its Azure settings, reach the gateway with a later snapshot
        # A fresh feature per attempt: a refused attempt is recorded too.
        f = tag()
        client = oa(
            gateway.url + "/v1", **{"X-Lectr-Key": key, "X-Lectr-Provider": "azure", "X-Lectr-Feature": f}
        )
        try:
            out = client.responses.create(model="my-deployment", input=INPUT)  # type: ignore[arg-type]
            break
        except (openai.AuthenticationError, openai.BadRequestError) as e:
            if time.monotonic() > deadline or (
                isinstance(e, openai.BadRequestError) and "azure" not in str(e).lower()
            ):
                raise
            time.sleep(0.05)
    assert out.output_text == "Hello from the mock provider"
    req = mock.requests()[-1]
    assert (req["path"], req["query"]) == ("/openai/v1/responses", "")
    h = mock_headers(req)
    assert h["api-key"] == PROVIDER_KEY and "authorization" not in h
    rec = one_record(gateway, f)
    assert (rec["provider"], rec["endpoint"], rec["status_code"]) == ("azure", "/v1/responses", 200)
    assert rec["prompt_tokens"] == out.usage.input_tokens  # type: ignore[union-attr]
    assert rec["cost_usd"] is None  # a deployment name is not a priced model: unpriced, never 0


def test_responses_unsupported_provider_is_a_clear_400(gateway: Gateway, mock: Mock, key: str) -> None:
    n = len(mock.requests())
    f = "responses-unsupported"
    r = httpx.post(
        gateway.url + "/v1/responses",
        json={"model": "claude-sonnet-4", "input": "hi"},
        headers={"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}", "X-Lectr-Feature": f},
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "unsupported_endpoint"
    assert len(mock.requests()) == n
    # The record of a refused request still says what was asked of whom.
    rec = one_record(gateway, f)
    assert (rec["model_requested"], rec["provider"], rec["error_category"]) == (
        "claude-sonnet-4",
        "anthropic",
        "unsupported_endpoint",
    )


def test_responses_stream_cut_midway_raises_in_the_sdk(gateway: Gateway, mock: Mock, key: str) -> None:
    _, via, f = responses_clients(gateway, mock, key, **{"x-mock-reset-after": "3"})
    seen: list[str] = []

    def consume() -> None:
        for e in via.responses.create(model="gpt-4o", input=INPUT, stream=True):  # type: ignore[arg-type]
            seen.append(e.type)

    with pytest.raises(openai.APIError):
        consume()
    assert "response.output_text.delta" in seen and "response.completed" not in seen
    rec = one_record(gateway, f)
    assert rec["error_category"] == "stream_interrupted"

    def helper() -> None:
        with via.responses.stream(model="gpt-4o", input=INPUT) as s:  # type: ignore[arg-type]
            for _ in s:
                pass

    with pytest.raises(openai.APIError):
        helper()


# --- Anthropic Messages -----------------------------------------------------------


def messages_clients(
    gw: Gateway, mock: Mock, key: str, **h: str
) -> tuple[anthropic.Anthropic, anthropic.Anthropic, str]:
    f = tag()
    direct = an(mock.url + "/anthropic", **h)
    via = an(gw.url, **{"X-Lectr-Key": key, "X-Lectr-Feature": f, **h})
    return direct, via, f


def assert_messages_record(rec: dict[str, Any], usage: Any, model: str, streaming: bool) -> None:
    read, write = usage.cache_read_input_tokens, usage.cache_creation_input_tokens
    assert rec["endpoint"] == "/v1/messages" and rec["provider"] == "anthropic"
    assert rec["status_code"] == 200 and rec["error_category"] is None
    assert bool(rec["streaming"]) is streaming
    # Anthropic reports cache reads and writes apart from input_tokens.
    assert rec["prompt_tokens"] == usage.input_tokens + read + write
    assert (rec["completion_tokens"], rec["cached_tokens"], rec["cache_write_tokens"]) == (
        usage.output_tokens,
        read,
        write,
    )
    p = PRICES.price(model)
    assert p is not None and p.cached_input is not None and p.cache_write is not None
    assert p.cache_write > p.input > p.cached_input
    expect = (
        usage.input_tokens * p.input
        + read * p.cached_input
        + write * p.cache_write
        + usage.output_tokens * p.output
    ) / 1e6
    assert rec["cost_usd"] == pytest.approx(expect, rel=1e-12)


MSG = [{"role": "user", "content": "hello there"}]


def test_messages_create_equals_direct_with_cache_usage_and_cost(
    gateway: Gateway, mock: Mock, key: str
) -> None:
    h = {"x-mock-cached": "5", "x-mock-cache-write": "7"}
    direct, via, f = messages_clients(gateway, mock, key, **h)
    a = direct.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=MSG)  # type: ignore[arg-type]
    b = via.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=MSG)  # type: ignore[arg-type]
    assert a.model_dump() == b.model_dump()
    assert b.usage.cache_read_input_tokens == 5 and b.usage.cache_creation_input_tokens == 7
    assert_messages_record(one_record(gateway, f), b.usage, "claude-sonnet-4-5", streaming=False)


def test_messages_stream_events_and_bytes_equal_direct(gateway: Gateway, mock: Mock, key: str) -> None:
    h = {"x-mock-cached": "4", "x-mock-cache-write": "2"}
    direct, via, f = messages_clients(gateway, mock, key, **h)
    with direct.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=MSG) as s:  # type: ignore[arg-type]
        events_a = [e.model_dump() for e in s]
        final_a = s.get_final_message()
    with via.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=MSG) as s:  # type: ignore[arg-type]
        events_b = [e.model_dump() for e in s]
        final_b = s.get_final_message()
    assert events_a == events_b
    assert final_a.model_dump() == final_b.model_dump()
    assert final_b.usage.output_tokens == 5
    assert_messages_record(one_record(gateway, f), final_b.usage, "claude-haiku-4-5", streaming=True)

    g = tag()
    raw_events = [
        e.type
        for e in via.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=MSG, stream=True)  # type: ignore[arg-type]
    ]
    assert raw_events[0] == "message_start" and raw_events[-1] == "message_stop"
    body = {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": MSG, "stream": True}
    direct_bytes = raw_stream(mock.url + "/anthropic/v1/messages", body, **h)
    via_bytes = raw_stream(
        gateway.url + "/v1/messages", body, **{"X-Lectr-Key": key, "X-Lectr-Feature": g, **h}
    )
    assert via_bytes == direct_bytes
    assert b"event: message_stop" in via_bytes


def test_count_tokens_is_passed_through_and_free(gateway: Gateway, mock: Mock, key: str) -> None:
    direct, via, f = messages_clients(gateway, mock, key)
    a = direct.messages.count_tokens(model="claude-sonnet-4", messages=MSG)  # type: ignore[arg-type]
    b = via.messages.count_tokens(model="claude-sonnet-4", messages=MSG)  # type: ignore[arg-type]
    assert a.model_dump() == b.model_dump() and b.input_tokens > 0
    rec = one_record(gateway, f)
    assert rec["endpoint"] == "/v1/messages/count_tokens" and rec["status_code"] == 200
    assert rec["prompt_tokens"] is None and rec["cost_usd"] is None


def test_messages_auth_and_anthropic_headers_reach_the_provider(
    gateway: Gateway, mock: Mock, key: str
) -> None:
    _, via, _ = messages_clients(gateway, mock, key, **{"anthropic-beta": "prompt-caching-2024-07-31"})
    via.messages.create(model="claude-sonnet-4", max_tokens=8, messages=MSG)  # type: ignore[arg-type]
    h = mock_headers(mock.requests()[-1])
    assert h["x-api-key"] == PROVIDER_KEY
    assert h["anthropic-version"] == via.default_headers["anthropic-version"]
    assert h["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert not any(k.startswith("x-lectr-") for k in h)
    # Authorization: Bearer (as OpenAI-style clients send it) becomes x-api-key.
    r = httpx.post(
        gateway.url + "/v1/messages",
        json={"model": "claude-sonnet-4", "max_tokens": 8, "messages": MSG},
        headers={"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}"},
    )
    assert r.status_code == 200
    h = mock_headers(mock.requests()[-1])
    assert h["x-api-key"] == PROVIDER_KEY and "authorization" not in h


def test_messages_errors_come_in_anthropic_shape(gateway: Gateway, mock: Mock, key: str) -> None:
    n = len(mock.requests())
    bad = an(gateway.url, **{"X-Lectr-Key": "lk-nope"})
    with pytest.raises(anthropic.AuthenticationError) as e:
        bad.messages.create(model="claude-sonnet-4", max_tokens=8, messages=MSG)  # type: ignore[arg-type]
    assert e.value.body["type"] == "error"  # type: ignore[index]
    assert e.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    _, via, _ = messages_clients(gateway, mock, key)
    with pytest.raises(anthropic.BadRequestError) as e2:
        via.messages.create(model="gpt-4o", max_tokens=8, messages=MSG)  # type: ignore[arg-type]
    assert e2.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "anthropic" in e2.value.body["error"]["message"]  # type: ignore[index]
    assert len(mock.requests()) == n
    # A provider error is the provider's own body, unchanged.
    _, via, _ = messages_clients(gateway, mock, key, **{"x-mock-status": "429"})
    with pytest.raises(anthropic.RateLimitError) as e3:
        via.messages.create(model="claude-sonnet-4", max_tokens=8, messages=MSG)  # type: ignore[arg-type]
    assert e3.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "mock error 429"},
    }


def test_messages_stream_cut_midway_raises_in_the_sdk(gateway: Gateway, mock: Mock, key: str) -> None:
    _, via, f = messages_clients(gateway, mock, key, **{"x-mock-reset-after": "3"})
    seen: list[str] = []

    def consume() -> None:
        with via.messages.stream(model="claude-sonnet-4", max_tokens=64, messages=MSG) as s:  # type: ignore[arg-type]
            seen.extend(ev.type for ev in s)

    with pytest.raises(anthropic.APIStatusError) as e:
        consume()
    assert "content_block_delta" in seen and "message_stop" not in seen
    assert e.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    rec = one_record(gateway, f)
    assert rec["error_category"] == "stream_interrupted"
    # Usage seen before the break is kept (input known from message_start).
    assert rec["prompt_tokens"] is not None


@pytest.mark.parametrize("stream", [False, True])
def test_usage_is_estimated_when_the_provider_reports_none(
    gateway: Gateway, mock: Mock, key: str, stream: bool
) -> None:
    h = {"x-mock-no-usage": "1"}
    _, via_oa, f1 = responses_clients(gateway, mock, key, **h)
    if stream:
        for _ in via_oa.responses.create(model="gpt-4o", input=INPUT, stream=True):  # type: ignore[arg-type]
            pass
    else:
        via_oa.responses.create(model="gpt-4o", input=INPUT)  # type: ignore[arg-type]
    _, via_an, f2 = messages_clients(gateway, mock, key, **h)
    if stream:
        # (The anthropic SDK's stream helper needs the usage that real streams
        # always carry, so this one is read raw.)
        body = {"model": "claude-sonnet-4", "max_tokens": 8, "messages": MSG, "stream": True}
        raw = raw_stream(
            gateway.url + "/v1/messages", body, **{"X-Lectr-Key": key, "X-Lectr-Feature": f2, **h}
        )
        assert raw.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    else:
        via_an.messages.create(model="claude-sonnet-4", max_tokens=8, messages=MSG)  # type: ignore[arg-type]
    for f in (f1, f2):
        rec = one_record(gateway, f)
        assert rec["token_source"] == "estimated", rec
        # "hello there" and the mock's five words: never a silent zero.
        assert rec["prompt_tokens"] > 0 and rec["completion_tokens"] == 5, rec
        assert rec["cost_usd"] > 0


def test_a_stream_cut_mid_event_still_ends_with_a_clean_error(gateway: Gateway, mock: Mock, key: str) -> None:
    """The half event the provider sent before breaking never reaches the
    client, so the error event is parsed as such (not glued onto it)."""
    h = {"x-mock-reset-after": "2", "x-mock-reset-partial": "1"}
    _, via_an, f = messages_clients(gateway, mock, key, **h)

    def consume_messages() -> None:
        with via_an.messages.stream(model="claude-sonnet-4", max_tokens=8, messages=MSG) as s:  # type: ignore[arg-type]
            for _ in s:
                pass

    with pytest.raises(anthropic.APIStatusError) as e:
        consume_messages()
    assert e.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert one_record(gateway, f)["error_category"] == "stream_interrupted"

    _, via_oa, _ = responses_clients(gateway, mock, key, **h)

    def consume_responses() -> None:
        for _ in via_oa.responses.create(model="gpt-4o", input=INPUT, stream=True):  # type: ignore[arg-type]
            pass

    with pytest.raises(openai.APIError) as e2:
        consume_responses()
    assert e2.value.code == "stream_interrupted"  # type: ignore[attr-defined]
    body = {"model": "gpt-4o", "input": INPUT, "stream": True}
    raw = raw_stream(gateway.url + "/v1/responses", body, **{"X-Lectr-Key": key, **h})
    # Whole events only, then the error event.
    events = raw.split(b"\n\n")
    assert events[-1] == b"" and events[-2].startswith(b"event: error\ndata: {")
    assert all(ev.startswith(b"event: response.") for ev in events[:-2])
