"""Persistence: the store interface both backends implement, and `open_store`
choosing the backend from one setting (`database_url`)."""

from __future__ import annotations

import hashlib
import secrets
from typing import Protocol

from lectr.config import Settings
from lectr.types import ControlData, KeyEntry, OrgEntry, Record

KEY_PREFIX = "lc_key_"


class StoreError(Exception):
    """A store operation failed in a way the caller should report."""


class Conflict(StoreError):
    """The change conflicts with existing data (e.g. a duplicate name)."""


class Missing(StoreError):
    """The named org or key does not exist."""


def new_key() -> tuple[str, str, bytes]:
    """A fresh org key: (plaintext, public prefix, SHA-256 of the plaintext).

    32 random bytes give 43 URL-safe characters after `lc_key_`; the first
    eight of those are the prefix shown in listings.
    """
    token = secrets.token_urlsafe(32)
    key = KEY_PREFIX + token
    return key, token[:8], hash_key(key)


def hash_key(key: str) -> bytes:
    """The stored form of a key. Keys are 256-bit random, so a plain SHA-256
    (no salt, no stretching) cannot be brute-forced."""
    return hashlib.sha256(key.encode()).digest()


class Store(Protocol):
    """What the gateway needs from a database."""

    async def migrate(self) -> list[int]:
        """Apply pending migrations; return the versions applied."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the database cannot be reached."""
        ...

    async def write_records(self, records: list[Record]) -> None:
        """Store a batch of request records (idempotent on record id)."""
        ...

    async def control_version(self) -> int: ...

    async def load_control(self) -> ControlData: ...

    async def create_org(self, name: str) -> OrgEntry: ...

    async def get_org(self, name_or_id: str) -> OrgEntry: ...

    async def list_orgs(self) -> list[OrgEntry]: ...

    async def set_org_disabled(self, org_id: str, disabled: bool) -> None: ...

    async def set_org_azure(self, org_id: str, endpoint: str | None, api_version: str | None) -> None: ...

    async def create_key(self, org_id: str) -> tuple[str, KeyEntry]:
        """A new key for the org: (plaintext, stored entry). The plaintext is
        returned once and never stored."""
        ...

    async def list_keys(self, org_id: str) -> list[KeyEntry]: ...

    async def revoke_key(self, org_id: str, prefix: str) -> None: ...

    async def count_records(self, org_id: str | None = None) -> int: ...


def open_store(settings: Settings) -> Store:
    """The store the settings ask for: PostgreSQL when `database_url` is set,
    else the embedded SQLite file under `data_dir`."""
    if settings.database_url:
        raise StoreError("PostgreSQL storage is not available in this build yet; unset LECTR_DATABASE_URL")
    from lectr.store.sqlite import SQLiteStore

    return SQLiteStore(settings.sqlite_path)
