"""Resolve an `X-Lectr-Key` to its org against the in-memory snapshot."""

from __future__ import annotations

from lectr import _core, errors
from lectr.control import Snapshot
from lectr.types import OrgEntry


def resolve(snapshot: Snapshot, key: str | None) -> OrgEntry:
    """The org owning `key`; raises MissingKey, InvalidKey or OrgDisabled.

    The snapshot's compiled router finds the candidate by the key's public
    prefix, then compares the full key's SHA-256 in constant time, so
    timing reveals nothing about the secret part.
    """
    try:
        return snapshot.orgs[snapshot.router.org_id(key)]
    except _core.Refused as e:
        raise errors.refused(e) from None
