"""The agent protocols beside chat completions (OpenAI Responses, Anthropic
Messages): their routes, which providers answer them, their error shapes
and the error event that ends a broken stream. No I/O."""

from __future__ import annotations

import re

import msgspec

from lectr.errors import LectrError, StreamInterrupted

CHAT, RESPONSES, MESSAGES = "chat", "responses", "messages"

# Which providers answer each protocol (Azure: its v1 Responses path); a
# protocol absent here is answered by every provider. Compiled into the
# Rust core's Catalog (providers.catalog).
SERVED_BY: dict[str, frozenset[str]] = {
    RESPONSES: frozenset({"openai", "azure"}),
    MESSAGES: frozenset({"anthropic"}),
}
# The provider a request goes to when its model names none we know.
DEFAULT_PROVIDER = {RESPONSES: "openai", MESSAGES: "anthropic"}

# A stored response's id as OpenAI issues them (`resp_...`); anything else
# (slashes, dots, encoded bytes) is refused before it reaches a provider URL.
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_SUB = {"": ("GET", "DELETE"), "cancel": ("POST",), "input_items": ("GET",)}


def stored_response_route(path: str) -> tuple[str, tuple[str, ...]] | None:
    """For `/v1/responses/{id}[/cancel|/input_items]`: the upstream path and
    the methods it accepts; None for any other path."""
    if not path.startswith("/v1/responses/"):
        return None
    parts = path[len("/v1/responses/") :].split("/")
    if len(parts) > 2 or not _ID.fullmatch(parts[0]):
        return None
    sub = parts[1] if len(parts) == 2 else ""
    methods = _SUB.get(sub)
    if methods is None:
        return None
    return path[len("/v1") :], methods


class _AnthropicDetail(msgspec.Struct):
    type: str
    message: str


class _AnthropicError(msgspec.Struct, tag_field="type", tag="error"):
    error: _AnthropicDetail


_encode = msgspec.json.Encoder().encode
# OpenAI error types that Anthropic names differently.
_ANTHROPIC_TYPES = {"not_found": "not_found_error"}


def anthropic_type(e: LectrError) -> str:
    """Anthropic's error `type` for a gateway error."""
    return _ANTHROPIC_TYPES.get(e.code, e.type)


def error_body(protocol: str, e: LectrError) -> bytes:
    """The gateway's error in the endpoint's own error shape."""
    if protocol == MESSAGES:
        return _encode(_AnthropicError(_AnthropicDetail(anthropic_type(e), e.message)))
    return e.body()


class _ResponsesErrorDetail(msgspec.Struct):
    type: str
    code: str
    message: str


class _ResponsesErrorEvent(msgspec.Struct):
    type: str
    code: str
    message: str
    param: None
    # The `openai` SDK raises APIError on an event whose data has `error`.
    error: _ResponsesErrorDetail


def stream_error_event(protocol: str, message: str) -> bytes | None:
    """The SSE event that tells a client its stream broke, in the protocol's
    own terms. Chat completions has none of its own: it gets the OpenAI error
    shape as a data event in place of `data: [DONE]` (the SDKs raise on it),
    after a blank line that ends an event the provider left half-sent."""
    if protocol == MESSAGES:
        body = _encode(_AnthropicError(_AnthropicDetail("api_error", message)))
        return b"event: error\ndata: " + body + b"\n\n"
    if protocol == RESPONSES:
        detail = _ResponsesErrorDetail("server_error", "stream_interrupted", message)
        body = _encode(_ResponsesErrorEvent("error", "stream_interrupted", message, None, detail))
        return b"event: error\ndata: " + body + b"\n\n"
    if protocol == CHAT:
        return b"\n\ndata: " + StreamInterrupted(message).body() + b"\n\n"
    return None
