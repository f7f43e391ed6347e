"""An OpenAI-compatible mock provider shared by the tests and the benchmarks.

Run: `python -m devtools.mock_provider --port 9000 [--latency-ms 0]
[--chunks 5] [--interval-ms 0]`. It answers chat completions, completions,
embeddings and model listings under any path prefix (so it can stand in for
OpenAI, Anthropic, Groq, Gemini and Azure base URLs), JSON or SSE, and takes
per-request instructions from `x-mock-*` headers (the OpenAI Responses and
Anthropic Messages endpoints live in `mock_protocols.py`):

| header                  | effect                                              |
|-------------------------|-----------------------------------------------------|
| x-mock-status: 500      | answer with that status and an OpenAI error body    |
| x-mock-latency-ms: 200  | wait before sending the response headers            |
| x-mock-chunks: 20       | content chunks in a stream (default --chunks)       |
| x-mock-interval-ms: 5   | pause between stream chunks (default --interval-ms) |
| x-mock-reset-after: 3   | abort the connection after that many chunks         |
| x-mock-no-usage: 1      | never report usage (tests token estimation)         |
| x-mock-cached: 4        | report that many cached prompt tokens               |
| x-mock-only-path: /groq | apply the x-mock-* headers only to paths that start |
|                         | with this prefix (to fail one provider of several)  |
| x-mock-stamp: 1         | append `@<time.monotonic_ns()>` to each streamed    |
|                         | content word, taken as it is sent (default --stamp) |

Usage is deterministic: prompt_tokens = len(body) // 4, completion_tokens =
number of content chunks. Streams include usage only when the request asks
with `stream_options.include_usage`, with `"usage":null` on the other chunks,
as OpenAI does. `GET /_mock/requests` returns what was received (method, path,
query, headers, body); `DELETE /_mock/requests` clears it; `GET /_mock/stats`
counts streams finished and streams whose client went away.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from aiohttp import web

from devtools import mock_protocols

LOG: web.AppKey[list[dict[str, Any]]] = web.AppKey("log", list)
STATS: web.AppKey[dict[str, int]] = web.AppKey("stats", dict)
DEFAULTS: web.AppKey[argparse.Namespace] = web.AppKey("defaults", argparse.Namespace)

WORDS = ["Hello", " from", " the", " mock", " provider", "."]


def _num(request: web.Request, name: str, default: float) -> float:
    only = request.headers.get("x-mock-only-path")
    if only and not request.path.startswith(only):
        return default
    v = request.headers.get(name)
    return float(v) if v else default


def _usage(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


async def handle(request: web.Request) -> web.StreamResponse:
    d = request.app[DEFAULTS]
    raw = await request.read()
    request.app[LOG].append(
        {
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body": raw.decode("utf-8", "replace"),
        }
    )
    latency = _num(request, "x-mock-latency-ms", d.latency_ms)
    if latency:
        await asyncio.sleep(latency / 1000)
    status = int(_num(request, "x-mock-status", 200))
    path = request.path
    if status >= 400 and mock_protocols.is_messages(path):
        return mock_protocols.anthropic_error(status, f"mock error {status}")
    if status >= 400:
        err = {"error": {"message": f"mock error {status}", "type": "mock_error", "code": str(status)}}
        return web.json_response(err, status=status, headers={"x-mock-error": "1"})

    proto = mock_protocols.responses if mock_protocols.is_responses(path) else None
    if mock_protocols.is_messages(path):
        proto = mock_protocols.messages
    if proto is not None:
        return await proto(request, raw, lambda n, dflt: _num(request, n, dflt), request.app[STATS], d)
    if path.endswith("/models"):
        return web.json_response({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]})
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        return web.json_response(
            {"error": {"message": "bad json", "type": "invalid_request_error"}}, status=400
        )
    model = body.get("model", "unknown")
    no_usage = _num(request, "x-mock-no-usage", 0) == 1
    cached = int(_num(request, "x-mock-cached", 0))
    prompt_tokens = len(raw) // 4
    created = 1_700_000_000  # fixed, so responses are byte-comparable

    if path.endswith("/embeddings"):
        inputs = body.get("input", [])
        n = len(inputs) if isinstance(inputs, list) else 1
        out: dict[str, Any] = {
            "object": "list",
            "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(n)],
        }
        if not no_usage:
            out["usage"] = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
        return web.json_response(out, headers={"x-mock-kind": "embeddings"})

    chunks = int(_num(request, "x-mock-chunks", d.chunks))
    legacy = path.endswith("/completions") and not path.endswith("/chat/completions")
    if not body.get("stream"):
        text = "".join(WORDS[i % len(WORDS)] for i in range(chunks))
        choice: dict[str, Any] = (
            {"index": 0, "text": text, "finish_reason": "stop"}
            if legacy
            else {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        )
        out = {
            "id": "cmpl-mock",
            "object": "text_completion" if legacy else "chat.completion",
            "created": created,
            "model": model,
            "choices": [choice],
        }
        if not no_usage:
            out["usage"] = _usage(prompt_tokens, chunks, cached)
        return web.json_response(out, headers={"x-mock-kind": "json"})

    include_usage = bool((body.get("stream_options") or {}).get("include_usage")) and not no_usage
    interval = _num(request, "x-mock-interval-ms", d.interval_ms) / 1000
    reset_after = int(_num(request, "x-mock-reset-after", -1))
    stamp = _num(request, "x-mock-stamp", 1 if d.stamp else 0) == 1
    resp = web.StreamResponse(headers={"content-type": "text/event-stream", "x-mock-kind": "sse"})
    await resp.prepare(request)

    def event(payload: dict[str, Any]) -> bytes:
        if include_usage:
            payload["usage"] = payload.get("usage")
        return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

    base = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": created, "model": model}
    try:
        for i in range(chunks):
            if i == reset_after:
                assert request.transport is not None
                request.transport.abort()
                request.app[STATS]["resets"] += 1
                return resp
            word = WORDS[i % len(WORDS)]
            if stamp:  # the benchmarks measure each chunk's transit time with it
                word = f"{word}@{time.monotonic_ns()}"
            delta: dict[str, Any] = (
                {"index": 0, "text": word} if legacy else {"index": 0, "delta": {"content": word}}
            )
            await resp.write(event({**base, "choices": [delta]}))
            if interval:
                await asyncio.sleep(interval)
        if include_usage:
            await resp.write(event({**base, "choices": [], "usage": _usage(prompt_tokens, chunks, cached)}))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
    except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
        request.app[STATS]["client_gone"] += 1
        raise
    request.app[STATS]["streams_done"] += 1
    return resp


async def get_log(request: web.Request) -> web.Response:
    return web.json_response(request.app[LOG])


async def clear_log(request: web.Request) -> web.Response:
    request.app[LOG].clear()
    return web.json_response({"cleared": True})


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATS])


def make_app(
    latency_ms: float = 0, chunks: int = 5, interval_ms: float = 0, stamp: bool = False
) -> web.Application:
    app = web.Application(client_max_size=16 << 20, handler_args={"tcp_keepalive": False})
    app[LOG] = []
    app[STATS] = {"streams_done": 0, "client_gone": 0, "resets": 0}
    app[DEFAULTS] = argparse.Namespace(
        latency_ms=latency_ms, chunks=chunks, interval_ms=interval_ms, stamp=stamp
    )
    app.router.add_get("/_mock/requests", get_log)
    app.router.add_delete("/_mock/requests", clear_log)
    app.router.add_get("/_mock/stats", get_stats)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--latency-ms", type=float, default=0)
    p.add_argument("--chunks", type=int, default=5)
    p.add_argument("--interval-ms", type=float, default=0)
    p.add_argument("--stamp", action="store_true", help="stamp streamed content (see x-mock-stamp)")
    a = p.parse_args()
    print(f"mock upstream on http://{a.host}:{a.port}", flush=True)
    web.run_app(
        make_app(a.latency_ms, a.chunks, a.interval_ms, a.stamp),
        host=a.host,
        port=a.port,
        print=None,
        access_log=None,
    )


if __name__ == "__main__":
    main()
