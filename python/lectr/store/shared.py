"""The control-plane SQL, written once for both backends on their primitives:
orgs and their keys, routing rules, fallback chains, budgets, rate limits,
latency targets, and the snapshot of them all."""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec

from lectr.errors import Conflict, NotFound
from lectr.store.base import new_key
from lectr.store.primitives import Duplicate, MissingReference, Primitives
from lectr.types import (
    Budget,
    ControlData,
    FallbackChain,
    KeyEntry,
    LatencyTarget,
    OrgEntry,
    RateLimit,
    Rule,
    Target,
)

ORG_COLS = "id, name, disabled, azure_endpoint, azure_api_version, created_at"
ORG_KEY_COLS = "id, org_id, prefix, key_hash, created_at, revoked_at"
RULE_COLS = (
    "id, org_id, name, priority, enabled, match_feature, match_task, match_provider, match_model, "
    "target_provider, target_model, split_percent, created_at"
)
CHAIN_COLS = "org_id, scope, targets, on_status, created_at"
BUDGET_COLS = ("org_id", "scope", "period", "soft_usd", "hard_usd", "action", "fallback_model", "created_at")
LIMIT_COLS = ("org_id", "scope", "requests_per_min", "tokens_per_min", "concurrent_streams", "created_at")
TARGET_COLS = ("org_id", "scope", "p95_ms", "created_at")
# (table, columns, struct, key columns) of the tables that are one row per (org, scope[, period]).
_SCOPED: dict[type[Any], tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    Budget: ("budgets", BUDGET_COLS, ("org_id", "scope", "period")),
    RateLimit: ("rate_limits", LIMIT_COLS, ("org_id", "scope")),
    LatencyTarget: ("latency_targets", TARGET_COLS, ("org_id", "scope")),
}
_targets = msgspec.json.Decoder(tuple[Target, ...])
_statuses = msgspec.json.Decoder(tuple[int, ...])


def org_of(r: Any) -> OrgEntry:
    return OrgEntry(
        id=r[0], name=r[1], disabled=bool(r[2]), azure_endpoint=r[3], azure_api_version=r[4], created_at=r[5]
    )


def key_of(r: Any) -> KeyEntry:
    return KeyEntry(id=r[0], org_id=r[1], prefix=r[2], key_hash=bytes(r[3]), created_at=r[4], revoked_at=r[5])


def rule_of(r: Any) -> Rule:
    return Rule(
        id=r[0],
        org_id=r[1],
        name=r[2],
        priority=r[3],
        enabled=bool(r[4]),
        match_feature=r[5],
        match_task=r[6],
        match_provider=r[7],
        match_model=r[8],
        target_provider=r[9],
        target_model=r[10],
        split_percent=r[11],
        created_at=r[12],
    )


def chain_of(r: Any) -> FallbackChain:
    return FallbackChain(
        org_id=r[0],
        scope=r[1],
        targets=_targets.decode(r[2]),
        on_status=_statuses.decode(r[3]),
        created_at=r[4],
    )


class SharedSQL(Primitives):
    """Control-plane table storage on the backend's primitives."""

    async def control_version(self) -> int:
        rows = await self._fetch("SELECT version FROM control_version", ())
        return int(rows[0][0]) if rows else 0

    async def load_control(self) -> ControlData:
        versions, orgs, keys = await self._snapshot(
            [
                ("SELECT version FROM control_version", ()),
                (f"SELECT {ORG_COLS} FROM orgs", ()),
                (f"SELECT {ORG_KEY_COLS} FROM org_keys WHERE revoked_at IS NULL", ()),
            ]
        )
        base = ControlData(
            version=int(versions[0][0]) if versions else 0,
            orgs=[org_of(r) for r in orgs],
            keys=[key_of(r) for r in keys],
        )
        return msgspec.structs.replace(base, **await self.control_extras())

    async def create_org(self, name: str) -> OrgEntry:
        org = OrgEntry(id="org_" + uuid.uuid4().hex[:16], name=name, created_at=time.time())
        try:
            await self._mutate(
                [
                    (
                        "INSERT INTO orgs (id, name, created_at) VALUES (%s, %s, %s)",
                        (org.id, name, org.created_at),
                    )
                ]
            )
        except Duplicate:
            raise Conflict(f"an org named {name!r} already exists") from None
        return org

    async def get_org(self, name_or_id: str) -> OrgEntry:
        rows = await self._fetch(
            f"SELECT {ORG_COLS} FROM orgs WHERE id = %s OR name = %s", (name_or_id, name_or_id)
        )
        if not rows:
            raise NotFound(f"no org named {name_or_id!r}")
        return org_of(rows[0])

    async def list_orgs(self) -> list[OrgEntry]:
        return [org_of(r) for r in await self._fetch(f"SELECT {ORG_COLS} FROM orgs ORDER BY created_at", ())]

    async def set_org_disabled(self, org_id: str, disabled: bool) -> None:
        await self._mutate(
            [("UPDATE orgs SET disabled = %s WHERE id = %s", (disabled, org_id))],
            missing=f"no org {org_id!r}",
        )

    async def set_org_azure(self, org_id: str, endpoint: str | None, api_version: str | None) -> None:
        await self._mutate(
            [
                (
                    "UPDATE orgs SET azure_endpoint = %s, azure_api_version = %s WHERE id = %s",
                    (endpoint, api_version, org_id),
                )
            ],
            missing=f"no org {org_id!r}",
        )

    async def create_key(self, org_id: str) -> tuple[str, KeyEntry]:
        # A prefix already taken is drawn again (the prefix names the key).
        for _ in range(5):
            key, prefix, digest = new_key()
            entry = KeyEntry(
                id="key_" + uuid.uuid4().hex[:16],
                org_id=org_id,
                prefix=prefix,
                key_hash=digest,
                created_at=time.time(),
            )
            try:
                await self._mutate(
                    [
                        (
                            f"INSERT INTO org_keys ({ORG_KEY_COLS}) VALUES (%s, %s, %s, %s, %s, NULL)",
                            (entry.id, org_id, prefix, digest, entry.created_at),
                        )
                    ]
                )
                return key, entry
            except MissingReference:
                raise NotFound(f"no org {org_id!r}") from None
            except Duplicate:
                continue
        raise Conflict("could not generate a unique key prefix")

    async def list_keys(self, org_id: str) -> list[KeyEntry]:
        rows = await self._fetch(
            f"SELECT {ORG_KEY_COLS} FROM org_keys WHERE org_id = %s ORDER BY created_at", (org_id,)
        )
        return [key_of(r) for r in rows]

    async def revoke_key(self, org_id: str, prefix: str) -> None:
        await self._mutate(
            [
                (
                    "UPDATE org_keys SET revoked_at = %s "
                    "WHERE org_id = %s AND prefix = %s AND revoked_at IS NULL",
                    (time.time(), org_id, prefix),
                )
            ],
            missing=f"no active key with prefix {prefix!r} in this org",
        )

    async def list_rules(self, org_id: str) -> list[Rule]:
        rows = await self._fetch(
            f"SELECT {RULE_COLS} FROM routing_rules WHERE org_id = %s ORDER BY priority, created_at",
            (org_id,),
        )
        return [rule_of(r) for r in rows]

    async def all_rules(self) -> list[Rule]:
        rows = await self._fetch(
            f"SELECT {RULE_COLS} FROM routing_rules ORDER BY org_id, priority, created_at", ()
        )
        return [rule_of(r) for r in rows]

    async def create_rule(self, rule: Rule) -> Rule:
        rule = msgspec.structs.replace(
            rule, id=rule.id or "rule_" + uuid.uuid4().hex[:12], created_at=time.time()
        )
        await self._mutate(
            [
                (
                    f"INSERT INTO routing_rules ({RULE_COLS}) VALUES ({', '.join(['%s'] * 13)})",
                    tuple(getattr(rule, c.strip()) for c in RULE_COLS.split(",")),
                )
            ]
        )
        return rule

    async def update_rule(self, rule: Rule) -> None:
        sets = ", ".join(f"{c.strip()} = %s" for c in RULE_COLS.split(",")[2:12])
        values = tuple(getattr(rule, c.strip()) for c in RULE_COLS.split(",")[2:12])
        await self._mutate(
            [
                (
                    f"UPDATE routing_rules SET {sets} WHERE org_id = %s AND id = %s",
                    (*values, rule.org_id, rule.id),
                )
            ],
            missing=f"no rule {rule.id!r}",
        )

    async def delete_rule(self, org_id: str, rule_id: str) -> None:
        await self._mutate(
            [("DELETE FROM routing_rules WHERE org_id = %s AND id = %s", (org_id, rule_id))],
            missing=f"no rule {rule_id!r}",
        )

    async def reorder_rules(self, org_id: str, rule_ids: list[str]) -> None:
        """Give the rules priorities 10, 20, ... in the given order."""
        await self._mutate(
            [
                (
                    "UPDATE routing_rules SET priority = %s WHERE org_id = %s AND id = %s",
                    ((i + 1) * 10, org_id, rid),
                )
                for i, rid in enumerate(rule_ids)
            ],
            missing="no such rule",
        )

    async def list_fallbacks(self, org_id: str | None = None) -> list[FallbackChain]:
        if org_id is None:
            rows = await self._fetch(f"SELECT {CHAIN_COLS} FROM fallback_chains", ())
        else:
            rows = await self._fetch(
                f"SELECT {CHAIN_COLS} FROM fallback_chains WHERE org_id = %s ORDER BY scope", (org_id,)
            )
        return [chain_of(r) for r in rows]

    async def set_fallback(self, chain: FallbackChain) -> None:
        enc = msgspec.json.encode
        await self._mutate(
            [
                ("DELETE FROM fallback_chains WHERE org_id = %s AND scope = %s", (chain.org_id, chain.scope)),
                (
                    f"INSERT INTO fallback_chains ({CHAIN_COLS}) VALUES (%s, %s, %s, %s, %s)",
                    (
                        chain.org_id,
                        chain.scope,
                        enc(chain.targets).decode(),
                        enc(chain.on_status).decode(),
                        time.time(),
                    ),
                ),
            ]
        )

    async def delete_fallback(self, org_id: str, scope: str) -> None:
        await self._mutate(
            [("DELETE FROM fallback_chains WHERE org_id = %s AND scope = %s", (org_id, scope))],
            missing=f"no fallback chain for {scope!r}",
        )

    async def control_extras(self) -> dict[str, Any]:
        """Every rule, chain and policy row, for a control snapshot."""
        out: dict[str, Any] = {
            "rules": await self.all_rules(),
            "fallbacks": await self.list_fallbacks(),
        }
        for typ, field in (
            (Budget, "budgets"),
            (RateLimit, "rate_limits"),
            (LatencyTarget, "latency_targets"),
        ):
            out[field] = await self.list_scoped(typ)
        return out

    async def list_scoped(self, typ: type[Any], org_id: str | None = None) -> list[Any]:
        """Budgets, rate limits or latency targets (all, or one org's)."""
        table, cols, keys = _SCOPED[typ]
        where, args = ("WHERE org_id = %s", (org_id,)) if org_id else ("", ())
        rows = await self._fetch(
            f"SELECT {', '.join(cols)} FROM {table} {where} ORDER BY {', '.join(keys)}", args
        )
        return [typ(**dict(zip(cols, r, strict=True))) for r in rows]

    async def put_scoped(self, item: Any) -> None:
        """Create or replace the row with the item's key."""
        table, cols, keys = _SCOPED[type(item)]
        item = msgspec.structs.replace(item, created_at=time.time())
        await self._mutate(
            [
                (
                    f"DELETE FROM {table} WHERE {' AND '.join(f'{k} = %s' for k in keys)}",
                    tuple(getattr(item, k) for k in keys),
                ),
                (
                    f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
                    tuple(getattr(item, c) for c in cols),
                ),
            ]
        )

    async def delete_scoped(self, typ: type[Any], key: tuple[str, ...]) -> None:
        table, _, keys = _SCOPED[typ]
        await self._mutate(
            [(f"DELETE FROM {table} WHERE {' AND '.join(f'{k} = %s' for k in keys)}", key)],
            missing=f"no {table[:-1].replace('_', ' ')} for {'/'.join(key[1:])}",
        )
