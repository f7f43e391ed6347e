"""Live control-plane snapshots: immutable in-memory views of orgs and keys,
swapped atomically when the store's control version changes, so the request
path never reads the database."""

from __future__ import annotations

import asyncio
import logging

import msgspec

from lectr.store import Store
from lectr.types import ControlData, KeyEntry, OrgEntry

log = logging.getLogger("lectr.control")


class Snapshot(msgspec.Struct, frozen=True):
    """One consistent view of the control plane."""

    version: int
    orgs: dict[str, OrgEntry]
    keys_by_prefix: dict[str, KeyEntry]

    @classmethod
    def build(cls, data: ControlData) -> Snapshot:
        return cls(
            version=data.version,
            orgs={o.id: o for o in data.orgs},
            keys_by_prefix={k.prefix: k for k in data.keys if k.revoked_at is None},
        )


EMPTY = Snapshot(version=0, orgs={}, keys_by_prefix={})


class ControlPlane:
    """Holds the current snapshot and keeps it fresh."""

    def __init__(self, store: Store, interval: float) -> None:
        self._store = store
        self._interval = interval
        self.snapshot: Snapshot = EMPTY
        self._failing = False

    async def refresh(self, force: bool = False) -> bool:
        """Reload if the control version moved (or `force`); True if reloaded."""
        if not force and await self._store.control_version() == self.snapshot.version:
            return False
        self.snapshot = Snapshot.build(await self._store.load_control())
        return True

    async def run(self) -> None:
        """Poll for changes until cancelled. A failing store keeps the last
        snapshot serving and is logged once per outage."""
        while True:
            await asyncio.sleep(self._interval)
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
