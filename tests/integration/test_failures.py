"""Failure paths over real sockets: unreachable and slow providers, streams
that break, clients that leave."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx

from devtools.harness import Gateway, Mock, running
from devtools.ports import free_port
from tests.integration.test_proxy import CHAT, error_of, headers, post, tag


def test_connect_refused_is_502_and_recorded(tmp_root: Path, mock: Mock) -> None:
    dead = free_port()  # nothing listens here
    with running(tmp_root, mock, LECTR_GROQ_BASE_URL=f"http://127.0.0.1:{dead}/v1") as gw:
        key = gw.create_org("o")
        gw.start()
        feature = tag()
        r = post(gw, key, {**CHAT, "model": "llama-3.1-8b-instant"}, **{"X-Lectr-Feature": feature})
        assert r.status_code == 502
        err = error_of(r)
        assert err["code"] == "provider_unreachable"
        assert "groq" in err["message"]
        (rec,) = gw.records(feature=feature)
        assert (rec["status_code"], rec["error_category"], rec["error_source"]) == (
            502,
            "provider_unreachable",
            "network",
        )


def test_first_byte_timeout_is_504(tmp_root: Path, mock: Mock) -> None:
    with running(tmp_root, mock, LECTR_FIRST_BYTE_TIMEOUT="0.3") as gw:
        key = gw.create_org("o")
        gw.start()
        start = time.monotonic()
        r = post(gw, key, CHAT, **{"x-mock-latency-ms": "3000"})
        elapsed = time.monotonic() - start
        assert r.status_code == 504
        assert error_of(r)["code"] == "provider_timeout"
        assert elapsed < 2.5  # the gateway gave up; it did not wait for the provider


def test_stream_reset_after_first_byte_ends_stream_and_is_recorded(gateway: Gateway, key: str) -> None:
    feature = tag()
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        json={**CHAT, "stream": True},
        headers=headers(
            key, **{"X-Lectr-Feature": feature, "x-mock-reset-after": "2", "x-mock-chunks": "10"}
        ),
    ) as r:
        assert r.status_code == 200
        got = b""
        try:
            for part in r.iter_raw():
                got += part
        except httpx.HTTPError:
            pass  # the stream is cut short, as the provider's was
    assert got.count(b"data: ") == 2
    (rec,) = gateway.records(feature=feature)
    assert (rec["status_code"], rec["error_category"], rec["error_source"]) == (
        200,
        "stream_interrupted",
        "network",
    )
    assert rec["token_source"] == "estimated"


def test_broken_streams_end_promptly_one_after_another(gateway: Gateway, key: str) -> None:
    # The client's response must end as soon as the provider's broke, every
    # time: nothing may keep the stream open until a garbage collection.
    for _ in range(4):
        got = b""
        try:
            with httpx.stream(
                "POST",
                gateway.url + "/v1/chat/completions",
                json={**CHAT, "stream": True},
                headers=headers(key, **{"x-mock-reset-after": "2", "x-mock-interval-ms": "0"}),
                timeout=5,
            ) as r:
                for part in r.iter_raw():
                    got += part
        except httpx.RemoteProtocolError:
            pass  # an unterminated chunked body is how a broken stream may end
        assert got.count(b"data: ") == 2


def test_client_disconnect_cancels_upstream_and_records_client_closed(
    gateway: Gateway, mock: Mock, key: str
) -> None:
    feature = tag()
    gone_before = mock.stats()["client_gone"]
    body = json.dumps({**CHAT, "stream": True}).encode()
    req = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-Lectr-Key: {key}\r\nAuthorization: Bearer sk-x\r\nX-Lectr-Feature: {feature}\r\n"
        f"x-mock-chunks: 200\r\nx-mock-interval-ms: 50\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", gateway.port)) as s:
        s.sendall(req)
        got = b""
        while got.count(b"data: ") < 2:
            got += s.recv(65536)
    # The socket is closed: the mock must see its stream abandoned long before
    # the 10 s it would take to finish.
    deadline = time.monotonic() + 5
    while mock.stats()["client_gone"] == gone_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mock.stats()["client_gone"] == gone_before + 1
    (rec,) = gateway.records(feature=feature)
    assert (rec["status_code"], rec["error_category"], rec["error_source"]) == (
        499,
        "client_closed",
        "client",
    )
    assert rec["token_source"] == "estimated"
    assert rec["completion_tokens"] >= 1
    assert rec["latency_ms"] < 5000


def test_sigterm_flushes_queued_records(tmp_root: Path, mock: Mock) -> None:
    # A long flush interval keeps records queued until shutdown drains them.
    with running(tmp_root, mock, LECTR_WRITER_FLUSH_INTERVAL="60") as gw:
        key = gw.create_org("o")
        gw.start()
        served = sum(
            post(gw, key, CHAT, **{"X-Lectr-Feature": "drain"}).status_code == 200 for _ in range(40)
        )
        assert served == 40
        assert httpx.get(gw.url + "/readyz").json()["writer"]["depth"] == 40
        assert gw.proc is not None
        gw.proc.terminate()
        assert gw.proc.wait(timeout=30) == 0
        assert len(gw.records(expect=40, timeout=1, feature="drain")) == 40
