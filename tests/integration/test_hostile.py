"""A hostile provider (devtools/hostile_provider.py) against the gateway over real
sockets: whatever it sends, the client gets a clear error in the OpenAI shape,
the gateway keeps serving, the request is recorded, and memory comes back."""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.harness import Gateway, Hostile, running
from tests.integration.test_proxy import CHAT, headers, tag


@pytest.fixture(scope="module")
def hostile(tmp_root: Path) -> Iterator[Hostile]:
    h = Hostile(tmp_root)
    yield h
    h.proc.terminate()
    h.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def hgw(tmp_root: Path, hostile: Hostile) -> Iterator[Gateway]:
    # Tokenizers load at start, so that memory readings are not their first load.
    gw = Gateway(
        tmp_root,
        hostile,
        LECTR_IDLE_TIMEOUT="5",
        LECTR_FIRST_BYTE_TIMEOUT="5",
        LECTR_WARM_TOKENIZERS="true",
    )
    gw.key = gw.create_org("hostile")  # type: ignore[attr-defined]
    gw.start()
    yield gw
    gw.stop()


def send(
    gw: Gateway, mode: str, stream: bool = False, usage: bool = False, **extra: str
) -> tuple[httpx.Response, bytes, str]:
    """One chat request in `mode` (`usage`: the client asks for streamed
    usage, so the tap passes events through unedited); the response, its
    whole body and the feature tag."""
    feature = tag()
    req: dict[str, Any] = {**CHAT, "stream": stream}
    if usage:
        req["stream_options"] = {"include_usage": True}
    body = json.dumps(req).encode()
    hdrs = headers(gw.key, **{"x-hostile": mode, "X-Lectr-Feature": feature, **extra})  # type: ignore[attr-defined]
    with httpx.stream("POST", gw.url + "/v1/chat/completions", content=body, headers=hdrs, timeout=30) as r:
        got = b""
        try:
            for part in r.iter_raw():
                got += part
        except httpx.HTTPError:
            pass  # a cut connection is one of the ways to say "broken"
    return r, got, feature


def error_body(raw: bytes) -> dict[str, Any]:
    err: dict[str, Any] = json.loads(raw)["error"]
    assert set(err) >= {"message", "type", "code"}
    return err


def assert_serving(gw: Gateway) -> None:
    """The gateway is up and a good request (JSON and SSE) still succeeds."""
    assert httpx.get(gw.url + "/healthz", timeout=5).status_code == 200
    r, body, _ = send(gw, "ok")
    assert r.status_code == 200, body
    assert json.loads(body)["choices"][0]["message"]["content"] == "hi"
    r, body, _ = send(gw, "ok", stream=True)
    assert r.status_code == 200 and body.rstrip().endswith(b"data: [DONE]"), body


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("code", ["000", "099", "600", "999"])
def test_a_status_outside_100_599_is_502_and_the_gateway_stays_up(
    hgw: Gateway, code: str, stream: bool
) -> None:
    r, body, feature = send(hgw, f"status-{code}", stream=stream)
    assert r.status_code == 502
    err = error_body(body)
    assert (err["type"], err["code"]) == ("api_error", "provider_bad_response")
    assert_serving(hgw)
    (rec,) = hgw.records(feature=feature)
    assert (rec["status_code"], rec["error_category"], rec["error_source"]) == (
        502,
        "provider_bad_response",
        "provider",
    )


MIB = 1 << 20


@pytest.mark.parametrize("usage", [False, True], ids=["usage-injected", "usage-asked"])
def test_an_endless_sse_line_fails_the_stream_and_memory_returns(hgw: Gateway, usage: bool) -> None:
    assert_serving(hgw)  # warm: the first requests' allocations are not this test's
    before = hgw.worker_rss()
    r, got, feature = send(hgw, "endless-line", stream=True, usage=usage, **{"x-hostile-size": str(64 * MIB)})
    assert r.status_code == 200  # the head went out before the line began
    # Cut at the 4 MiB event cap, not 64 MiB passed on as a complete stream.
    assert len(got) < 16 * MIB
    assert b"data: [DONE]" not in got
    (rec,) = hgw.records(feature=feature)
    assert (rec["status_code"], rec["error_category"]) == (200, "stream_interrupted")
    after = hgw.wait_rss_below(before + 20 * MIB)
    assert after <= before + 20 * MIB, f"worker RSS {before / MIB:.0f} -> {after / MIB:.0f} MiB"
    assert_serving(hgw)


def last_event(raw: bytes) -> bytes:
    events = [e for e in raw.replace(b"\r\n", b"\n").split(b"\n\n") if e.strip()]
    return events[-1]


@pytest.mark.parametrize("mode", ["truncate-sse", "reset-mid-stream", "sse-no-done", "sse-until-close"])
def test_a_stream_cut_short_ends_with_an_error_event(hgw: Gateway, mode: str) -> None:
    r, got, feature = send(hgw, mode, stream=True)
    assert r.status_code == 200
    assert got.count(b'"delta"') == 2  # what the provider did send went through
    assert b"[DONE]" not in got
    last = last_event(got)
    assert last.startswith(b"data: ")
    err = error_body(last.removeprefix(b"data: "))
    assert (err["type"], err["code"]) == ("api_error", "stream_interrupted")
    (rec,) = hgw.records(feature=feature)
    assert (rec["status_code"], rec["error_category"], rec["error_source"]) == (
        200,
        "stream_interrupted",
        "network",
    )


def test_the_openai_sdk_raises_on_a_stream_cut_short(hgw: Gateway) -> None:
    import openai

    client = openai.OpenAI(
        base_url=hgw.url + "/v1",
        api_key="sk-test",
        default_headers={"X-Lectr-Key": hgw.key, "x-hostile": "truncate-sse"},  # type: ignore[attr-defined]
        max_retries=0,
    )
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    got: list[str | None] = []

    def drain() -> None:
        for chunk in stream:
            got.extend(c.delta.content for c in chunk.choices)

    with pytest.raises(openai.APIError) as info:
        drain()
    assert got == ["hi", " there"]
    assert "broke off" in str(info.value)


def test_a_json_body_over_the_buffer_cut_short_reaches_the_client_broken(
    tmp_root: Path, hostile: Hostile
) -> None:
    import openai

    with running(tmp_root, hostile, LECTR_MAX_BUFFERED_RESPONSE_BYTES="4096") as gw:
        key = gw.create_org("o")
        gw.start()
        gw.key = key  # type: ignore[attr-defined]
        # 100,000 bytes declared, 10,001 sent, then the provider closes.
        r, got, feature = send(gw, "truncate-json", **{"x-hostile-size": "100000"})
        assert r.status_code == 200
        assert r.headers["content-length"] == "100000"
        assert len(got) < 100000
        (rec,) = gw.records(feature=feature)
        assert rec["error_category"] == "stream_interrupted"
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.post(
                gw.url + "/v1/chat/completions",
                json=CHAT,
                headers=headers(key, **{"x-hostile": "truncate-json", "x-hostile-size": "100000"}),
            ).read()
        client = openai.OpenAI(
            base_url=gw.url + "/v1",
            api_key="sk-test",
            default_headers={"X-Lectr-Key": key, "x-hostile": "truncate-json", "x-hostile-size": "100000"},
            max_retries=0,
        )
        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert_serving(gw)


def test_a_trickled_json_body_meets_the_total_deadline(tmp_root: Path, hostile: Hostile) -> None:
    # One byte every 0.5 s never trips the 1 s idle timeout; the 2 s total does.
    env = {"LECTR_IDLE_TIMEOUT": "1", "LECTR_UPSTREAM_TOTAL_TIMEOUT": "2"}
    with running(tmp_root, hostile, **env) as gw:
        gw.key = gw.create_org("o")  # type: ignore[attr-defined]
        gw.start()
        start = time.monotonic()
        r, body, feature = send(gw, "trickle", **{"x-hostile-interval": "0.5"})
        elapsed = time.monotonic() - start
        assert r.status_code == 504
        err = error_body(body)
        assert (err["type"], err["code"]) == ("api_error", "provider_timeout")
        assert "total" in err["message"]
        assert 1.5 < elapsed < 10  # about the 2 s deadline: the provider would take 500 s
        (rec,) = gw.records(feature=feature)
        assert (rec["status_code"], rec["error_category"]) == (504, "provider_timeout")
        assert_serving(gw)


def test_a_post_the_provider_read_and_dropped_is_not_sent_again(hgw: Gateway, hostile: Hostile) -> None:
    # A good request first leaves a keep-alive connection in the pool; the
    # provider reads the next request on it and closes without a byte. It may
    # have acted on it: the gateway must answer 502, never replay it.
    for _ in range(3):
        assert send(hgw, "ok")[0].status_code == 200
        rid = tag()
        r, body, feature = send(hgw, "close-after-read", **{"x-hostile-id": rid})
        assert r.status_code == 502
        assert error_body(body)["code"] == "provider_unreachable"
        assert hostile.received(rid) == 1
        (rec,) = hgw.records(feature=feature)
        assert (rec["status_code"], rec["error_category"]) == (502, "provider_unreachable")


# mode, stream, status the client gets, error code it sees / category recorded
MODES = [
    ("bad-head", False, 502, "provider_bad_response"),
    ("bad-head", True, 502, "provider_bad_response"),
    ("bad-length", False, 502, "provider_bad_response"),
    ("bad-chunk", False, 502, "provider_bad_response"),
    ("bad-chunk", True, 502, "provider_bad_response"),
    ("reset-before-head", False, 502, "provider_unreachable"),
    ("reset-before-head", True, 502, "provider_unreachable"),
    ("reset-mid-head", False, 502, "provider_unreachable"),
    ("reset-mid-body", False, 502, "provider_unreachable"),
    ("close-after-read", False, 502, "provider_unreachable"),
    ("truncate-json", False, 502, "provider_unreachable"),
    ("truncate-sse", True, 200, "stream_interrupted"),
    ("reset-mid-stream", True, 200, "stream_interrupted"),
    ("endless-line", True, 200, "stream_interrupted"),
]


@pytest.mark.parametrize(
    ("mode", "stream", "status", "code"), MODES, ids=[f"{m[0]}-{'sse' if m[1] else 'json'}" for m in MODES]
)
def test_each_hostile_mode_is_a_clear_error_and_nothing_is_lost(
    hgw: Gateway, hostile: Hostile, mode: str, stream: bool, status: int, code: str
) -> None:
    assert_serving(hgw)
    before = hgw.worker_rss()
    rid = tag()
    r, body, feature = send(hgw, mode, stream=stream, usage=True, **{"x-hostile-id": rid})
    assert r.status_code == status, body[:300]
    err = error_body(body if status != 200 else last_event(body).removeprefix(b"data: "))
    assert err["code"] == code
    assert b"[DONE]" not in body
    assert hostile.received(rid) == 1  # never replayed
    (rec,) = hgw.records(feature=feature)
    assert (rec["status_code"], rec["error_category"]) == (status, code)
    assert_serving(hgw)
    after = hgw.wait_rss_below(before + 20 * MIB)
    assert after <= before + 20 * MIB, f"worker RSS {before / MIB:.0f} -> {after / MIB:.0f} MiB"


def test_absurd_usage_is_answered_and_recorded(hgw: Gateway) -> None:
    r, body, feature = send(hgw, "absurd-usage")
    assert r.status_code == 200
    assert json.loads(body)["usage"]["prompt_tokens"] == 2**70  # passed on as the provider sent it
    (rec,) = hgw.records(feature=feature)
    assert rec["status_code"] == 200
    # Never stored as the provider's count: 2^70 does not fit the record.
    assert rec["token_source"] != "provider" or (rec["prompt_tokens"] or 0) < 2**63
    assert_serving(hgw)


SOAK_SECONDS = 20.0


def test_soak_mixed_hostile_and_good_traffic(hgw: Gateway) -> None:
    """Bounded: SOAK_SECONDS of four concurrent clients, every other request a
    good one (JSON or SSE), the rest cycling through the hostile modes (the
    endless line at 8 MiB)."""
    import itertools
    import threading
    from concurrent.futures import ThreadPoolExecutor

    assert_serving(hgw)
    start_rss = hgw.worker_rss()
    deadline = time.monotonic() + SOAK_SECONDS
    ok, ok_sse = ("ok", False, 200, ""), ("ok", True, 200, "")
    plan = itertools.cycle([m for bad in MODES for m in (ok, bad, ok_sse)])
    lock = threading.Lock()
    failures: list[str] = []
    good: list[str] = []
    sent: list[str] = []

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                mode, stream, status, _ = next(plan)
            extra = {"x-hostile-size": str(8 * MIB)} if mode == "endless-line" else {}
            r, body, feature = send(hgw, mode, stream=stream, usage=True, **extra)
            sent.append(feature)
            if r.status_code != status:
                failures.append(f"{mode}: {r.status_code}")
            elif mode == "ok":
                complete = body.rstrip().endswith(b"[DONE]") if stream else b'"choices"' in body
                if not complete:
                    failures.append(f"ok{'-sse' if stream else ''}: incomplete body")
                good.append(feature)

    with ThreadPoolExecutor(4) as pool:
        for f in [pool.submit(client) for _ in range(4)]:
            f.result()
    assert not failures, failures[:10]
    assert httpx.get(hgw.url + "/healthz", timeout=5).status_code == 200
    stored: collections.Counter[str] = collections.Counter()
    wait_until = time.monotonic() + 30
    while time.monotonic() < wait_until:
        stored = collections.Counter(r["feature"] for r in hgw.records(expect=0))
        if all(stored[f] for f in sent):
            break
        time.sleep(0.1)
    assert [f for f in sent if stored[f] != 1] == []  # every request recorded, once
    assert len(good) > 10
    after = hgw.wait_rss_below(start_rss + 20 * MIB)
    assert after <= start_rss + 20 * MIB, f"worker RSS {start_rss / MIB:.0f} -> {after / MIB:.0f} MiB"
    print(f"soak: {len(sent)} requests, {len(good)} good, RSS {start_rss / MIB:.1f} -> {after / MIB:.1f} MiB")
