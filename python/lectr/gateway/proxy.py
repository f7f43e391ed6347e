"""The request handler: one AI request, start to finish, in one direction.

```
granian (RSGI) -> app.py: dispatch by path
  -> proxy.py: Proxy.handle()
       1 auth.resolve(snapshot, X-Lectr-Key)       -> OrgEntry    (Rust: prefix, SHA-256, constant time)
       2 client_input.read_body (size-capped)      -> bytes       (413 past the cap)
       3 snapshot.router.plan(catalog, org, tags, X-Lectr-Provider, body)
                                                   -> Plan        (Rust, one call: body peek, provider
                                                                   detection, routing rules, failover
                                                                   path, each hop's URL and body;
                                                                   a 400 as `Refused`)
         policy.admit(org, feature, model, ...)    -> Admission   (429 / 503, or a budget's cheaper model)
       4 _send: for each hop of the plan (open breakers skipped):
           upstream.Upstream.send(headers/body)   -> Response    (on the event loop)
           next hop on connect error, timeout or a fallback status; else 502/504
       5 body to the client: buffered JSON at once, SSE chunk by chunk as they
         arrive; the Rust tap reads usage and strips what we asked for
       6 finish: usage (or estimate) -> cost from pricing -> policy.settle ->
         Exchange.record() -> writer queue and metrics.observe (once per request,
         never per chunk)
  <- response
```

Nothing here writes a body, a prompt or a key anywhere: the record holds
metadata only, and errors are logged by type, not by content.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from lectr import _core, errors
from lectr.capture.handover import WriterProcess
from lectr.config import Settings
from lectr.control import ControlPlane
from lectr.control.policy.engine import Policy
from lectr.errors import LectrError, ProviderUnreachable
from lectr.gateway import auth, protocols, providers
from lectr.gateway.breaker import Health
from lectr.gateway.client_input import FEATURE_CAP, UNTAGGED, header_value, read_body
from lectr.gateway.exchange import Endpoint, Exchange, provider_category
from lectr.gateway.pricing import PriceTable
from lectr.gateway.upstream import Response, Upstream
from lectr.observe.metrics import Metrics

log = logging.getLogger("lectr.proxy")

JSON_HEADERS = [("content-type", "application/json")]


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
        self._catalog = providers.catalog(settings)

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
            feature = header_value(headers, "x-lectr-feature", FEATURE_CAP) or UNTAGGED
            task = header_value(headers, "x-lectr-task", FEATURE_CAP)
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

    async def _forward(self, scope: Any, proto: Any, endpoint: Endpoint, org: Any, ex: Exchange) -> None:
        headers = scope.headers
        body = await read_body(scope, proto, self._max_body) if endpoint.has_body else None
        try:
            plan = self._control.snapshot.router.plan(
                self._catalog,
                org.id,
                endpoint.protocol,
                endpoint.path,
                scope.path,
                ex.feature,
                ex.task,
                headers.get("x-lectr-provider"),
                body,
                scope.query_string,
                random.random(),  # noqa: S311 - a split rule's share, not a secret
            )
        except _core.Refused as e:
            _, _, model, provider = e.args
            # The record of a refused request says what was asked of whom.
            ex.model_requested = ex.model_actual = model
            ex.provider = provider or ex.provider
            raise errors.refused(e) from None
        ex.model_requested = ex.model_actual = plan.model
        ex.streaming = plan.stream
        ex.provider, ex.provider_unknown = plan.provider, plan.provider_unknown
        ex.rule_id = plan.rule_id
        # policy: limits and budgets (may reject, or rewrite to a cheaper model).
        ex.admission = await self._policy.admit(
            org.id, ex.feature, plan.route_model, len(body or b""), plan.max_tokens, ex.streaming, ex.id
        )
        admission = ex.admission
        if admission is not None and admission.overridden_by is not None and admission.model_override:
            # The budget's fallback acts as the rule that decided the model.
            b = admission.overridden_by
            plan = plan.overridden(admission.model_override, f"budget:{b.scope}:{b.period}")
            ex.rule_id = plan.rule_id
        resp = await self._send(scope, endpoint, ex, plan)
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

    async def _send(self, scope: Any, endpoint: Endpoint, ex: Exchange, plan: _core.Plan) -> Response:
        """Step 4: send to the plan's first hop, failing over down the rest
        on a connect error, a timeout or a fallback status, before any byte
        has reached the client. Returns the response that will be served."""
        client_headers = scope.headers.items()
        intended = plan.provider
        retry_on = plan.retry_on
        hops = plan.hops()
        ex.upstream_start = time.perf_counter()
        for i, hop in enumerate(hops):
            last = i == len(hops) - 1
            # An open breaker is skipped while another hop remains.
            if not last and not self._health.allow(hop.provider):
                continue
            try:
                url, ex.body_up = plan.prepare(hop)
            except _core.Refused as e:
                if last:
                    raise errors.refused(e) from None
                continue
            ex.provider, ex.model_actual = hop.provider, hop.model
            ex.fallback_used = f"{hop.provider}/{hop.model}" if i > 0 else None
            sent = time.perf_counter()
            try:
                resp = await self._upstream.send(
                    endpoint.method,
                    url,
                    self._credentials(client_headers, intended, hop.provider),
                    ex.body_up,
                    hop.auth_style,
                    # Ask for streamed usage on the client's behalf; the tap
                    # strips it. (Responses and Messages streams always carry it.)
                    plan.inject_usage,
                    endpoint.protocol,
                )
            except _core.UpstreamError as e:
                self._health.record(hop.provider, False, (time.perf_counter() - sent) * 1000.0)
                if last:
                    raise errors.from_core(e, hop.provider) from None
                continue
            ok = resp.status < 500 and resp.status != 429
            self._health.record(hop.provider, ok, (time.perf_counter() - sent) * 1000.0)
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
        record = ex.record(cost)
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
