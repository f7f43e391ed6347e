"""Resolve an `X-Lectr-Key` to its org against the in-memory snapshot."""

from __future__ import annotations

import hmac

from lectr.control import Snapshot
from lectr.errors import InvalidKey, MissingKey, OrgDisabled
from lectr.store.base import KEY_PREFIX, hash_key
from lectr.types import OrgEntry

_PREFIX_LEN = len(KEY_PREFIX)


def resolve(snapshot: Snapshot, key: str | None) -> OrgEntry:
    """The org owning `key`; raises MissingKey, InvalidKey or OrgDisabled.

    The public prefix finds the candidate; the full hash is then compared in
    constant time, so timing reveals nothing about the secret part.
    """
    if not key:
        raise MissingKey("missing X-Lectr-Key header: add your org key (lc_key_...) to every request")
    if not key.startswith(KEY_PREFIX) or len(key) < _PREFIX_LEN + 32:
        raise InvalidKey("invalid X-Lectr-Key: org keys look like lc_key_ followed by 43 characters")
    entry = snapshot.keys_by_prefix.get(key[_PREFIX_LEN : _PREFIX_LEN + 8])
    if entry is None or not hmac.compare_digest(entry.key_hash, hash_key(key)):
        raise InvalidKey("invalid X-Lectr-Key: unknown or revoked org key")
    org = snapshot.orgs.get(entry.org_id)
    if org is None:
        raise InvalidKey("invalid X-Lectr-Key: unknown or revoked org key")
    if org.disabled:
        raise OrgDisabled(f"org {org.name!r} is disabled")
    return org
