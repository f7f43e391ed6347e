"""The RSGI application: routes and lifespan.

Lifespan (per worker process): open the store and apply migrations, load the
control-plane snapshot, start the record writer, the snapshot refresher,
the metrics sync and the anomaly detector (one leader across instances); at
shutdown, stop accepting work, drain the record queue
into the store, take this worker out of the live metric gauges and close the
store. Routes: the proxied `/v1/...` endpoints, `/admin/...`, the `/console`,
`/healthz`, `/readyz`, `/metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
from typing import Any

import msgspec

from lectr import _core
from lectr.admin import AdminAPI
from lectr.admin.routes import Context as AdminContext
from lectr.capture.handover import WriterProcess
from lectr.config import Settings, settings_from_env
from lectr.control import ControlPlane, Snapshot
from lectr.control.manage import Manager
from lectr.control.policy.engine import Policy
from lectr.errors import LectrError, MethodNotAllowed, MetricsAuthRequired, NotFound
from lectr.gateway import protocols
from lectr.gateway.breaker import Health
from lectr.gateway.exchange import Endpoint
from lectr.gateway.pricing import PriceTable
from lectr.gateway.proxy import JSON_HEADERS, Proxy
from lectr.gateway.upstream import Upstream
from lectr.insights.anomalies import Detector, webhook
from lectr.insights.service import Insights
from lectr.observe.alerts import WebhookSender
from lectr.observe.metrics import Metrics
from lectr.store.base import open_store

log = logging.getLogger("lectr.app")

ENDPOINTS: dict[str, Endpoint] = {
    "/v1/chat/completions": Endpoint("/chat/completions", "POST", True),
    "/v1/completions": Endpoint("/completions", "POST", True),
    "/v1/embeddings": Endpoint("/embeddings", "POST", True),
    "/v1/models": Endpoint("/models", "GET", False),
    "/v1/responses": Endpoint("/responses", "POST", True, protocols.RESPONSES),
    "/v1/messages": Endpoint("/messages", "POST", True, protocols.MESSAGES),
    # Free of charge: the answer is a count, not a generation.
    "/v1/messages/count_tokens": Endpoint("/messages/count_tokens", "POST", True, protocols.MESSAGES, False),
}
_encode = msgspec.json.Encoder().encode


class App:
    """The gateway as an RSGI application."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or settings_from_env()
        self.store = open_store(self.settings)
        self.control = ControlPlane(self.store, self.settings.control_refresh_interval)
        self.writer = WriterProcess(self.settings)
        self.upstream = Upstream(
            connect_timeout=self.settings.connect_timeout,
            first_byte_timeout=self.settings.first_byte_timeout,
            idle_timeout=self.settings.idle_timeout,
            max_sse_event=self.settings.sse_max_event_bytes,
            total_timeout=self.settings.upstream_total_timeout,
            max_buffered_body=self.settings.max_buffered_response_bytes,
        )
        prices = PriceTable.load(self.settings.prices_file)
        self.webhooks = WebhookSender(self.upstream, self.settings.policy.budget_webhook_url)
        self.policy = Policy(
            prices,
            self.settings.redis_url,
            self.settings.policy.redis_timeout,
            self.settings.policy.fail_open,
            self.settings.policy.budget_default_max_tokens,
            on_alert=self.webhooks.send,
        )
        self.control.listeners.append(self._on_snapshot)
        self.health = Health(self.settings.breaker.failure_threshold, self.settings.breaker.cooldown)
        self.metrics = Metrics(
            lambda: self.writer.depth,
            lambda: msgspec.structs.asdict(self.writer.stats),
            self.settings.metrics_label_cap,
            lambda: {"unavailable": self.policy.unavailable_events, "reseeded": self.policy.reseeds},
        )
        self.proxy = Proxy(
            self.settings,
            self.control,
            self.writer,
            self.upstream,
            prices,
            self.metrics,
            self.health,
            self.policy,
        )
        insights = Insights.from_settings(self.settings, self.store, prices)
        self.manager = Manager(self.store, insights, on_change=self.control.refresh)
        self.admin = AdminAPI(
            self.settings.admin_token,
            AdminContext(
                self.store, self.control, self.health, self.policy, self.webhooks, insights, self.manager
            ),
        )
        self.console = None
        if self.settings.console_enabled:
            from lectr.console import Console, ConsoleContext

            self.console = Console(
                ConsoleContext(
                    self.manager,
                    self.control,
                    self.health,
                    self.policy,
                    self.settings.admin_token,
                    self.settings.console_secret,
                )
            )
        url = self.settings.anomaly_webhook_url
        send = webhook(self.upstream, url) if url else None
        self.detector = Detector(self.store, send, retention_days=self.settings.retention_days)
        self._tasks: list[asyncio.Task[None]] = []

    async def startup(self) -> None:
        warm = None
        if self.settings.warm_tokenizers:
            # Build the BPE tables now rather than at the first estimate. Off by
            # default: they cost ~70 MiB per worker and are needed only when a
            # provider reports no usage (the first estimate then takes ~0.15 s,
            # on an executor thread, after the response has gone).
            loop = asyncio.get_running_loop()
            warm = loop.run_in_executor(
                None, lambda: [_core.count_tokens("w", m) for m in ("gpt-4o", "gpt-4")]
            )
        await self.store.migrate()
        await self.control.refresh(force=True)
        if warm is not None:
            await warm
        self._tasks = [
            asyncio.ensure_future(self.writer.run()),
            asyncio.ensure_future(self.control.run()),
            asyncio.ensure_future(self.metrics.run()),
            asyncio.ensure_future(self._housekeeping()),
            asyncio.ensure_future(self.webhooks.run()),
            asyncio.ensure_future(self._policy_metrics()),
            asyncio.ensure_future(self.policy.run()),
            asyncio.ensure_future(self.detector.run()),
        ]

    async def _on_snapshot(self, snap: Snapshot) -> None:
        """Re-configure the policy engine; seed budget spend from the log."""
        self.policy.configure(snap.budgets, snap.rate_limits, snap.latency_targets)
        try:
            await self.policy.seed(self.store)
        except Exception as e:
            log.warning(
                "could not seed budget spend (%s); counters start from their current value", type(e).__name__
            )

    async def _policy_metrics(self, every: float = 5.0) -> None:
        """Budget and latency-target states into the metrics, every few seconds."""
        while True:
            try:
                budgets, targets = await self.policy.summary()
                self.metrics.set_budget_states(budgets)
                self.metrics.set_latency_target_states(targets)
            except Exception as e:
                log.debug("policy metrics skipped (%s)", type(e).__name__)
            await asyncio.sleep(every)

    async def _housekeeping(self, every: float = 3600.0) -> None:
        """Create partitions ahead and enforce retention, hourly (idempotent,
        so every instance may do it)."""
        while True:
            try:
                await self.store.maintain()
                if self.settings.retention_days > 0:
                    await self.store.apply_retention(self.settings.retention_days)
            except Exception as e:
                log.warning("housekeeping failed (%s); next try in %.0fs", type(e).__name__, every)
            await asyncio.sleep(every)

    async def shutdown(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self.writer.drain(timeout=30.0)
        self.upstream.close()
        self.metrics.close()
        await self.store.close()

    # granian's RSGI lifespan hooks (called with the worker's loop, not running).
    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        logging.basicConfig(
            level=self.settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        loop.run_until_complete(self.startup())
        # What start-up allocated (modules, tables, the snapshot) lives as
        # long as the worker: out of the collector's generations, a full
        # collection does not walk it, which shortens the pauses that
        # land on requests.
        gc.collect()
        gc.freeze()

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self.shutdown())

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        path = scope.path
        endpoint = ENDPOINTS.get(path)
        if endpoint is not None:
            if scope.method != endpoint.method:
                e = MethodNotAllowed(f"{path} accepts {endpoint.method} only")
                proto.response_bytes(e.status, JSON_HEADERS, protocols.error_body(endpoint.protocol, e))
                return None
            return await self.proxy.handle(scope, proto, endpoint)
        stored = protocols.stored_response_route(path)
        if stored is not None:
            upstream_path, methods = stored
            if scope.method not in methods:
                return self._error(proto, MethodNotAllowed(f"{path} accepts {', '.join(methods)} only"))
            # A stored response passed through: no body, no new tokens.
            ep = Endpoint(upstream_path, scope.method, False, protocols.RESPONSES, False)
            return await self.proxy.handle(scope, proto, ep)
        if path.startswith("/admin/"):
            return await self.admin.handle(scope, proto)
        if self.console is not None and (path == "/console" or path.startswith("/console/")):
            return await self.console.handle(scope, proto)
        if path == "/healthz":
            proto.response_bytes(200, JSON_HEADERS, b'{"status":"ok"}')
            return None
        if path in ("/readyz", "/metrics") and not self._metrics_allowed(scope):
            return self._error(
                proto, MetricsAuthRequired(f"{path} needs Authorization: Bearer <metrics token>")
            )
        if path == "/readyz":
            return await self._ready(proto)
        if path == "/metrics":
            body, content_type = self.metrics.render()
            proto.response_bytes(200, [("content-type", content_type)], body)
            return None
        return self._error(proto, NotFound(f"no route for {scope.method} {path}"))

    def _metrics_allowed(self, scope: Any) -> bool:
        token = self.settings.metrics_token
        if not token:
            return True
        authz: str = scope.headers.get("authorization") or ""
        return authz[:7].lower() == "bearer " and hmac.compare_digest(
            authz[7:].strip().encode(), token.encode()
        )

    @staticmethod
    def _error(proto: Any, e: LectrError) -> None:
        proto.response_bytes(e.status, JSON_HEADERS, e.body())

    async def _ready(self, proto: Any) -> None:
        try:
            await asyncio.wait_for(self.store.ping(), timeout=2.0)
            storage = "ok"
        except Exception as e:
            storage = f"unreachable ({type(e).__name__})"
        body = {
            "status": "ok" if storage == "ok" else "degraded",
            "storage": storage,
            "control_version": self.control.snapshot.version,
            "writer": msgspec.structs.asdict(self.writer.stats)
            | {
                "depth": self.writer.depth,
                "process": self.writer.process,
                "spill": self.writer.spill.on_disk(),
                # On disk, so it survives restarts: what no replay will store.
                "quarantine": {
                    "records": self.writer.quarantine.count(),
                    "folder": str(self.writer.quarantine.folder),
                },
            },
            "policy": {"unavailable": self.policy.unavailable_events, "reseeded": self.policy.reseeds},
        }
        proto.response_bytes(200 if storage == "ok" else 503, JSON_HEADERS, _encode(body))


def create_app() -> App:
    """Factory used by `lectr serve` (granian imports it in each worker)."""
    return App()
