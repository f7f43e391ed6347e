"""What the handler reads from the client before anything else: the tag
headers (percent-decoded, capped) and the request body (within the cap)."""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import unquote

from lectr.errors import ClientClosed, InvalidRequest, RequestTooLarge

FEATURE_CAP = 256
UNTAGGED = "untagged"


def header_value(headers: Any, name: str, cap: int) -> str | None:
    """A tag header's value, percent-decoded (UTF-8) and capped. HTTP header
    values are ASCII on the wire in practice, and granian hands any other
    byte to the app as no value at all (its RSGI headers offer no raw
    bytes), so a UTF-8 tag is sent percent-encoded: `caf%C3%A9` is `café`.
    A raw non-ASCII value is refused rather than recorded as untagged."""
    v: str | None = headers.get(name)
    if v is None and name in headers:
        raise InvalidRequest(
            f"{name} must be ASCII; send other characters percent-encoded as UTF-8 (café: caf%C3%A9)"
        )
    if not v:
        return None
    if "%" in v:
        with contextlib.suppress(UnicodeDecodeError):
            v = unquote(v, errors="strict")
    return v[:cap] or None


async def read_body(scope: Any, proto: Any, max_body: int) -> bytes:
    """The request body, within the cap. A declared length is checked up
    front and the body read in one call; a chunked body has no length to
    check, so it is counted while it arrives (reading it whole first let
    one request hold any amount of memory) and stops at the first chunk
    past the cap."""
    declared = scope.headers.get("content-length")
    if declared and declared.isdigit():
        length = int(declared)
        if length > max_body:
            raise RequestTooLarge(f"request body is {declared} bytes; the limit is {max_body}")
        # One await instead of one per chunk (the floor's way; issue 18).
        # A length-framed body cannot be malformed, only cut short: granian
        # raises its RSGIProtocolError (a RuntimeError) when the client
        # hangs up first.
        try:
            body: bytes = await proto()
        except RuntimeError:
            body = b""
        if len(body) < length:
            raise ClientClosed("the client closed the connection before the request body was complete")
        return body
    parts: list[bytes] = []
    size = 0
    broken = False
    pending_empty = False
    # granian's body iterator never raises: a read error (a malformed
    # chunk, a connection closed mid-body) comes as an empty chunk, and
    # the end of the body as one more. Data frames are never empty, so an
    # empty chunk followed by anything means the body broke.
    async for chunk in proto:
        if pending_empty:
            broken = True
        if not chunk:
            pending_empty = True
            continue
        size += len(chunk)
        if size > max_body:
            raise RequestTooLarge(f"request body exceeds the limit of {max_body} bytes")
        parts.append(chunk)
    if broken:
        raise InvalidRequest("the request body is malformed or incomplete (chunked encoding)")
    return b"".join(parts)
