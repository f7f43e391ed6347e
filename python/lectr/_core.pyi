"""Typed interface of the Rust extension `lectr._core` (see rust_core/src)."""

from collections.abc import Awaitable

__version__: str

class LectrCoreError(Exception):
    """Base class of every error raised by lectr._core."""

class InvalidBody(LectrCoreError):
    """The request body is not a JSON object of the expected shape."""

class UpstreamError(LectrCoreError):
    """A provider could not be reached or its response broke."""

class UpstreamConnectError(UpstreamError):
    """No connection to the provider could be established."""

class UpstreamTimeout(UpstreamError):
    """The provider did not answer within a timeout (message names which)."""

class UpstreamProtocolError(UpstreamError):
    """The provider connection broke or returned an invalid response."""

class RequestMeta:
    """The parsed top level of a request body."""

    @property
    def model(self) -> str | None:
        """The requested model, or None when the body has none."""
    @property
    def stream(self) -> bool:
        """Whether the client asked for a streamed response."""
    @property
    def include_usage(self) -> bool:
        """Whether the client itself asked for stream_options.include_usage."""
    @property
    def max_tokens(self) -> int | None:
        """max_completion_tokens or max_tokens, if set."""
    def body_for_upstream(self, model: str | None = None, inject_usage: bool = False) -> bytes:
        """The body to send upstream: the original object when nothing changes."""

def parse_request(body: bytes) -> RequestMeta:
    """Parse a request body; raises InvalidBody with a client-facing message."""

def count_tokens(text: str, model: str = "gpt-4o") -> int:
    """Tokens of text as model would count them (estimate for non-OpenAI models)."""

def estimate_prompt_tokens(body: bytes, model: str) -> int:
    """Estimated prompt tokens of a chat, completion or embedding request body."""

class UpstreamResponse:
    """A provider's response as it arrives."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> list[tuple[str, str]]:
        """Response headers for the client (hop-by-hop removed)."""
    @property
    def is_sse(self) -> bool: ...
    @property
    def body(self) -> bytes | None:
        """The buffered body of a non-SSE response."""
    @property
    def body_complete(self) -> bool: ...
    @property
    def usage(self) -> tuple[int | None, int | None, int] | None:
        """(prompt, completion, cached) as the provider reported, or None."""
    @property
    def saw_done(self) -> bool: ...
    @property
    def closed_early(self) -> bool:
        """Whether close() ended the body before the provider finished it."""
    def next_chunk(self) -> Awaitable[bytes | None]:
        """The next chunk for the client, or None at the end."""
    def close(self) -> None:
        """Stop reading and close the upstream connection."""
    def estimate_usage(self, request_body: bytes, model: str) -> Awaitable[tuple[int, int]]:
        """Estimated (prompt, completion) tokens, counted off the event loop."""

class Upstream:
    """A pooled HTTP client for provider calls."""

    def __init__(
        self,
        connect_timeout: float = 5.0,
        first_byte_timeout: float = 120.0,
        idle_timeout: float = 120.0,
        pool_idle_timeout: float = 90.0,
        pool_max_idle_per_host: int = 512,
        max_buffered_body: int = 64 << 20,
    ) -> None: ...
    def send(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        auth_style: str = "bearer",
        strip_usage: bool = False,
    ) -> Awaitable[UpstreamResponse]:
        """Send a request; resolves when headers (and a non-SSE body) arrived."""
