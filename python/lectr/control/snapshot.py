"""Live control-plane snapshots: immutable in-memory views of orgs, keys,
rules and policy, swapped atomically when the store's control version
changes, so the request path never reads the database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from lectr import _core
from lectr.store.base import Store
from lectr.types import Budget, ControlData, FallbackChain, KeyEntry, LatencyTarget, OrgEntry, RateLimit, Rule

log = logging.getLogger("lectr.control")


def compile_rules(rules: Sequence[Rule]) -> tuple[Rule, ...]:
    """An org's rules as the request path evaluates them: enabled only, in
    priority order (ties by age), as an immutable tuple."""
    return tuple(sorted((r for r in rules if r.enabled), key=lambda r: (r.priority, r.created_at, r.id)))


def compile_router(
    orgs: Sequence[OrgEntry],
    keys: Sequence[KeyEntry],
    rules: dict[str, tuple[Rule, ...]],
    fallbacks: Sequence[FallbackChain],
) -> _core.Router:
    """The request path's tables (key hashes, orgs, compiled rules, failover
    paths) as the Rust core's `Router`, which makes every per-request
    decision in one call."""
    return _core.Router(
        [(k.prefix, k.key_hash, k.org_id) for k in keys if k.revoked_at is None],
        [(o.id, o.name, o.disabled, o.azure_endpoint, o.azure_api_version) for o in orgs],
        [
            (
                org,
                r.id,
                r.match_feature,
                r.match_task,
                r.match_provider,
                r.match_model,
                r.target_provider,
                r.target_model,
                r.split_percent,
            )
            for org, rs in rules.items()
            for r in rs
        ],
        [
            (c.org_id, c.scope, [(t.provider, t.model) for t in c.targets], list(c.on_status))
            for c in fallbacks
        ],
    )


class Snapshot(msgspec.Struct, frozen=True):
    """One consistent view of the control plane."""

    version: int
    orgs: dict[str, OrgEntry]
    keys_by_prefix: dict[str, KeyEntry]
    budgets: list[Budget] = msgspec.field(default_factory=list)
    rate_limits: list[RateLimit] = msgspec.field(default_factory=list)
    latency_targets: list[LatencyTarget] = msgspec.field(default_factory=list)
    # The keys, orgs, rules and fallbacks, compiled for the request path.
    router: _core.Router = msgspec.field(default_factory=lambda: compile_router((), (), {}, ()))

    @classmethod
    def build(cls, data: ControlData) -> Snapshot:
        by_org: dict[str, list[Rule]] = {}
        for r in data.rules:
            by_org.setdefault(r.org_id, []).append(r)
        rules = {org: compile_rules(rs) for org, rs in by_org.items()}
        return cls(
            version=data.version,
            orgs={o.id: o for o in data.orgs},
            keys_by_prefix={k.prefix: k for k in data.keys if k.revoked_at is None},
            router=compile_router(data.orgs, data.keys, rules, data.fallbacks),
            budgets=data.budgets,
            rate_limits=data.rate_limits,
            latency_targets=data.latency_targets,
        )


EMPTY = Snapshot(version=0, orgs={}, keys_by_prefix={})


class ControlPlane:
    """Holds the current snapshot and keeps it fresh."""

    def __init__(self, store: Store, interval: float) -> None:
        self._store = store
        self._interval = interval
        self.snapshot: Snapshot = EMPTY
        self._failing = False
        # Called with each new snapshot (e.g. the policy engine re-configures).
        self.listeners: list[Callable[[Snapshot], Awaitable[None]]] = []

    async def refresh(self, force: bool = False) -> bool:
        """Reload if the control version moved (or `force`); True if reloaded."""
        if not force and await self._store.control_version() == self.snapshot.version:
            return False
        self.snapshot = Snapshot.build(await self._store.load_control())
        for listener in self.listeners:
            await listener(self.snapshot)
        return True

    async def run(self) -> None:
        """Keep the snapshot fresh until cancelled: follow the store's change
        notifications where it has them (PostgreSQL), and poll as a guard
        against a missed one (the only way with SQLite across processes)."""
        if self._store.notifications is None:
            await self._poll(self._interval)
            return
        await asyncio.gather(self._listen(), self._poll(max(self._interval, 5.0)))

    async def _listen(self) -> None:
        listen = self._store.notifications
        assert listen is not None
        backoff = 0.1
        while True:
            try:
                async for _ in listen():
                    await self.refresh()
                    backoff = 0.1
            except Exception as e:
                log.warning("control change listener lost (%s); reconnecting", type(e).__name__)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            # Changes may have been missed while disconnected: reload in full.
            with contextlib.suppress(Exception):
                await self.refresh(force=True)

    async def _poll(self, interval: float) -> None:
        """A failing store keeps the last snapshot serving; logged once per outage."""
        while True:
            await asyncio.sleep(interval)
            try:
                if await self.refresh():
                    log.info("control plane reloaded (version %d)", self.snapshot.version)
                if self._failing:
                    log.info("control plane store reachable again")
                    self._failing = False
            except Exception as e:
                if not self._failing:
                    log.warning(
                        "control plane refresh failed, serving the last snapshot: %s", type(e).__name__
                    )
                    self._failing = True
