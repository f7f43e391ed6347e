"""Webhook delivery off the request path: a bounded queue of JSON events
POSTed by a background task with retries and backoff, through the same Rust
HTTP client the proxy uses."""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

import msgspec

from lectr import _core
from lectr.gateway.upstream import Upstream

log = logging.getLogger("lectr.webhooks")


class WebhookSender:
    """Posts events to one URL; keeps the outcome of the recent ones."""

    def __init__(
        self, upstream: Upstream, url: str | None, attempts: int = 6, max_queue: int = 10_000
    ) -> None:
        self._upstream = upstream
        self._url = url
        self._attempts = attempts
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(max_queue)
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=200)

    def send(self, event: dict[str, Any]) -> None:
        """Queue an event; never blocks (a full queue drops it, logged)."""
        record = {"event": event, "delivered": False, "attempts": 0}
        self.recent.append(record)
        if not self._url:
            return
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            log.error("webhook queue full; event %s dropped", event.get("event"))

    async def run(self) -> None:
        """Deliver queued events until cancelled."""
        while True:
            record = await self._queue.get()
            await self._deliver(record)

    async def _deliver(self, record: dict[str, Any]) -> None:
        assert self._url is not None
        body = msgspec.json.encode(record["event"])
        delay = 0.5
        for attempt in range(1, self._attempts + 1):
            record["attempts"] = attempt
            try:
                resp = await self._upstream.send(
                    "POST", self._url, [("content-type", "application/json")], body, "bearer", False
                )
                if resp.status < 300:
                    record["delivered"] = True
                    return
                log.warning("webhook answered %d (attempt %d)", resp.status, attempt)
            except _core.UpstreamError as e:
                log.warning("webhook delivery failed (%s, attempt %d)", type(e).__name__, attempt)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
        log.error(
            "webhook event %s undelivered after %d attempts", record["event"].get("event"), self._attempts
        )
