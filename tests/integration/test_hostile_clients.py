"""Hostile clients (issue 19): bodies that never end, break or lie, over raw
sockets against a real gateway; each must get a clear answer in the OpenAI
error shape and leave the gateway serving."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import httpx

from devtools.harness import Gateway, Mock, running
from lectr import _core

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
MiB = 1024 * 1024


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def _workers_rss(gw: Gateway) -> int:
    """Summed RSS of the gateway's processes (server, workers and writers)."""
    assert gw.proc is not None
    pids = [gw.proc.pid]
    i = 0
    while i < len(pids):
        pids += _children(pids[i])
        i += 1
    return sum(_rss_kib(p) for p in pids)


def _head(path: str, key: str, *extra: str) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: gw",
        f"X-Lectr-Key: {key}",
        "Content-Type: application/json",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_response(s: socket.socket, deadline: float) -> tuple[int, bytes]:
    """The status and body of one response (content-length framed) read off `s`."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        got = s.recv(65536)
        if not got:
            raise AssertionError(f"connection closed before a response head: {buf!r}")
        buf += got
    head, _, body = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        got = s.recv(65536)
        if not got:
            break
        body += got
    return status, body


def _frame(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_chunked_body_over_the_cap_is_refused_while_it_arrives(
    gateway: Gateway, mock: Mock, key: str
) -> None:
    """A 200 MB chunked body (no content-length to check up front) gets 413
    long before it is all sent, and the gateway's memory does not grow by it."""
    before_rss = _workers_rss(gateway)
    before_calls = len(mock.requests())
    chunk = b"x" * (64 * 1024)
    frame = _frame(chunk)
    sent = 0
    with socket.create_connection(("127.0.0.1", gateway.port)) as s:
        s.sendall(_head("/v1/chat/completions", key, "Transfer-Encoding: chunked"))
        s.sendall(_frame(b'{"model":"gpt-4o-mini","pad":"'))
        s.settimeout(5.0)
        try:
            while sent < 200 * MiB:
                s.sendall(frame)
                sent += len(chunk)
        except OSError:
            pass  # the gateway answered and closed: what this test wants
        status, body = _read_response(s, time.monotonic() + 10.0)
    assert status == 413, body
    assert json.loads(body)["error"]["code"] == "request_too_large"
    print(f"sent {sent / MiB:.0f} MiB before the gateway refused")
    assert sent < 200 * MiB
    growth_mib = (_workers_rss(gateway) - before_rss) / 1024
    print(f"gateway RSS growth {growth_mib:.1f} MiB")
    assert growth_mib < 30
    assert len(mock.requests()) == before_calls
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200


def _log_tail(gw: Gateway, start: int) -> str:
    return gw.log.read_bytes()[start:].decode(errors="replace")


def test_malformed_chunked_body_is_400_without_a_traceback(gateway: Gateway, mock: Mock, key: str) -> None:
    log_start = gateway.log.stat().st_size
    before_calls = len(mock.requests())
    feature = "hostile-malformed-chunk"
    with socket.create_connection(("127.0.0.1", gateway.port)) as s:
        s.sendall(
            _head("/v1/chat/completions", key, "Transfer-Encoding: chunked", f"X-Lectr-Feature: {feature}")
        )
        s.sendall(_frame(json.dumps(CHAT).encode()[:10]) + b"zz\r\nnot a chunk\r\n0\r\n\r\n")
        status, body = _read_response(s, time.monotonic() + 10.0)
    assert status == 400, body
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    (rec,) = gateway.records(feature=feature)
    assert rec["status_code"] == 400 and rec["error_category"] == "invalid_request"
    assert len(mock.requests()) == before_calls
    assert "Traceback" not in _log_tail(gateway, log_start)


def test_client_hanging_up_mid_body_is_recorded_499(gateway: Gateway, mock: Mock, key: str) -> None:
    log_start = gateway.log.stat().st_size
    before_calls = len(mock.requests())
    feature = "hostile-hangup"
    with socket.create_connection(("127.0.0.1", gateway.port)) as s:
        s.sendall(_head("/v1/chat/completions", key, "Content-Length: 1000", f"X-Lectr-Feature: {feature}"))
        s.sendall(json.dumps(CHAT).encode()[:20])
    (rec,) = gateway.records(feature=feature)
    assert rec["status_code"] == 499 and rec["error_category"] == "client_closed"
    assert rec["error_source"] == "client"
    assert len(mock.requests()) == before_calls
    assert "Traceback" not in _log_tail(gateway, log_start)
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200


class _AbsurdUsage(BaseHTTPRequestHandler):
    """A provider whose usage figures are whatever the request's
    x-usage header says, as raw JSON, in a JSON body or an SSE stream."""

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        figure = self.headers["x-usage"]
        usage = f'{{"prompt_tokens":{figure},"completion_tokens":{figure},"total_tokens":{figure}}}'
        choice = '{"index":0,"message":{"role":"assistant","content":"Hello there"},"finish_reason":"stop"}'
        if body.get("stream"):
            delta = '{"index":0,"delta":{"content":"Hello there"}}'
            out = (
                f'data: {{"id":"c","choices":[{delta}],"usage":null}}\n\n'
                f'data: {{"id":"c","choices":[],"usage":{usage}}}\n\ndata: [DONE]\n\n'
            ).encode()
            ctype = "text/event-stream"
        else:
            out = f'{{"id":"c","object":"chat.completion","choices":[{choice}],"usage":{usage}}}'.encode()
            ctype = "application/json"
        self.send_response(200)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def test_absurd_usage_figures_fall_back_to_estimated_tokens(tmp_path: Path) -> None:
    """Usage the store cannot hold (>= 2^63) or that makes no sense (negative,
    fractional, a string, past 100 M tokens) is not trusted: the record has
    estimated tokens, is stored, and its cost is sane."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AbsurdUsage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    provider = SimpleNamespace(url=f"http://127.0.0.1:{server.server_address[1]}")
    figures = [str(2**64), str(2**64 - 1), str(2**63), str(2**63 - 1), "100000001", "-1", "1e30", '"12"']
    try:
        with running(tmp_path, provider) as gw:  # type: ignore[arg-type]
            key = gw.create_org("absurd")
            gw.start()
            for i, figure in enumerate(figures):
                for stream in (False, True):
                    r = httpx.post(
                        f"{gw.url}/v1/chat/completions",
                        json={**CHAT, "stream": stream},
                        headers={
                            "X-Lectr-Key": key,
                            "X-Lectr-Feature": f"absurd-{i}-{stream}",
                            "x-usage": figure,
                        },
                    )
                    assert r.status_code == 200, r.text
            good = httpx.post(
                f"{gw.url}/v1/chat/completions",
                json=CHAT,
                headers={"X-Lectr-Key": key, "X-Lectr-Feature": "sane", "x-usage": "7"},
            )
            assert good.status_code == 200
            expected_prompt = _core.estimate_prompt_tokens(json.dumps(CHAT).encode(), "gpt-4o-mini")
            for i, figure in enumerate(figures):
                for stream in (False, True):
                    (rec,) = gw.records(feature=f"absurd-{i}-{stream}")
                    assert rec["token_source"] == "estimated", (figure, stream)
                    assert rec["prompt_tokens"] == expected_prompt, (figure, stream)
                    assert rec["completion_tokens"] == _core.count_tokens("Hello there", "gpt-4o-mini")
                    assert rec["cost_usd"] is not None and rec["cost_usd"] < 0.01
            (rec,) = gw.records(feature="sane")
            assert rec["token_source"] == "provider" and rec["prompt_tokens"] == 7
    finally:
        server.shutdown()
