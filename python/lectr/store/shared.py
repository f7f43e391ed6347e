"""Store code written once for both backends on two primitives each provides
(`_fetch`, `_mutate`): the control-plane tables beyond orgs and keys (routing
rules, fallback chains, budgets, rate limits, latency targets) and the simple
aggregate reads (record counts, spend)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec

from lectr.store.primitives import Primitives
from lectr.types import Budget, FallbackChain, LatencyTarget, RateLimit, Rule, Target

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

    async def spend(self, org_id: str, feature: str | None, since: float) -> float:
        """USD recorded for an org (or one feature) since a Unix time."""
        query = (
            "SELECT coalesce(sum(cost_usd), 0) FROM requests WHERE org_id = %s AND ts >= " + self._ts_param
        )
        args: tuple[Any, ...] = (org_id, since)
        if feature is not None:
            query += " AND feature = %s"
            args += (feature,)
        rows = await self._fetch(query, args)
        return float(rows[0][0]) if rows else 0.0

    async def count_records(self, org_id: str | None = None) -> int:
        if org_id is None:
            rows = await self._fetch("SELECT count(*) FROM requests", ())
        else:
            rows = await self._fetch("SELECT count(*) FROM requests WHERE org_id = %s", (org_id,))
        return int(rows[0][0]) if rows else 0

    # How a Unix-seconds parameter compares with the ts column.
    _ts_param = "%s"
