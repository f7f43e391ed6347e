"""One keep-alive connection to a provider: the asyncio protocol that feeds
the Rust response reader, wakes the waiting request, pauses reading for a
slow client, and enforces the first-byte, idle and total timeouts; and the
parsed URL it connects to."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

from lectr import _core

# What `ResponseReader.feed` returns.
PENDING, STREAMING, DONE = 0, 1, 2
# Pause reading a provider's stream while this much waits for a slow client.
HIGH_WATER = 1 << 20


class ParsedURL:
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


class Connection(asyncio.Protocol):
    """One keep-alive connection; carries one request at a time."""

    __slots__ = (
        "closed",
        "deadline",
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
        # When the whole response must be in (monotonic), 0 for none.
        self.deadline = 0.0

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
        if phase != PENDING:
            if not self.paused and reader.pending > HIGH_WATER and self.transport is not None:
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
        now = time.monotonic()
        if self.deadline and now >= self.deadline:
            self.fail(_core.UpstreamTimeout("total"))
            return
        if which == "first_byte" and reader.status == 0:
            self.fail(_core.UpstreamTimeout("first_byte"))
            return
        quiet = now - self.last_data
        if quiet < self.idle_limit:
            delay = self.idle_limit - quiet
            if self.deadline:
                delay = min(delay, self.deadline - now)
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(delay, self._timed_out, "idle")
            return
        self.fail(_core.UpstreamTimeout("idle"))

    async def wait(self, loop: asyncio.AbstractEventLoop, first_byte: float | None = None) -> None:
        """Until the reader has news for the caller, the connection fails, or
        a timeout runs out: `first_byte` seconds while the head is awaited,
        else the connection's idle timeout; never past the deadline."""
        fut: asyncio.Future[None] = loop.create_future()
        self.waiter = fut
        which = "idle" if first_byte is None else "first_byte"
        delay = self.idle_limit if first_byte is None else first_byte
        if self.deadline:
            delay = max(0.0, min(delay, self.deadline - time.monotonic()))
        self.timer = loop.call_later(delay, self._timed_out, which)
        try:
            await fut
        finally:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.waiter = None
        self.raise_error()
