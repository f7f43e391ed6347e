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

Errors are the core's `UpstreamConnectError` / `UpstreamTimeout` /
`UpstreamProtocolError`; their messages name the failure, never a header.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from urllib.parse import urlsplit

from lectr import _core

# What `ResponseReader.feed` returns.
_PENDING, _STREAMING, _DONE = 0, 1, 2
# Pause reading a provider's stream while this much waits for a slow client.
_HIGH_WATER = 1 << 20
_URL_CACHE = 1024


class _Target:
    """A parsed URL: where to connect and what to put in the request line."""

    __slots__ = ("host", "host_header", "key", "port", "target", "tls")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _core.UpstreamConnectError(f"unsupported upstream URL scheme {parts.scheme!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        try:
            port = parts.port
        except ValueError:
            raise _core.UpstreamConnectError("invalid port in the upstream URL") from None
        self.port = port or (443 if self.tls else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if port is None else f"{host}:{port}"
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.key = (self.tls, self.host, self.port)


class _Conn(asyncio.Protocol):
    """One keep-alive connection; carries one request at a time."""

    __slots__ = (
        "closed",
        "error",
        "idle_limit",
        "idle_since",
        "key",
        "last_data",
        "paused",
        "reader",
        "timer",
        "transport",
        "waiter",
    )

    def __init__(self, key: tuple[bool, str, int]) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.reader: _core.ResponseReader | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.error: BaseException | None = None
        self.closed = False
        self.paused = False
        self.idle_since = 0.0
        self.last_data = 0.0
        self.idle_limit = 0.0

    # --- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        if reader is None:
            # Bytes on an idle connection: it is out of step; never reuse it.
            self.abort()
            return
        self.last_data = time.monotonic()
        try:
            phase = reader.feed(data)
        except _core.UpstreamProtocolError as e:
            self.fail(e)
            return
        if phase != _PENDING:
            if not self.paused and reader.pending > _HIGH_WATER and self.transport is not None:
                self.transport.pause_reading()
                self.paused = True
            self.wake()

    def eof_received(self) -> bool | None:
        reader = self.reader
        if reader is not None:
            try:
                reader.eof()
            except _core.UpstreamProtocolError as e:
                self.fail(e)
                return None
            self.wake()
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        reader = self.reader
        if reader is not None and not reader.done and self.error is None:
            self.error = _core.UpstreamProtocolError(
                "the provider closed the connection before the response was complete"
            )
        self.wake()

    # --- used by the client -----------------------------------------------

    def wake(self) -> None:
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)

    def fail(self, e: BaseException) -> None:
        if self.error is None:
            self.error = e.with_traceback(None)
        self.abort()
        self.wake()

    def raise_error(self) -> None:
        """Raise the connection's failure as a fresh exception. The stored one
        never gets a traceback: one would keep the awaiting frames alive (a
        reference cycle through this connection), and with them granian's
        stream transport, whose release is what ends the client's response."""
        e = self.error
        if e is not None:
            raise type(e)(*e.args)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _timed_out(self, which: str) -> None:
        """Timer callback. Before the head it is the first-byte timeout; after
        it, the idle timeout, measured from the last bytes received."""
        self.timer = None
        reader = self.reader
        if self.waiter is None or reader is None:
            return
        if which == "first_byte" and reader.status == 0:
            self.fail(_core.UpstreamTimeout("first_byte"))
            return
        quiet = time.monotonic() - self.last_data
        if quiet < self.idle_limit:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(self.idle_limit - quiet, self._timed_out, "idle")
            return
        self.fail(_core.UpstreamTimeout("idle"))

    async def wait(self, loop: asyncio.AbstractEventLoop, first_byte: float | None = None) -> None:
        """Until the reader has news for the caller, the connection fails, or
        a timeout runs out: `first_byte` seconds while the head is awaited,
        else the connection's idle timeout."""
        fut: asyncio.Future[None] = loop.create_future()
        self.waiter = fut
        if first_byte is None:
            self.timer = loop.call_later(self.idle_limit, self._timed_out, "idle")
        else:
            self.timer = loop.call_later(first_byte, self._timed_out, "first_byte")
        try:
            await fut
        finally:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.waiter = None
        self.raise_error()


class Response:
    """A provider's response: head and (JSON) body at once, or SSE as it arrives."""

    __slots__ = ("_conn", "_done", "_pool", "_reader", "body_complete", "closed_early", "is_sse", "status")

    def __init__(self, reader: _core.ResponseReader, conn: _Conn, pool: Upstream) -> None:
        self._reader = reader
        self._conn: _Conn | None = conn
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
    ) -> None:
        self.connect_timeout = connect_timeout
        self.first_byte_timeout = first_byte_timeout
        self.idle_timeout = idle_timeout
        self.max_sse_event = max_sse_event
        self.pool_idle_timeout = pool_idle_timeout
        self.pool_max_idle = pool_max_idle_per_host
        self.max_buffered_body = max_buffered_body
        self._idle: dict[tuple[bool, str, int], collections.deque[_Conn]] = {}
        self._targets: dict[str, _Target] = {}
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

    def _target(self, url: str) -> _Target:
        t = self._targets.get(url)
        if t is None:
            t = _Target(url)
            if len(self._targets) >= _URL_CACHE:
                self._targets.clear()
            self._targets[url] = t
        return t

    async def _connect(self, t: _Target, loop: asyncio.AbstractEventLoop) -> _Conn:
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Conn(t.key),
                    t.host,
                    t.port,
                    ssl=self._tls() if t.tls else None,
                    server_hostname=t.host if t.tls else None,
                )
        except TimeoutError:
            raise _core.UpstreamTimeout("connect") from None
        except ssl.SSLError as e:
            raise _core.UpstreamConnectError(f"TLS handshake with {t.host} failed: {e.reason}") from None
        except OSError as e:
            raise _core.UpstreamConnectError(
                f"cannot connect to {t.host}:{t.port}: {e.strerror or type(e).__name__}"
            ) from None
        return conn

    def _take_idle(self, key: tuple[bool, str, int]) -> _Conn | None:
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

    def release(self, conn: _Conn, reader: _core.ResponseReader) -> None:
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
        for attempt in range(2):
            conn = self._take_idle(t.key)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(t, loop)
            reader = _core.ResponseReader(
                self.max_buffered_body, strip_usage, method == "HEAD", self.max_sse_event, protocol
            )
            conn.reader = reader
            conn.error = None
            conn.idle_limit = self.idle_timeout
            conn.last_data = time.monotonic()
            assert conn.transport is not None
            conn.transport.write(request)
            try:
                await conn.wait(loop, self.first_byte_timeout)
                while reader.phase == _PENDING:
                    # Head in, a JSON body still arriving.
                    await conn.wait(loop)
            except _core.UpstreamProtocolError:
                conn.reader = None
                conn.abort()
                if reused and attempt == 0 and reader.received == 0:
                    # The provider had closed the pooled connection before
                    # our request reached it: once more on a new one.
                    continue
                raise
            except BaseException:
                conn.reader = None
                conn.abort()
                raise
            return Response(reader, conn, self)
        raise _core.UpstreamProtocolError("the provider closed the connection without a response")

    def close(self) -> None:
        """Close every idle connection."""
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()
