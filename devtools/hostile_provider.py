"""A hostile provider for the tests: an asyncio socket server whose every answer is chosen per request.

Run it with `python -m devtools.hostile_provider --port N` (or start `serve()`
on a loop). A request picks its mode with the `x-hostile` header; `ok` (the
default) answers a well-formed chat completion, JSON or SSE as the body's
`stream` asks, on a keep-alive connection. The other modes:

```
status-NNN          the status line `HTTP/1.1 NNN X` (000, 099, 600, 999 ...)
bad-head            a header line with no colon
bad-length          content-length: abc
bad-chunk           a chunk-size line that is not hex
absurd-usage        a 200 whose usage is 2^70 prompt and -5 completion tokens
endless-line        SSE head, then one line of x-hostile-size bytes (64 MiB) with no newline
trickle             JSON head with content-length 1000, then one byte every x-hostile-interval s
reset-before-head   read the request, then a TCP reset
reset-mid-head      half a head, then a reset
reset-mid-body      a JSON head (content-length 100), 10 bytes, then a reset
reset-mid-stream    an SSE head and two events, then a reset
close-after-read    read the request, then close (FIN) without a byte
truncate-json       content-length x-hostile-size (100), a tenth of it, then FIN
truncate-sse        a chunked SSE head and two events, then FIN (no last chunk)
```

`GET /_hostile/stats` answers `{"requests": {id: n}, "total": n}`: how many
requests arrived per `x-hostile-id` header, to prove nothing was sent twice.
Self-contained (standard library only) so that it can move with the dev tools.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import struct
from collections import Counter

_counts: Counter[str] = Counter()
_total = [0]  # requests received, every mode (a list: mutated, not rebound)

_CHUNK = 64 << 10


def _completion(usage: dict[str, int] | None = None) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-hostile",
            "object": "chat.completion",
            "created": 0,
            "model": "gpt-4o-mini",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
            ],
            "usage": usage or {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        }
    ).encode()


def _event(content: str) -> bytes:
    data = {
        "id": "chatcmpl-hostile",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def _usage_event() -> bytes:
    data = {
        "id": "chatcmpl-hostile",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _json_head(length: int, status: bytes = b"200 OK") -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % (status, length)


SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def _reset(w: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0) instead of a FIN."""
    sock = w.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    w.transport.abort()


async def _read_request(r: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes] | None:
    try:
        head = await r.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    body = await r.readexactly(int(headers.get("content-length", "0") or 0))
    return lines[0].encode(), headers, body


async def _answer(
    mode: str, headers: dict[str, str], body: bytes, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> bool:
    """Answer one request; True when the connection may carry another."""
    try:
        stream = bool(json.loads(body or b"{}").get("stream"))
    except (ValueError, AttributeError):
        stream = False
    size = int(headers.get("x-hostile-size", "0") or 0)
    interval = float(headers.get("x-hostile-interval", "0.5") or 0.5)
    if mode == "ok":
        if stream:
            w.write(SSE_HEAD)
            for piece in (_event("hi"), _event(" there"), _usage_event(), b"data: [DONE]\n\n"):
                w.write(_chunk(piece))
            w.write(b"0\r\n\r\n")
        else:
            out = _completion()
            w.write(_json_head(len(out)) + out)
        await w.drain()
        return True
    if mode.startswith("status-"):
        code = mode.removeprefix("status-").encode()
        if stream:
            w.write(SSE_HEAD.replace(b"200 OK", code + b" X", 1) + _chunk(_event("hi")) + b"0\r\n\r\n")
        else:
            out = _completion()
            w.write(_json_head(len(out), code + b" X") + out)
    elif mode == "bad-head":
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nthis line has no colon\r\n\r\n{}")
    elif mode == "bad-length":
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: abc\r\n\r\n{}")
    elif mode == "bad-chunk":
        w.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
            b"zz\r\n{}\r\n0\r\n\r\n"
        )
    elif mode == "absurd-usage":
        out = _completion({"prompt_tokens": 2**70, "completion_tokens": -5, "total_tokens": 2**70})
        w.write(_json_head(len(out)) + out)
    elif mode == "endless-line":
        w.write(SSE_HEAD + _chunk(_event("hi")))
        left = size or 64 << 20
        w.write(_chunk(b"data: "))
        block = _chunk(b"x" * _CHUNK)
        while left > 0:
            w.write(block)
            left -= _CHUNK
            await w.drain()
        # Hold the connection: the gateway must give up on its own.
        await r.read()
        return False
    elif mode == "trickle":
        w.write(_json_head(1000))
        await w.drain()
        for _ in range(1000):
            await asyncio.sleep(interval)
            w.write(b" ")
            await w.drain()
        return False
    elif mode == "reset-before-head":
        _reset(w)
        return False
    elif mode == "reset-mid-head":
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: appli")
        await w.drain()
        await asyncio.sleep(0.05)
        _reset(w)
        return False
    elif mode == "reset-mid-body":
        w.write(_json_head(100) + b'{"id": "ch')
        await w.drain()
        await asyncio.sleep(0.05)
        _reset(w)
        return False
    elif mode == "reset-mid-stream":
        w.write(SSE_HEAD + _chunk(_event("hi")) + _chunk(_event(" there")))
        await w.drain()
        await asyncio.sleep(0.05)
        _reset(w)
        return False
    elif mode == "close-after-read":
        pass
    elif mode == "truncate-json":
        total = size or 100
        w.write(_json_head(total) + b"{" + b" " * (total // 10))
    elif mode == "truncate-sse":
        w.write(SSE_HEAD + _chunk(_event("hi")) + _chunk(_event(" there")))
    else:
        out = b'{"error": "unknown x-hostile mode"}'
        w.write(_json_head(len(out), b"400 Bad Request") + out)
    await w.drain()
    return False


async def _serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    try:
        while True:
            req = await _read_request(r)
            if req is None:
                return
            line, headers, body = req
            if line.startswith(b"GET /_hostile/stats"):
                out = json.dumps({"requests": dict(_counts), "total": _total[0]}).encode()
                w.write(_json_head(len(out)) + out)
                await w.drain()
                continue
            _total[0] += 1
            _counts[headers.get("x-hostile-id", "")] += 1
            if not await _answer(headers.get("x-hostile", "ok"), headers, body, r, w):
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        w.close()


async def serve(host: str, port: int) -> None:
    server = await asyncio.start_server(_serve, host, port, limit=1 << 20)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
