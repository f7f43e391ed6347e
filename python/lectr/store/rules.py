"""Routing rules and fallback chains in the store, written once for both
backends on two primitives each backend provides (`_fetch`, `_mutate`)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec

from lectr.types import FallbackChain, Rule, Target

RULE_COLS = (
    "id, org_id, name, priority, enabled, match_feature, match_task, match_provider, match_model, "
    "target_provider, target_model, split_percent, created_at"
)
CHAIN_COLS = "org_id, scope, targets, on_status, created_at"
_targets = msgspec.json.Decoder(tuple[Target, ...])
_statuses = msgspec.json.Decoder(tuple[int, ...])


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


class RulesMixin:
    """Rule and fallback storage; the backend supplies the two primitives
    (SQL uses `%s` placeholders; SQLite translates them)."""

    async def _fetch(self, query: str, args: tuple[Any, ...]) -> list[Any]:
        raise NotImplementedError

    async def _mutate(self, ops: list[tuple[str, tuple[Any, ...]]], missing: str | None = None) -> None:
        """Run `ops` in one transaction that also bumps the control version.
        Raises Missing(missing) if the first op touched no row, Conflict on a
        uniqueness violation."""
        raise NotImplementedError

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
