"""Shared counters behind rate limits and budgets, with one semantics in two
places: in this process (default) or in Redis (`redis_counters`: one Lua
script per admission and one per settlement, so all checks cost one round
trip and are atomic across every instance).

Kinds of check, each on one key:
- `req`: at most `limit` admissions in any `window_ms` (a sliding log).
- `tok`: at most `limit` tokens in any `window_ms`; admission reserves
  `amount`, settlement replaces it with the actual count.
- `str`: at most `limit` open at once (streams); settlement closes it.
  Entries older than `window_ms` are presumed leaked by a dead instance.
- `bud`: `spent + reserved + amount <= limit` (a hard cap in USD); admission
  reserves `amount`, settlement moves the actual cost to `spent`.
Admission evaluates every check before changing anything: all pass, or the
first failure is reported and nothing is taken.
"""

from __future__ import annotations

import collections
from typing import Protocol

import msgspec


class Check(msgspec.Struct, frozen=True, array_like=True):
    kind: str
    key: str
    limit: float
    amount: float = 1.0
    window_ms: int = 60_000


class Verdict(msgspec.Struct, frozen=True):
    """`failed` is the index of the first failing check, or -1."""

    failed: int
    retry_after_ms: int = 0


class Settle(msgspec.Struct, frozen=True, array_like=True):
    kind: str
    key: str
    reserved: float = 0.0
    actual: float = 0.0


class Counters(Protocol):
    async def admit(self, checks: list[Check], member: str, now_ms: int) -> Verdict: ...

    async def settle(self, settles: list[Settle], member: str) -> list[float]:
        """Apply settlements; for each `bud` one, the budget's spend after it."""
        ...

    async def budget(self, key: str) -> tuple[float, float]:
        """(spent, reserved) of a budget key."""
        ...

    async def seed_budget(self, key: str, spent: float, ttl_ms: int) -> None:
        """Set a budget's spend if it has none yet (from the database)."""
        ...

    async def usage(self, kind: str, key: str, window_ms: int, now_ms: int) -> float:
        """Current count (req, str) or token sum (tok) in the window."""
        ...

    async def once(self, key: str, ttl_ms: int) -> bool:
        """True the first time `key` is claimed (alert de-duplication)."""
        ...

    async def close(self) -> None: ...


class LocalCounters:
    """The counters in this process (per worker: limits are per process)."""

    def __init__(self) -> None:
        # key -> ordered entries (ts_ms, member, amount)
        self._logs: dict[str, collections.OrderedDict[str, tuple[int, float]]] = {}
        self._budgets: dict[str, list[float]] = {}
        self._once: dict[str, int] = {}

    def _log(self, key: str, window_ms: int, now_ms: int) -> collections.OrderedDict[str, tuple[int, float]]:
        log = self._logs.setdefault(key, collections.OrderedDict())
        while log:
            first = next(iter(log.values()))
            if first[0] > now_ms - window_ms:
                break
            log.popitem(last=False)
        return log

    async def admit(self, checks: list[Check], member: str, now_ms: int) -> Verdict:
        for i, c in enumerate(checks):
            if c.kind == "bud":
                spent, reserved = self._budgets.setdefault(c.key, [0.0, 0.0])
                if spent + reserved + c.amount > c.limit:
                    return Verdict(i)
                continue
            log = self._log(c.key, c.window_ms, now_ms)
            used = sum(a for _, a in log.values()) if c.kind == "tok" else len(log)
            need = c.amount if c.kind == "tok" else 1
            if used + need > c.limit:
                oldest = next(iter(log.values()))[0] if log else now_ms
                retry = oldest + c.window_ms - now_ms if c.kind != "str" else 1000
                return Verdict(i, max(retry, 1))
        for c in checks:
            if c.kind == "bud":
                self._budgets[c.key][1] += c.amount
            else:
                self._logs[c.key][member] = (now_ms, c.amount)
        return Verdict(-1)

    async def settle(self, settles: list[Settle], member: str) -> list[float]:
        spent_after = []
        for s in settles:
            if s.kind == "bud":
                b = self._budgets.setdefault(s.key, [0.0, 0.0])
                b[1] = max(0.0, b[1] - s.reserved)
                b[0] += s.actual
                spent_after.append(b[0])
            elif s.kind == "tok":
                log = self._logs.get(s.key)
                if log is not None and member in log:
                    log[member] = (log[member][0], s.actual)
            elif s.kind == "str":
                log = self._logs.get(s.key)
                if log is not None:
                    log.pop(member, None)
        return spent_after

    async def budget(self, key: str) -> tuple[float, float]:
        spent, reserved = self._budgets.get(key, [0.0, 0.0])
        return spent, reserved

    async def seed_budget(self, key: str, spent: float, ttl_ms: int) -> None:
        self._budgets.setdefault(key, [spent, 0.0])

    async def usage(self, kind: str, key: str, window_ms: int, now_ms: int) -> float:
        log = self._log(key, window_ms, now_ms)
        return float(sum(a for _, a in log.values())) if kind == "tok" else float(len(log))

    async def once(self, key: str, ttl_ms: int) -> bool:
        if key in self._once:
            return False
        self._once[key] = ttl_ms
        return True

    async def close(self) -> None:
        return None
