"""Shared counters behind rate limits and budgets, with one semantics in two
places: in this process (default) or in Redis (`redis_counters`: one Lua
script per admission and one per settlement, so all checks cost one round
trip and are atomic across every instance).

Kinds of check, each on one key:
- `req`: at most `limit` admissions in any `window_ms` (a sliding log).
- `tok`: at most `limit` tokens in any `window_ms`; admission reserves
  `amount`, settlement replaces it with the actual count. The log keeps a
  running total next to its entries (adjusted as they enter, settle and
  leave the window), so a check costs the same however full the window is.
- `str`: at most `limit` open at once (streams); settlement closes it.
  Entries older than `window_ms` are presumed leaked by a dead instance.
- `bud`: `spent + reserved + amount <= limit` (a hard cap in USD); admission
  reserves `amount` and records it under the member (a hold), settlement
  releases the hold and moves the actual cost to `spent`.
- `hold`: on a budget key, a hold of nothing and no check: a request served
  past the cap under a fallback action, whose cost still counts as spend.
Admission evaluates every check before changing anything: all pass, or the
first failure is reported and nothing is taken.

Settlement is idempotent per member: a budget settlement applies only while
its member's hold is there and removes it, a token settlement only while the
entry still holds the reserved amount, a stream's only while it is open. A
settlement retried after a timeout whose first attempt did reach the store is
therefore applied once; one that never reached it still applies. A budget
settlement without a hold (never admitted, or already settled) changes nothing
and reports the current spend.
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


class _Log:
    """A sliding log: member -> (ts_ms, amount) in admission order, and the sum of the amounts."""

    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: collections.OrderedDict[str, tuple[int, float]] = collections.OrderedDict()
        self.total = 0.0

    def trim(self, cutoff_ms: int) -> None:
        """Drop the entries at or before `cutoff_ms`."""
        entries = self.entries
        while entries:
            first = next(iter(entries.values()))
            if first[0] > cutoff_ms:
                return
            self.total -= entries.popitem(last=False)[1][1]
        self.total = 0.0  # empty: exact again, whatever rounding the floats gathered

    def put(self, member: str, ts_ms: int, amount: float) -> None:
        old = self.entries.get(member)
        if old is not None:
            self.total -= old[1]
        self.entries[member] = (ts_ms, amount)
        self.total += amount


class _Budget:
    __slots__ = ("held", "reserved", "spent")

    def __init__(self, spent: float = 0.0) -> None:
        self.spent = spent
        self.reserved = 0.0
        self.held: dict[str, float] = {}  # member -> amount reserved at its admission


class LocalCounters:
    """The counters in this process (per worker: limits are per process)."""

    def __init__(self) -> None:
        self._logs: dict[str, _Log] = {}
        self._budgets: dict[str, _Budget] = {}
        self._once: dict[str, int] = {}

    def _log(self, key: str, window_ms: int, now_ms: int) -> _Log:
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = _Log()
        else:
            log.trim(now_ms - window_ms)
        return log

    def _budget(self, key: str) -> _Budget:
        b = self._budgets.get(key)
        if b is None:
            b = self._budgets[key] = _Budget()
        return b

    async def admit(self, checks: list[Check], member: str, now_ms: int) -> Verdict:
        for i, c in enumerate(checks):
            if c.kind == "bud":
                b = self._budget(c.key)
                if b.spent + b.reserved + c.amount > c.limit:
                    return Verdict(i)
                continue
            if c.kind == "hold":
                continue
            log = self._log(c.key, c.window_ms, now_ms)
            if c.kind == "tok":
                used, need = log.total, c.amount
            else:
                used, need = len(log.entries), 1
            if used + need > c.limit:
                oldest = next(iter(log.entries.values()))[0] if log.entries else now_ms
                retry = oldest + c.window_ms - now_ms if c.kind != "str" else 1000
                return Verdict(i, max(retry, 1))
        for c in checks:
            if c.kind in ("bud", "hold"):
                b = self._budget(c.key)
                if member not in b.held:  # a member holds once
                    amount = c.amount if c.kind == "bud" else 0.0
                    b.held[member] = amount
                    b.reserved += amount
            else:
                self._logs[c.key].put(member, now_ms, c.amount)
        return Verdict(-1)

    async def settle(self, settles: list[Settle], member: str) -> list[float]:
        spent_after = []
        for s in settles:
            if s.kind == "bud":
                b = self._budgets.get(s.key)
                held = b.held.pop(member, None) if b is not None else None
                if b is not None and held is not None:
                    b.reserved = max(0.0, b.reserved - held)
                    b.spent += s.actual
                spent_after.append(b.spent if b is not None else 0.0)
            elif s.kind == "tok":
                log = self._logs.get(s.key)
                entry = log.entries.get(member) if log is not None else None
                if log is not None and entry is not None and entry[1] == s.reserved:
                    log.entries[member] = (entry[0], s.actual)
                    log.total += s.actual - s.reserved
            elif s.kind == "str":
                log = self._logs.get(s.key)
                if log is not None:
                    entry = log.entries.pop(member, None)
                    if entry is not None:
                        log.total -= entry[1]
        return spent_after

    async def budget(self, key: str) -> tuple[float, float]:
        b = self._budgets.get(key)
        return (b.spent, b.reserved) if b is not None else (0.0, 0.0)

    async def seed_budget(self, key: str, spent: float, ttl_ms: int) -> None:
        if key not in self._budgets:
            self._budgets[key] = _Budget(spent)

    async def usage(self, kind: str, key: str, window_ms: int, now_ms: int) -> float:
        log = self._log(key, window_ms, now_ms)
        return float(log.total) if kind == "tok" else float(len(log.entries))

    async def once(self, key: str, ttl_ms: int) -> bool:
        if key in self._once:
            return False
        self._once[key] = ttl_ms
        return True

    async def close(self) -> None:
        return None
