"""Typed interface of the Rust extension `lectr._core` (see rust_core/src)."""

__version__: str
BUILD_PROFILE: str  # "release" or "debug"

class LectrCoreError(Exception):
    """Base class of every error raised by lectr._core."""

class InvalidBody(LectrCoreError):
    """The request body is not a JSON object of the expected shape."""

class Refused(LectrCoreError):
    """A request the gateway answers itself; args are (code, message, model, provider)."""

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

class Catalog:
    """The provider table: model prefixes, auth styles, base URLs, protocols."""

    def __init__(
        self,
        providers: list[tuple[str, list[str], str, str | None]],
        served_by: dict[str, list[str]],
        default_for: dict[str, str],
        default: str,
    ) -> None: ...
    def detect(self, model: str | None, override_: str | None = None) -> tuple[str, bool]:
        """(provider, whether it was a guess); raises Refused for an unknown override."""

class Hop:
    """One step of a failover path; Plan.prepare makes its URL and body."""

    provider: str
    model: str | None
    auth_style: str

class Plan:
    """A request's decisions: its route and failover path."""

    @property
    def model(self) -> str | None: ...
    @property
    def route_model(self) -> str | None: ...
    @property
    def stream(self) -> bool: ...
    @property
    def inject_usage(self) -> bool: ...
    @property
    def max_tokens(self) -> int | None: ...
    @property
    def provider(self) -> str: ...
    @property
    def provider_unknown(self) -> bool: ...
    @property
    def rule_id(self) -> str | None: ...
    @property
    def retry_on(self) -> list[int]: ...
    def overridden(self, model: str, rule_id: str) -> Plan:
        """The plan with the route's model set by policy."""
    def hops(self) -> list[Hop]:
        """The route, then the failover targets that answer the protocol."""
    def prepare(self, hop: Hop) -> tuple[str, bytes]:
        """(URL, body) to send hop; raises Refused when it cannot be called."""

class Router:
    """The control snapshot compiled for the request path."""

    def __init__(
        self,
        keys: list[tuple[str, bytes, str]],
        orgs: list[tuple[str, str, bool, str | None, str | None]],
        rules: list[
            tuple[str, str, str | None, str | None, str | None, str | None, str | None, str | None, int]
        ],
        chains: list[tuple[str, str, list[tuple[str, str]], list[int]]],
    ) -> None: ...
    def org_id(self, key: str | None) -> str:
        """The org owning key; raises Refused."""
    def plan(
        self,
        catalog: Catalog,
        org_id: str,
        protocol: str,
        path: str,
        client_path: str,
        feature: str,
        task: str | None,
        provider: str | None,
        body: bytes | None,
        query: str,
        roll: float,
    ) -> Plan:
        """A request's decisions; raises Refused with a client-facing message."""

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
