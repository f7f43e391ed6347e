"""The HTTP/1.1 client for provider calls: keep-alive connections on the event loop.

Sockets are asyncio transports on the serving loop (uvloop), TLS is the
`ssl` module's, and the bytes are the Rust core's (`_core.encode_request`,
`_core.ResponseReader`: head parsing, chunked decoding, the SSE usage tap).
A request therefore never leaves the event-loop thread: no thread hand-off,
no GIL hand-off, per request or per chunk.

```
send(method, url, headers, body)
  -> a pooled idle connection for (scheme, host, port), or a new one (connect timeout)
  -> transport.write(encode_request(...))           one write
  -> data_received -> reader.feed(bytes)            head, then body, in Rust
  <- Response once the head (SSE) or the whole body (JSON) is in (first-byte timeout)
Response.next_chunk() -> what the reader decoded since the last call (idle timeout)
complete + keep-alive -> back to the pool; anything else closes the connection
```

A non-SSE response also has a total deadline (`total_timeout`), so a
provider trickling bytes under the idle timeout cannot hold a client for
ever; an SSE stream runs as long as it keeps sending.

A request is sent once. A pooled connection seen closing is replaced before
any byte goes out, but once the request was handed to a connection it is
never replayed, whatever happens next: the provider may have acted on it.

Errors are the core's `UpstreamConnectError` / `UpstreamTimeout` /
`UpstreamProtocolError`; their messages name the failure, never a header.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import ssl
import time

from lectr import _core
from lectr.gateway.upstream_conn import PENDING, Connection, ParsedURL

log = logging.getLogger("lectr.upstream")
_URL_CACHE = 1024


class Response:
    """A provider's response: head and (JSON) body at once, or SSE as it arrives."""

    __slots__ = ("_conn", "_done", "_pool", "_reader", "body_complete", "closed_early", "is_sse", "status")

    def __init__(self, reader: _core.ResponseReader, conn: Connection, pool: Upstream) -> None:
        self._reader = reader
        self._conn: Connection | None = conn
        self._pool = pool
        self.status = reader.status
        self.is_sse = reader.is_sse
        self.body_complete = reader.body_complete
        self.closed_early = False
        self._done = False
        if reader.done:
            self._release()

    def __del__(self) -> None:
        # A caller that drops a response mid-body (an exception on its way to
        # the client, a webhook that only wanted the status) must not leave
        # the provider connection open and paused: nothing else would close it.
        if not self._done and self._conn is not None:
            self._conn.abort()

    @property
    def headers(self) -> list[tuple[str, str]]:
        """Response headers for the client (hop-by-hop removed)."""
        return self._reader.headers

    @property
    def body(self) -> bytes | None:
        """The buffered body of a non-SSE response (its prefix past the cap)."""
        return self._reader.body

    @property
    def usage(self) -> tuple[int | None, int | None, int] | None:
        """(prompt, completion, cached) as the provider reported, or None."""
        return self._reader.usage

    @property
    def usage_extra(self) -> tuple[int, int] | None:
        """(cache_write, reasoning) tokens of a Responses / Messages response."""
        return self._reader.usage_extra

    @property
    def saw_done(self) -> bool:
        return self._reader.saw_done

    @property
    def declared_length(self) -> int | None:
        """The body length the provider declared, None for chunked or until-close."""
        return self._reader.declared_length

    def _release(self) -> None:
        """The message is over: the connection goes back to the pool or closes."""
        if self._done:
            return
        self._done = True
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn, self._reader)

    async def next_chunk(self) -> bytes | None:
        """The next bytes for the client, or None at the end of the body."""
        reader = self._reader
        while True:
            chunk = reader.take()
            conn = self._conn
            if chunk is not None:
                if conn is not None and conn.paused and conn.transport is not None:
                    conn.paused = False
                    conn.transport.resume_reading()
                return chunk
            if conn is None or reader.done:
                self._release()
                return None
            if conn.error is not None:
                self._release()
                conn.raise_error()
            if conn.closed:
                self._release()
                raise _core.UpstreamProtocolError("the provider connection closed mid-stream")
            try:
                await conn.wait(self._pool.loop())
            except BaseException:
                self._release()
                raise

    def close(self) -> None:
        """Stop reading and close the provider connection (client went away)."""
        if self._done:
            return
        if not self._reader.done:
            self.closed_early = True
            if self._conn is not None:
                self._conn.abort()
                self._conn.wake()
        self._release()

    async def estimate_usage(self, request_body: bytes, model: str) -> tuple[int, int]:
        """Estimated (prompt, completion) tokens, counted on an executor thread."""
        response, from_stream = self._reader.completion_source()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None, _core.estimate_usage, request_body, model, response, from_stream
        )


class Upstream:
    """Pooled keep-alive HTTP/1.1 connections to providers."""

    def __init__(
        self,
        connect_timeout: float = 5.0,
        first_byte_timeout: float = 120.0,
        idle_timeout: float = 120.0,
        pool_idle_timeout: float = 60.0,
        pool_max_idle_per_host: int = 512,
        max_buffered_body: int = 64 << 20,
        max_sse_event: int = 4 << 20,
        total_timeout: float = 600.0,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.first_byte_timeout = first_byte_timeout
        self.idle_timeout = idle_timeout
        self.max_sse_event = max_sse_event
        self.total_timeout = total_timeout
        self.pool_idle_timeout = pool_idle_timeout
        self.pool_max_idle = pool_max_idle_per_host
        self.max_buffered_body = max_buffered_body
        self._idle: dict[tuple[bool, str, int], collections.deque[Connection]] = {}
        self._targets: dict[str, ParsedURL] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ssl: ssl.SSLContext | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # Connections belong to the loop that opened them.
            self.close()
            self._loop = loop
        return loop

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            ctx = ssl.create_default_context()
            ctx.set_alpn_protocols(["http/1.1"])
            self._ssl = ctx
        return self._ssl

    def _target(self, url: str) -> ParsedURL:
        t = self._targets.get(url)
        if t is None:
            t = ParsedURL(url)
            if len(self._targets) >= _URL_CACHE:
                self._targets.clear()
            self._targets[url] = t
        return t

    async def _connect(self, t: ParsedURL, loop: asyncio.AbstractEventLoop) -> Connection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: Connection(t.key),
                    t.host,
                    t.port,
                    ssl=self._tls() if t.tls else None,
                    server_hostname=t.host if t.tls else None,
                )
        except TimeoutError:
            raise _core.UpstreamTimeout("connect") from None
        except ssl.SSLError as e:
            # The client is told what failed, not where: the provider's host
            # and port are the operator's business, so only the log has them.
            log.warning("TLS handshake with %s:%s failed: %s", t.host, t.port, e.reason)
            raise _core.UpstreamConnectError(f"TLS handshake failed: {e.reason}") from None
        except OSError as e:
            # From the errno: asyncio's strerror can hold the address.
            reason = os.strerror(e.errno) if e.errno else type(e).__name__
            log.warning("cannot connect to %s:%s: %s", t.host, t.port, reason)
            raise _core.UpstreamConnectError(f"cannot connect: {reason}") from None
        return conn

    def _take_idle(self, key: tuple[bool, str, int]) -> Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        horizon = time.monotonic() - self.pool_idle_timeout
        while idle:
            conn = idle.pop()
            if conn.closed or conn.idle_since < horizon:
                conn.abort()
                continue
            return conn
        return None

    def release(self, conn: Connection, reader: _core.ResponseReader) -> None:
        """A response is over: pool its connection if it can carry another."""
        conn.reader = None
        conn.waiter = None
        if conn.closed or conn.error is not None or not reader.done or not reader.keep_alive or conn.paused:
            conn.abort()
            return
        idle = self._idle.setdefault(conn.key, collections.deque())
        if len(idle) >= self.pool_max_idle:
            conn.abort()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def send(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        auth_style: str = "bearer",
        strip_usage: bool = False,
        protocol: str = "chat",
    ) -> Response:
        """Send a request; returns once the head (SSE) or the whole body arrived.

        `headers` are the client's: hop-by-hop, `X-Lectr-*` and
        `accept-encoding` are dropped and `authorization` rewritten for
        `auth_style`. With `strip_usage`, usage the gateway asked for on the
        client's behalf is removed from an SSE stream. `protocol` (chat,
        responses, messages) says how usage is read.
        """
        loop = self.loop()
        t = self._target(url)
        request = _core.encode_request(method, t.target, t.host_header, headers, body, auth_style)
        conn = self._take_idle(t.key)
        if conn is None or conn.transport is None or conn.transport.is_closing():
            if conn is not None:
                conn.abort()
            conn = await self._connect(t, loop)
        reader = _core.ResponseReader(
            self.max_buffered_body, strip_usage, method == "HEAD", self.max_sse_event, protocol
        )
        conn.reader = reader
        conn.error = None
        conn.idle_limit = self.idle_timeout
        conn.last_data = now = time.monotonic()
        conn.deadline = now + self.total_timeout
        assert conn.transport is not None
        # From here on the request may have reached the provider: no retry.
        conn.transport.write(request)
        try:
            await conn.wait(loop, self.first_byte_timeout)
            if reader.is_sse:
                conn.deadline = 0.0  # a stream runs as long as it keeps sending
            while reader.phase == PENDING:
                # Head in, a JSON body still arriving.
                await conn.wait(loop)
        except BaseException:
            conn.reader = None
            conn.abort()
            raise
        return Response(reader, conn, self)

    def close(self) -> None:
        """Close every idle connection."""
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()
