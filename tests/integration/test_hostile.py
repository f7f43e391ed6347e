"""A hostile provider (devtools/hostile_provider.py) against the gateway over real
sockets: whatever it sends, the client gets a clear error in the OpenAI shape,
the gateway keeps serving, the request is recorded, and memory comes back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.harness import Gateway, Hostile
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
