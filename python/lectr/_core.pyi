"""Typed interface of the Rust extension `lectr._core` (see rust_core/src)."""

__version__: str
BUILD_PROFILE: str  # "release" or "debug"

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

class UpstreamBadResponse(UpstreamProtocolError):
    """The provider's response is malformed (status, head, framing or an SSE event too large)."""

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

class ResponseReader:
    """Incremental parser of one HTTP/1.1 response (no I/O: fed the bytes)."""

    def __init__(
        self,
        max_buffered: int = 64 << 20,
        strip_usage: bool = False,
        head_request: bool = False,
        max_event: int = 4 << 20,
        protocol: str = "chat",
    ) -> None:
        """`protocol`: "chat", "responses" (OpenAI) or "messages" (Anthropic)."""
    def feed(self, data: bytes) -> int:
        """0 nothing to hand on, 1 head known and body streaming, 2 complete."""
    def eof(self) -> int:
        """The provider closed the connection; raises if the response was cut short."""
    def take(self) -> bytes | None:
        """Streamed bytes for the client since the last call, or None."""
    @property
    def phase(self) -> int: ...
    @property
    def pending(self) -> int: ...
    @property
    def received(self) -> int: ...
    @property
    def declared_length(self) -> int | None:
        """The body length the provider declared in content-length, None if chunked or until-close."""
    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> list[tuple[str, str]]:
        """Response headers for the client (hop-by-hop removed)."""
    @property
    def is_sse(self) -> bool: ...
    @property
    def keep_alive(self) -> bool: ...
    @property
    def done(self) -> bool: ...
    @property
    def body(self) -> bytes | None:
        """The buffered body of a non-SSE response (or its prefix past the cap)."""
    @property
    def body_complete(self) -> bool: ...
    @property
    def usage(self) -> tuple[int | None, int | None, int] | None:
        """(prompt, completion, cached) as the provider reported, or None."""
    @property
    def saw_done(self) -> bool:
        """`data: [DONE]`, or the Responses / Messages terminal event, arrived."""
    @property
    def usage_extra(self) -> tuple[int, int] | None:
        """(cache_write, reasoning) tokens of a Responses / Messages response."""
    def completion_source(self) -> tuple[bytes, bool]:
        """Retained SSE deltas (True) or the buffered body (False)."""

def encode_request(
    method: str,
    target: str,
    host: str,
    headers: list[tuple[str, str]],
    body: bytes,
    auth_style: str = "bearer",
) -> bytes:
    """The request bytes for the provider (headers filtered and auth rewritten)."""

def estimate_usage(request_body: bytes, model: str, response: bytes, from_stream: bool) -> tuple[int, int]:
    """Estimated (prompt, completion) tokens; releases the GIL."""
