"""Shared counters behind rate limits and budgets, with one semantics in two
places: in this process (default) or in Redis (one Lua script per admission
and one per settlement, so all checks cost one round trip and are atomic
across every instance).

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


# KEYS: one per check. ARGV: now_ms, member, then 4 values per check
# (kind, limit, amount, window_ms). Returns {failed_index (0-based, -1 ok), retry_ms}.
_ADMIT = """
local now = tonumber(ARGV[1])
local member = ARGV[2]
local n = #KEYS
for i = 1, n do
  local kind = ARGV[3 + (i - 1) * 4]
  local limit = tonumber(ARGV[4 + (i - 1) * 4])
  local amount = tonumber(ARGV[5 + (i - 1) * 4])
  local window = tonumber(ARGV[6 + (i - 1) * 4])
  local key = KEYS[i]
  if kind == 'bud' then
    local v = redis.call('HMGET', key, 'spent', 'reserved')
    local spent = tonumber(v[1]) or 0
    local reserved = tonumber(v[2]) or 0
    if spent + reserved + amount > limit then return {i - 1, 0} end
  else
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    local used
    if kind == 'tok' then
      used = 0
      for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do
        used = used + tonumber(string.match(m, '|([^|]+)$'))
      end
    else
      used = redis.call('ZCARD', key)
    end
    local need = 1
    if kind == 'tok' then need = amount end
    if used + need > limit then
      local retry = 1000
      if kind ~= 'str' then
        local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
        if oldest[2] then retry = tonumber(oldest[2]) + window - now end
      end
      if retry < 1 then retry = 1 end
      return {i - 1, retry}
    end
  end
end
for i = 1, n do
  local kind = ARGV[3 + (i - 1) * 4]
  local amount = tonumber(ARGV[5 + (i - 1) * 4])
  local window = tonumber(ARGV[6 + (i - 1) * 4])
  local key = KEYS[i]
  if kind == 'bud' then
    redis.call('HINCRBYFLOAT', key, 'reserved', amount)
  else
    redis.call('ZADD', key, now, member .. '|' .. ARGV[5 + (i - 1) * 4])
    redis.call('PEXPIRE', key, window + 1000)
  end
end
return {-1, 0}
"""

# KEYS: one per settlement. ARGV: member, then 3 per settlement (kind, reserved, actual).
# Returns the spend after each budget settlement.
_SETTLE = """
local member = ARGV[1]
local out = {}
for i = 1, #KEYS do
  local kind = ARGV[2 + (i - 1) * 3]
  local reserved = ARGV[3 + (i - 1) * 3]
  local actual = ARGV[4 + (i - 1) * 3]
  local key = KEYS[i]
  if kind == 'bud' then
    redis.call('HINCRBYFLOAT', key, 'reserved', -tonumber(reserved))
    out[#out + 1] = redis.call('HINCRBYFLOAT', key, 'spent', tonumber(actual))
  else
    local old = member .. '|' .. reserved
    local score = redis.call('ZSCORE', key, old)
    if score then
      redis.call('ZREM', key, old)
      if kind == 'tok' then redis.call('ZADD', key, score, member .. '|' .. actual) end
    end
  end
end
return out
"""


def _num(v: float) -> str:
    # Lua's tonumber and Redis floats both read repr() of a Python float.
    return repr(float(v)) if v != int(v) else str(int(v))


class RedisCounters:
    """The counters in Redis, shared by every instance."""

    def __init__(self, url: str, timeout: float) -> None:
        import redis.asyncio as aioredis

        self._r = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False
        )
        self._admit = self._r.register_script(_ADMIT)
        self._settle = self._r.register_script(_SETTLE)

    async def admit(self, checks: list[Check], member: str, now_ms: int) -> Verdict:
        args: list[str | int] = [now_ms, member]
        for c in checks:
            args += [c.kind, _num(c.limit), _num(c.amount), c.window_ms]
        failed, retry = await self._admit(keys=[c.key for c in checks], args=args)
        return Verdict(int(failed), int(retry))

    async def settle(self, settles: list[Settle], member: str) -> list[float]:
        if not settles:
            return []
        # Stream and token entries were added as member|amount at admission.
        args: list[str] = [member]
        for s in settles:
            args += [s.kind, _num(s.reserved), _num(s.actual)]
        out = await self._settle(keys=[s.key for s in settles], args=args)
        return [float(v) for v in out]

    async def budget(self, key: str) -> tuple[float, float]:
        spent, reserved = await self._r.hmget(key, ["spent", "reserved"])
        return float(spent or 0), float(reserved or 0)

    async def seed_budget(self, key: str, spent: float, ttl_ms: int) -> None:
        if await self._r.hsetnx(key, "spent", _num(spent)):
            await self._r.pexpire(key, ttl_ms)

    async def usage(self, kind: str, key: str, window_ms: int, now_ms: int) -> float:
        members = await self._r.zrangebyscore(key, now_ms - window_ms, "+inf")
        if kind == "tok":
            total = 0.0
            for m in members:
                raw = m if isinstance(m, bytes) else str(m).encode()
                total += float(raw.rsplit(b"|", 1)[1])
            return total
        return float(len(members))

    async def once(self, key: str, ttl_ms: int) -> bool:
        return bool(await self._r.set(key, b"1", nx=True, px=ttl_ms))

    async def close(self) -> None:
        await self._r.aclose()
