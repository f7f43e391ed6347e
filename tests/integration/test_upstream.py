"""The event-loop HTTP/1.1 client against real sockets: keep-alive reuse, a
pooled connection the provider closed, chunked and oversized bodies, idle and
first-byte timeouts, a slow consumer, TLS, and what error messages carry."""

from __future__ import annotations

import asyncio
import gc
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from lectr import _core
from lectr.gateway.upstream import Upstream

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A raw HTTP/1.1 server on a free port that counts its connections."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(r, w)
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
                pass
            finally:
                w.close()

        self._server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=self.tls)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, path: str = "/v1/chat/completions", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def read_request(self, r: asyncio.StreamReader) -> bytes:
        head = await r.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = await r.readexactly(length)
        self.requests.append(head + body)
        return head + body


def reply(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n"
        % (len(body), extra)
        + body
    )


CHUNKED = b"transfer-encoding: chunked\r\n"
BODY = b'{"id":"x","usage":{"prompt_tokens":7,"completion_tokens":3}}'


async def test_keep_alive_reuses_one_connection() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await srv.read_request(r)
            w.write(reply(BODY, b"x-request-id: r1\r\n"))
            await w.drain()

    async with Server(handler) as srv:
        up = Upstream()
        for _ in range(5):
            resp = await up.send("POST", srv.url(), [("authorization", "Bearer sk-1")], b"{}")
            assert (resp.status, resp.body, resp.body_complete) == (200, BODY, True)
            assert resp.usage == (7, 3, 0)
            assert ("x-request-id", "r1") in resp.headers
        assert srv.connections == 1
        first = srv.requests[0]
        assert first.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:")
        assert b"authorization: Bearer sk-1\r\n" in first and first.endswith(b"\r\n\r\n{}")
        up.close()


async def test_a_pooled_connection_the_provider_closed_is_replaced() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        # Answers as if keep-alive, then drops the connection (an idle timeout
        # on the provider's side): the next request must go on a new one.
        await srv.read_request(r)
        w.write(reply(BODY))
        await w.drain()

    async with Server(handler) as srv:
        up = Upstream()
        for _ in range(3):
            resp = await up.send("POST", srv.url(), [], b"{}")
            assert resp.status == 200
            await asyncio.sleep(0.05)  # let the close arrive before the next send
        assert srv.connections == 3
        up.close()


async def test_chunked_json_and_a_body_over_the_buffer_cap() -> None:
    big = b"x" * 5000

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            req = await srv.read_request(r)
            if b"/big" in req:
                w.write(reply(big))
            else:
                w.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + CHUNKED + b"\r\n")
                for piece in (BODY[:10], BODY[10:]):
                    w.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    await w.drain()
                w.write(b"0\r\n\r\n")
            await w.drain()

    async with Server(handler) as srv:
        up = Upstream(max_buffered_body=1000)
        resp = await up.send("POST", srv.url(), [], b"{}")
        assert (resp.body, resp.body_complete, resp.usage) == (BODY, True, (7, 3, 0))
        resp = await up.send("GET", srv.url("/big"), [], b"")
        assert resp.body_complete is False
        got = resp.body or b""
        while (chunk := await resp.next_chunk()) is not None:
            got += chunk
        assert got == big
        # Both responses were complete: the connection was kept.
        assert srv.connections == 1
        up.close()


async def test_sse_streams_as_it_arrives_with_usage_stripped() -> None:
    release = asyncio.Event()
    events = [
        b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n',
        b'data: {"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":1}}\n\n',
        b"data: [DONE]\n\n",
    ]

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        w.write(b"%x\r\n%s\r\n" % (len(events[0]), events[0]))
        await w.drain()
        await release.wait()  # the client has the first event before the rest exists
        for e in events[1:]:
            w.write(b"%x\r\n%s\r\n" % (len(e), e))
        w.write(b"0\r\n\r\n")
        await w.drain()
        await asyncio.sleep(1)

    async with Server(handler) as srv:
        up = Upstream()
        resp = await up.send("POST", srv.url(), [], b"{}", strip_usage=True)
        assert resp.is_sse and not resp.body_complete
        assert await resp.next_chunk() == events[0]
        release.set()
        rest = b""
        while (chunk := await resp.next_chunk()) is not None:
            rest += chunk
        assert rest == b"data: [DONE]\n\n"  # the usage event we asked for is gone
        assert resp.usage == (4, 1, 0) and resp.saw_done
        up.close()


async def test_a_dropped_streaming_response_closes_its_connection() -> None:
    closed = asyncio.Event()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: {}\n\n")
        await w.drain()
        await r.read()  # returns at EOF: the gateway closed its side
        closed.set()

    async with Server(handler) as srv:
        up = Upstream()
        resp = await up.send("POST", srv.url(), [], b"{}")
        assert resp.is_sse
        del resp
        gc.collect()
        await asyncio.wait_for(closed.wait(), timeout=5)
        up.close()


async def test_timeouts_first_byte_and_idle() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        req = await srv.read_request(r)
        if b"/stall-stream" in req:
            w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: {}\n\n")
            await w.drain()
        await asyncio.sleep(5)

    async with Server(handler) as srv:
        up = Upstream(first_byte_timeout=0.3, idle_timeout=0.3)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(_core.UpstreamTimeout, match="first_byte"):
            await up.send("POST", srv.url(), [], b"{}")
        assert loop.time() - t0 < 2
        resp = await up.send("POST", srv.url("/stall-stream"), [], b"{}")
        assert await resp.next_chunk() == b"data: {}\n\n"
        with pytest.raises(_core.UpstreamTimeout, match="idle"):
            await resp.next_chunk()
        up.close()


async def test_slow_consumer_pauses_the_provider_and_loses_nothing() -> None:
    total = 32 << 20
    sent = 0

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal sent
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n")
        line = b"data: " + b"y" * 1016 + b"\n\n"  # 1 KiB events
        while sent < total:
            w.write(line)
            sent += len(line)
            await w.drain()

    async with Server(handler) as srv:
        up = Upstream()
        resp = await up.send("POST", srv.url(), [], b"{}")
        got = len(await resp.next_chunk() or b"")
        await asyncio.sleep(0.5)  # a stalled client: the provider must be held back
        assert sent < total // 2
        while (chunk := await resp.next_chunk()) is not None:
            got += len(chunk)
        assert got == total
        up.close()


async def test_connect_errors_name_the_host_and_never_the_key() -> None:
    up = Upstream(connect_timeout=1)
    with pytest.raises(_core.UpstreamConnectError) as e:
        await up.send("POST", "http://127.0.0.1:9/v1/x", [("authorization", "Bearer sk-secret-1")], b"{}")
    assert "127.0.0.1:9" in str(e.value) and "sk-secret" not in str(e.value)
    with pytest.raises(_core.UpstreamConnectError):
        await up.send("POST", "ftp://example/", [], b"")


async def test_a_malformed_response_is_a_protocol_error() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!")
        await w.drain()

    async with Server(handler) as srv:
        with pytest.raises(_core.UpstreamProtocolError, match="content-length"):
            await Upstream().send("POST", srv.url(), [], b"{}")


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_verifies_against_the_trust_store(
    tls_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await srv.read_request(r)
            w.write(reply(BODY))
            await w.drain()

    async with Server(handler, tls=server_ctx) as srv:
        # Untrusted certificate: refused.
        with pytest.raises(_core.UpstreamConnectError, match="TLS"):
            await Upstream().send("POST", srv.url(scheme="https"), [], b"{}")
        # Trusted through SSL_CERT_FILE, as an operator with a private CA would.
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        up = Upstream()
        for _ in range(2):
            resp = await up.send("POST", srv.url(scheme="https"), [], b"{}")
            assert resp.body == BODY
        assert srv.connections == 1  # one kept connection (the refused handshake never got this far)
        up.close()
