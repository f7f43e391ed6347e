"""The request handler: one AI request, start to finish, in one direction.

```
granian (RSGI) -> app.py: dispatch by path
  -> proxy.py: Proxy.handle()
       1 auth.resolve(snapshot, X-Lectr-Key)       -> OrgEntry    (in-memory snapshot)
       2 read the body (size-capped)               -> bytes       (413 past the cap)
       3 _core.parse_request(body)                 -> RequestMeta (400 if not a JSON object)
       4 providers.detect(meta.model, override)    -> Provider    (400 on unknown override)
       5 routing.apply(snapshot rules, ...)        -> Route       (provider, model, rule; never fails)
         policy.admit(org, feature, model, ...)    -> Admission   (429 / 503, or a budget's cheaper model)
       6 _send: for the route, then its fallback chain (open breakers skipped):
           providers.upstream_url(...)             -> URL         (400 if Azure is not configured)
           upstream.Upstream.send(headers/body)   -> Response    (on the event loop)
           next target on connect error, timeout or a fallback status; else 502/504
       7 body to the client: buffered JSON at once, SSE chunk by chunk as they
         arrive; the Rust tap reads usage and strips what we asked for
       8 finish: usage (or estimate) -> cost from pricing -> policy.settle ->
         Record -> writer queue and metrics.observe (once per request, never per chunk)
  <- response
```

Nothing here writes a body, a prompt or a key anywhere: the record holds
metadata only, and errors are logged by type, not by content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any
from urllib.parse import unquote

import msgspec

from lectr import _core, errors
from lectr.capture.handover import WriterProcess
from lectr.config import Settings
from lectr.control import ControlPlane
from lectr.control.policy.admission import Admission
from lectr.control.policy.engine import Policy
from lectr.errors import (
    ClientClosed,
    InvalidRequest,
    LectrError,
    ProviderUnreachable,
    RequestTooLarge,
    UnsupportedEndpoint,
)
from lectr.gateway import auth, protocols, providers, routing
from lectr.gateway.breaker import Health
from lectr.gateway.pricing import PriceTable
from lectr.gateway.upstream import Response, Upstream
from lectr.observe.metrics import Metrics
from lectr.types import Record, Target

log = logging.getLogger("lectr.proxy")

FEATURE_CAP = 256
UNTAGGED = "untagged"
JSON_HEADERS = [("content-type", "application/json")]


class Endpoint(msgspec.Struct, frozen=True):
    """A proxied endpoint."""

    path: str  # upstream path after the base URL, e.g. "/chat/completions"
    method: str
    has_body: bool
    protocol: str = protocols.CHAT  # chat | responses | messages
    # Whether a response to it uses tokens (not a listing, a stored
    # response fetched again or a free token count).
    billable: bool = True


def provider_category(status: int) -> str:
    """Error category of a provider's error status."""
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "auth_failed"
    if status >= 500:
        return "server_error"
    return "bad_request"


class Exchange:
    """What is learned about one request as it goes; becomes its Record."""

    __slots__ = (
        "admission",
        "billable",
        "body_up",
        "cache_write",
        "cached",
        "completion",
        "endpoint",
        "error_category",
        "error_source",
        "fallback_used",
        "feature",
        "id",
        "model_actual",
        "model_requested",
        "org_id",
        "prompt",
        "protocol",
        "provider",
        "provider_unknown",
        "reasoning",
        "rule_id",
        "start",
        "status",
        "streaming",
        "task",
        "token_source",
        "ts",
        "ttfb",
        "upstream",
        "upstream_ms",
        "upstream_start",
    )

    def __init__(self, org_id: str, endpoint: str, feature: str, task: str | None) -> None:
        self.ts = time.time()
        self.id = record_id(self.ts)
        self.admission: Admission | None = None
        self.start = time.perf_counter()
        self.org_id = org_id
        self.endpoint = endpoint
        self.feature = feature
        self.task = task
        self.provider = "openai"
        self.provider_unknown = False
        self.model_requested: str | None = None
        self.model_actual: str | None = None
        self.rule_id: str | None = None
        self.fallback_used: str | None = None
        self.status = 0
        self.error_category: str | None = None
        self.error_source: str | None = None
        self.streaming = False
        self.ttfb: float | None = None
        self.upstream: Response | None = None
        self.upstream_start = 0.0
        self.upstream_ms: float | None = None
        self.body_up = b""
        self.prompt: int | None = None
        self.completion: int | None = None
        self.cached: int | None = None
        self.cache_write: int | None = None
        self.reasoning: int | None = None
        self.protocol = protocols.CHAT
        self.billable = True
        self.token_source: str | None = None

    def fail(self, e: LectrError) -> None:
        self.status = e.status
        self.error_category = e.category
        self.error_source = e.source

    def upstream_done(self) -> None:
        """The provider's part is over (body complete, stream ended or failed)."""
        if self.upstream_start and self.upstream_ms is None:
            self.upstream_ms = (time.perf_counter() - self.upstream_start) * 1000.0

    def mark_first_byte(self) -> None:
        if self.ttfb is None:
            self.ttfb = (time.perf_counter() - self.start) * 1000.0


def record_id(ts: float) -> str:
    """32 hex digits: the millisecond timestamp, then 80 random bits. Time
    order keeps the stores' id indexes append-mostly: random (uuid4) ids
    scatter every insert across the B-tree, which made SQLite's writer ~5x
    slower on a million-row table (11k vs 51k records/s)."""
    return f"{int(ts * 1000):012x}{os.urandom(10).hex()}"


def _header_value(headers: Any, name: str, cap: int) -> str | None:
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


class Proxy:
    """Forwards AI requests and captures a record of each."""

    def __init__(
        self,
        settings: Settings,
        control: ControlPlane,
        writer: WriterProcess,
        upstream: Upstream,
        prices: PriceTable,
        metrics: Metrics,
        health: Health,
        policy: Policy,
    ) -> None:
        self._settings = settings
        self._health = health
        self._policy = policy
        self._metrics = metrics
        self._control = control
        self._writer = writer
        self._upstream = upstream
        self._prices = prices
        self._max_body = settings.max_body_bytes

    async def handle(self, scope: Any, proto: Any, endpoint: Endpoint) -> None:
        """Serve one request on `endpoint`."""
        headers = scope.headers
        try:
            org = auth.resolve(self._control.snapshot, headers.get("x-lectr-key"))
        except LectrError as e:
            # No org, nothing to record against; the provider is never called.
            self._metrics.auth_rejected(e.code)
            body = protocols.error_body(endpoint.protocol, e)
            proto.response_bytes(e.status, JSON_HEADERS + e.headers(), body)
            return
        try:
            feature = _header_value(headers, "x-lectr-feature", FEATURE_CAP) or UNTAGGED
            task = _header_value(headers, "x-lectr-task", FEATURE_CAP)
        except LectrError as e:
            proto.response_bytes(e.status, JSON_HEADERS + e.headers(), e.body())
            return
        self._metrics.inflight(1)
        ex = Exchange(org.id, scope.path, feature, task)
        ex.protocol, ex.billable = endpoint.protocol, endpoint.billable
        try:
            await self._forward(scope, proto, endpoint, org, ex)
        except LectrError as e:
            ex.fail(e)
            body = protocols.error_body(endpoint.protocol, e)
            proto.response_bytes(e.status, JSON_HEADERS + e.headers(), body)
        except Exception:
            log.exception("unexpected error while proxying")
            internal = LectrError("the gateway failed to process this request")
            ex.fail(internal)
            body = protocols.error_body(endpoint.protocol, internal)
            proto.response_bytes(internal.status, JSON_HEADERS, body)
        finally:
            ex.upstream_done()
        await self._finish(ex)
        self._metrics.inflight(-1)

    async def _read_body(self, scope: Any, proto: Any) -> bytes:
        """The request body, counted while it arrives: a chunked body has no
        length to check up front, and reading it whole first let one request
        hold any amount of memory. Stops at the first chunk past the cap."""
        declared = scope.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self._max_body:
            raise RequestTooLarge(f"request body is {declared} bytes; the limit is {self._max_body}")
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
            if size > self._max_body:
                raise RequestTooLarge(f"request body exceeds the limit of {self._max_body} bytes")
            parts.append(chunk)
        if declared and declared.isdigit() and size < int(declared):
            # A length-framed body cannot be malformed, only cut short.
            raise ClientClosed("the client closed the connection before the request body was complete")
        if broken:
            raise InvalidRequest("the request body is malformed or incomplete (chunked encoding)")
        return b"".join(parts)

    async def _forward(self, scope: Any, proto: Any, endpoint: Endpoint, org: Any, ex: Exchange) -> None:
        headers = scope.headers
        meta: _core.RequestMeta | None = None
        body = b""
        if endpoint.has_body:
            body = await self._read_body(scope, proto)
            try:
                meta = _core.parse_request(body)
            except _core.InvalidBody as e:
                raise InvalidRequest(str(e)) from None
            if not meta.model:
                raise InvalidRequest("request body has no 'model'")
            ex.model_requested = ex.model_actual = meta.model
            ex.streaming = meta.stream
        detected, unknown = providers.detect(ex.model_requested, headers.get("x-lectr-provider"))
        proto_name = endpoint.protocol
        if unknown and proto_name in protocols.DEFAULT_PROVIDER:
            # A model we do not recognise goes to the protocol's own provider.
            detected = providers.REGISTRY[protocols.DEFAULT_PROVIDER[proto_name]]
        ex.provider, ex.provider_unknown = detected.name, unknown
        if not protocols.serves(proto_name, detected.name):
            raise UnsupportedEndpoint(
                f"{detected.name} has no {scope.path} endpoint; "
                f"it is served by: {', '.join(sorted(protocols.SERVED_BY[proto_name]))}"
            )

        def serves(p: str) -> bool:
            return protocols.serves(proto_name, p)

        snap = self._control.snapshot
        route = routing.apply(
            snap.rules.get(org.id, ()),
            ex.feature,
            ex.task,
            detected.name,
            ex.model_requested,
            serves=serves,
        )
        ex.rule_id = route.rule_id
        chain = snap.fallback_for(org.id, ex.feature)
        # 5b policy: limits and budgets (may reject, or rewrite to a cheaper model).
        ex.admission = await self._policy.admit(
            org.id, ex.feature, route.model, len(body), meta.max_tokens if meta else None, ex.streaming, ex.id
        )
        if ex.admission is not None and ex.admission.overridden_by is not None:
            # The budget's fallback acts as the rule that decided the model.
            b = ex.admission.overridden_by
            route = routing.Route(route.provider, ex.admission.model_override, f"budget:{b.scope}:{b.period}")
            ex.rule_id = route.rule_id
        targets = [Target(route.provider, route.model or "")]
        if chain is not None:
            # Fallbacks stay within the protocol family too.
            targets += [t for t in chain.targets if t != targets[0] and serves(t.provider)]
        resp = await self._send(
            scope,
            endpoint,
            org,
            ex,
            meta,
            body,
            detected.name,
            targets,
            chain.on_status if chain is not None else (),
        )
        ex.upstream = resp
        ex.status = resp.status
        if resp.status >= 400:
            ex.error_category, ex.error_source = provider_category(resp.status), "provider"
        if resp.body_complete:
            ex.upstream_done()
            ex.mark_first_byte()
            proto.response_bytes(resp.status, resp.headers, resp.body)
            return
        await self._stream(proto, resp, ex)

    async def _send(
        self,
        scope: Any,
        endpoint: Endpoint,
        org: Any,
        ex: Exchange,
        meta: _core.RequestMeta | None,
        body: bytes,
        intended: str,
        targets: list[Target],
        retry_on: tuple[int, ...],
    ) -> Response:
        """Step 6: send to the first target, failing over down `targets` on a
        connect error, a timeout or a `retry_on` status, before any byte has
        reached the client. Returns the response that will be served."""
        # Ask for streamed usage on the client's behalf; the tap strips it.
        # (Responses and Messages streams always carry usage.)
        inject = (
            endpoint.protocol == protocols.CHAT
            and meta is not None
            and meta.stream
            and not meta.include_usage
        )
        client_headers = scope.headers.items()
        ex.upstream_start = time.perf_counter()
        for i, target in enumerate(targets):
            last = i == len(targets) - 1
            provider = providers.REGISTRY[target.provider]
            # An open breaker is skipped while another target remains.
            if not last and not self._health.allow(provider.name):
                continue
            try:
                url = providers.upstream_url(
                    provider, endpoint.path, target.model or None, self._settings, org
                )
            except LectrError:
                if last:
                    raise
                continue
            if scope.query_string and provider.global_endpoint:
                url = f"{url}?{scope.query_string}"
            model = target.model or ex.model_requested
            ex.provider, ex.model_actual = provider.name, model
            ex.fallback_used = f"{provider.name}/{model}" if i > 0 else None
            ex.body_up = meta.body_for_upstream(model, inject_usage=inject) if meta is not None else body
            sent = time.perf_counter()
            try:
                resp = await self._upstream.send(
                    endpoint.method,
                    url,
                    self._credentials(client_headers, intended, provider.name),
                    ex.body_up,
                    provider.auth_style,
                    inject,
                    endpoint.protocol,
                )
            except _core.UpstreamError as e:
                self._health.record(provider.name, False, (time.perf_counter() - sent) * 1000.0)
                if last:
                    raise errors.from_core(e, provider.name) from None
                continue
            ok = resp.status < 500 and resp.status != 429
            self._health.record(provider.name, ok, (time.perf_counter() - sent) * 1000.0)
            if resp.status in retry_on and not last:
                resp.close()
                continue
            return resp
        raise ProviderUnreachable("every provider on this request's failover path is marked down")

    def _credentials(
        self, client: list[tuple[str, str]], intended: str, target: str
    ) -> list[tuple[str, str]]:
        """The client's headers, with the operator's key for `target` when a
        rule or fallback moved the request off the provider the client's
        own key is for (and the operator configured one)."""
        if target == intended:
            return client
        key = self._settings.providers.api_key(target)
        if not key:
            return client
        return [(n, v) for n, v in client if n.lower() != "authorization"] + [
            ("authorization", f"Bearer {key}")
        ]

    async def _stream(self, proto: Any, resp: Response, ex: Exchange) -> None:
        headers = resp.headers
        length = resp.declared_length
        if length is not None and not resp.is_sse:
            # A body that breaks off must reach the client as broken: granian
            # cuts the connection when a response ends short of its
            # content-length, but ends a chunked one cleanly. (An SSE body
            # may be edited by the usage tap, so its length is not the
            # provider's; it ends with an error event instead.)
            headers = [*headers, ("content-length", str(length))]
        transport = proto.response_stream(resp.status, headers)
        # A client that goes away closes the upstream read, which ends the loop.
        watcher = asyncio.ensure_future(proto.client_disconnect())
        watcher.add_done_callback(lambda _: resp.close())
        client_gone = False
        self._metrics.stream_started()
        try:
            prefix = resp.body
            if prefix:
                ex.mark_first_byte()
                await transport.send_bytes(prefix)
            while (chunk := await resp.next_chunk()) is not None:
                ex.mark_first_byte()
                await transport.send_bytes(chunk)
            if resp.status < 400 and resp.is_sse and not resp.saw_done:
                # Ended cleanly but without the protocol's terminal event
                # (`data: [DONE]` for chat): a stream framed by the connection
                # that closed early looks just like this.
                raise _core.UpstreamProtocolError("the stream ended before its final event")
        except _core.UpstreamError as e:
            # Bytes may already be with the client: no retry. The stream ends
            # as an error the client sees, never as a clean success: the
            # protocol's error event (OpenAI's error shape for chat).
            ex.error_category, ex.error_source = "stream_interrupted", "network"
            log.warning("upstream %s stream broke after the first byte: %s", ex.provider, type(e).__name__)
            reason = f"{e} timeout" if isinstance(e, _core.UpstreamTimeout) else str(e)
            event = protocols.stream_error_event(
                ex.protocol, f"the stream from {ex.provider} broke off before it was complete: {reason}"
            )
            if event is not None and resp.is_sse:
                try:
                    await transport.send_bytes(event)
                except Exception as we:
                    client_gone = True
                    log.debug("client write failed: %s", type(we).__name__)
        except Exception as e:
            # granian raises when writing to a client that has gone.
            client_gone = True
            resp.close()
            log.debug("client write failed: %s", type(e).__name__)
        finally:
            watcher.cancel()
            ex.upstream_done()
            self._metrics.stream_ended()
        if client_gone or resp.closed_early:
            ex.status = 499
            ex.error_category, ex.error_source = "client_closed", "client"

    async def _finish(self, ex: Exchange) -> None:
        resp = ex.upstream
        if resp is not None and (ex.status < 400 or ex.error_category == "client_closed"):
            await self._count_tokens(ex)
        cost = self._prices.cost(ex.model_actual, ex.prompt, ex.completion, ex.cached, ex.cache_write)
        if ex.admission is not None:
            # A request that got no answer used no tokens.
            used = (ex.prompt or 0) + (ex.completion or 0)
            await self._policy.settle(ex.admission, used, cost, (time.perf_counter() - ex.start) * 1000.0)
        record = Record(
            id=ex.id,
            ts=ex.ts,
            org_id=ex.org_id,
            endpoint=ex.endpoint,
            provider=ex.provider,
            provider_unknown=ex.provider_unknown,
            model_requested=ex.model_requested,
            model_actual=ex.model_actual,
            rule_id=ex.rule_id,
            fallback_used=ex.fallback_used,
            status_code=ex.status,
            error_category=ex.error_category,
            error_source=ex.error_source,
            streaming=ex.streaming,
            latency_ms=(time.perf_counter() - ex.start) * 1000.0,
            ttfb_ms=ex.ttfb,
            prompt_tokens=ex.prompt,
            completion_tokens=ex.completion,
            cached_tokens=ex.cached,
            token_source=ex.token_source,
            cost_usd=cost,
            feature=ex.feature,
            task=ex.task,
            cache_write_tokens=ex.cache_write,
            reasoning_tokens=ex.reasoning,
        )
        self._writer.submit(record)
        self._metrics.observe(record, ex.upstream_ms)

    async def _count_tokens(self, ex: Exchange) -> None:
        resp = ex.upstream
        if resp is None or ex.endpoint.endswith("/models") or not ex.billable:
            return
        usage = resp.usage
        if usage is not None and usage[0] is not None:
            ex.prompt, ex.completion, ex.cached = usage[0], usage[1] or 0, usage[2]
            extra = resp.usage_extra
            if extra is not None:
                ex.cache_write, ex.reasoning = extra
            ex.token_source = "provider"  # noqa: S105 - a label, not a secret
            return
        try:
            ex.prompt, ex.completion = await resp.estimate_usage(ex.body_up, ex.model_actual or "")
        except _core.LectrCoreError:
            return
        ex.cached = 0
        ex.token_source = "estimated"  # noqa: S105 - a label, not a secret
