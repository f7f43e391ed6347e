"""The mock provider's OpenAI Responses and Anthropic Messages endpoints, with
the event names, shapes and usage placement the providers document.

Responses (`POST .../responses`): JSON, or typed SSE events
`response.created`, `response.in_progress`, `response.output_item.added`,
`response.content_part.added`, `response.output_text.delta` ..., `*.done`,
`response.completed` whose `response.usage` carries `input_tokens`,
`input_tokens_details.cached_tokens` / `.cache_write_tokens`, `output_tokens` and
`output_tokens_details.reasoning_tokens` (a reasoning item precedes the
message when reasoning tokens are asked for). `GET/DELETE .../responses/{id}`,
`POST .../responses/{id}/cancel` and `GET .../responses/{id}/input_items`
answer too.

Messages (`POST .../messages`, `.../messages/count_tokens`): JSON, or
`message_start` (usage: `input_tokens`, `cache_creation_input_tokens`,
`cache_read_input_tokens`, `output_tokens: 1`), `content_block_start`, `ping`,
`content_block_delta` ..., `content_block_stop`, `message_delta` (cumulative
`output_tokens`), `message_stop`. Errors in Anthropic's shape.

Usage is deterministic: input = len(body) // 4 (for Messages, the part not
read from or written to the cache), output = content deltas + reasoning.
Headers: `x-mock-cached` (cache reads), `x-mock-cache-write` (cache writes),
`x-mock-reasoning` (reasoning tokens, Responses),
`x-mock-reset-after: N` (abort the connection after N content deltas),
`x-mock-no-usage: 1`, `x-mock-chunks`, `x-mock-interval-ms`, `x-mock-stamp`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

WORDS = ["Hello", " from", " the", " mock", " provider", "."]
CREATED = 1_700_000_000  # fixed, so responses are byte-comparable

Num = Callable[[str, float], float]


def _dump(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _sse(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _dump(payload) + b"\n\n"


def is_responses(path: str) -> bool:
    return path.endswith("/responses") or "/responses/" in path


def is_messages(path: str) -> bool:
    return path.endswith("/messages") or path.endswith("/messages/count_tokens")


def _words(n: int, stamp: bool) -> list[str]:
    out = []
    for i in range(n):
        w = WORDS[i % len(WORDS)]
        out.append(f"{w}@{time.monotonic_ns()}" if stamp else w)
    return out


async def _stream(
    request: web.Request,
    events: list[tuple[str, dict[str, Any]] | str],
    interval: float,
    reset_after: int,
    stats: dict[str, int],
) -> web.StreamResponse:
    """Send `events`; a str entry marks where a content delta was sent (for
    the reset count and the pause)."""
    resp = web.StreamResponse(headers={"content-type": "text/event-stream", "x-mock-kind": "sse"})
    await resp.prepare(request)
    deltas = 0
    try:
        for ev in events:
            if isinstance(ev, str):
                deltas += 1
                if deltas == reset_after:
                    assert request.transport is not None
                    request.transport.abort()
                    stats["resets"] += 1
                    return resp
                if interval:
                    await asyncio.sleep(interval)
                continue
            await resp.write(_sse(*ev))
        await resp.write_eof()
    except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
        stats["client_gone"] += 1
        raise
    stats["streams_done"] += 1
    return resp


# --- OpenAI Responses -------------------------------------------------------------


def _response_object(
    rid: str, model: str, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


async def responses(
    request: web.Request, raw: bytes, num: Num, stats: dict[str, int], d: Any
) -> web.StreamResponse:
    path = request.path
    rid = "resp_mock"
    if not path.endswith("/responses"):
        # /responses/{id}, /{id}/cancel, /{id}/input_items
        if path.endswith("/input_items"):
            items = [
                {"id": "msg_in", "type": "message", "role": "user", "status": "completed", "content": []}
            ]
            return web.json_response(
                {
                    "object": "list",
                    "data": items,
                    "first_id": "msg_in",
                    "last_id": "msg_in",
                    "has_more": False,
                }
            )
        tail = path.rsplit("/responses/", 1)[1].split("/")[0]
        if request.method == "DELETE":
            return web.json_response({"id": tail, "object": "response", "deleted": True})
        status = "cancelled" if path.endswith("/cancel") else "completed"
        return web.json_response(_response_object(tail, "gpt-4o-mini", status, [], None))
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        return web.json_response(
            {"error": {"message": "bad json", "type": "invalid_request_error"}}, status=400
        )
    model = body.get("model", "unknown")
    chunks = int(num("x-mock-chunks", d.chunks))
    cached = int(num("x-mock-cached", 0))
    reasoning = int(num("x-mock-reasoning", 0))
    written = int(num("x-mock-cache-write", 0))
    no_usage = num("x-mock-no-usage", 0) == 1
    words = _words(chunks, num("x-mock-stamp", 1 if d.stamp else 0) == 1)
    text = "".join(words)
    usage = None
    if not no_usage:
        inp, out = len(raw) // 4, chunks + reasoning
        usage = {
            "input_tokens": inp,
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
            "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": inp + out,
        }
    msg_id = "msg_mock"
    reasoning_item = {"id": "rs_mock", "type": "reasoning", "summary": []}
    done_part = {"type": "output_text", "text": text, "annotations": []}
    message = {
        "id": msg_id,
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [done_part],
    }
    output = ([reasoning_item] if reasoning else []) + [message]
    if not body.get("stream"):
        return web.json_response(
            _response_object(rid, model, "completed", output, usage), headers={"x-mock-kind": "json"}
        )

    seq = 0
    events: list[tuple[str, dict[str, Any]] | str] = []

    def add(name: str, payload: dict[str, Any]) -> None:
        nonlocal seq
        events.append((name, {"type": name, "sequence_number": seq, **payload}))
        seq += 1

    add("response.created", {"response": _response_object(rid, model, "in_progress", [], None)})
    add("response.in_progress", {"response": _response_object(rid, model, "in_progress", [], None)})
    idx = 0
    if reasoning:
        add("response.output_item.added", {"output_index": 0, "item": reasoning_item})
        add("response.output_item.done", {"output_index": 0, "item": reasoning_item})
        idx = 1
    item = {"id": msg_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}
    add("response.output_item.added", {"output_index": idx, "item": item})
    ids = {"item_id": msg_id, "output_index": idx, "content_index": 0}
    add(
        "response.content_part.added", {**ids, "part": {"type": "output_text", "text": "", "annotations": []}}
    )
    for w in words:
        add("response.output_text.delta", {**ids, "delta": w, "logprobs": []})
        events.append("delta")
    add("response.output_text.done", {**ids, "text": text, "logprobs": []})
    add("response.content_part.done", {**ids, "part": done_part})
    add("response.output_item.done", {"output_index": idx, "item": message})
    add("response.completed", {"response": _response_object(rid, model, "completed", output, usage)})
    interval = num("x-mock-interval-ms", d.interval_ms) / 1000
    return await _stream(request, events, interval, int(num("x-mock-reset-after", -1)), stats)


# --- Anthropic Messages -----------------------------------------------------------


def anthropic_error(status: int, message: str) -> web.Response:
    kinds = {
        400: "invalid_request_error",
        401: "authentication_error",
        404: "not_found_error",
        429: "rate_limit_error",
        529: "overloaded_error",
    }
    err = {"type": "error", "error": {"type": kinds.get(status, "api_error"), "message": message}}
    return web.json_response(err, status=status, headers={"x-mock-error": "1"})


async def messages(
    request: web.Request, raw: bytes, num: Num, stats: dict[str, int], d: Any
) -> web.StreamResponse:
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        return anthropic_error(400, "bad json")
    cached = int(num("x-mock-cached", 0))
    written = int(num("x-mock-cache-write", 0))
    inp = max(0, len(raw) // 4 - cached - written)
    if request.path.endswith("/count_tokens"):
        return web.json_response({"input_tokens": len(raw) // 4})
    model = body.get("model", "unknown")
    chunks = int(num("x-mock-chunks", d.chunks))
    no_usage = num("x-mock-no-usage", 0) == 1
    words = _words(chunks, num("x-mock-stamp", 1 if d.stamp else 0) == 1)

    def usage(output: int) -> dict[str, Any]:
        return {
            "input_tokens": inp,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": cached,
            "output_tokens": output,
        }

    msg: dict[str, Any] = {
        "id": "msg_mock",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
    }
    if not body.get("stream"):
        out = {**msg, "content": [{"type": "text", "text": "".join(words)}], "stop_reason": "end_turn"}
        if not no_usage:
            out["usage"] = usage(chunks)
        return web.json_response(out, headers={"x-mock-kind": "json"})
    events: list[tuple[str, dict[str, Any]] | str] = []
    start = {**msg, "usage": usage(1)} if not no_usage else msg
    events.append(("message_start", {"type": "message_start", "message": start}))
    events.append(
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        )
    )
    events.append(("ping", {"type": "ping"}))
    for w in words:
        events.append(
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}},
            )
        )
        events.append("delta")
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    delta: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
    }
    if not no_usage:
        delta["usage"] = {"output_tokens": chunks}
    events.append(("message_delta", delta))
    events.append(("message_stop", {"type": "message_stop"}))
    interval = num("x-mock-interval-ms", d.interval_ms) / 1000
    return await _stream(request, events, interval, int(num("x-mock-reset-after", -1)), stats)
