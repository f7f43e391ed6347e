"""The counters in Redis (see `counters` for the semantics): one Lua script
per admission and one per settlement, each one round trip, atomic across
every instance. Imported only when Redis is configured."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from lectr.control.policy.counters import Check, Settle, Verdict

# Key layout. `req` and `str`: a sorted set at the check's key, members
# `member|amount` scored by admission time. `tok`: the same log at `<key>:log`
# and the sum of its amounts at `<key>:sum` (a string, INCRBYFLOAT), both with
# the same expiry; new names, so a log written before the running total
# existed is never read as one that has it. `bud`: a hash at the key with
# `spent`, `reserved` and a hold `r:<member>` (the amount reserved) per admitted,
# unsettled request: settlement applies only by removing a hold, so it applies
# once. Old instances read `spent` and `reserved` alike and ignore the holds.
#
# KEYS, in both scripts: per check (settlement) its key, and for a `tok` one
# the log then the sum.

# ARGV: now_ms, member, then 4 values per check (kind, limit, amount, window_ms).
# Returns {failed_index (0-based, -1 ok), retry_ms}.
_ADMIT = """
local now = tonumber(ARGV[1])
local member = ARGV[2]
local n = (#ARGV - 2) / 4
local keys, sums = {}, {}
local k = 1
for i = 1, n do
  keys[i] = KEYS[k]
  k = k + 1
  if ARGV[3 + (i - 1) * 4] == 'tok' then
    sums[i] = KEYS[k]
    k = k + 1
  end
end

local function amount_of(m)
  return tonumber(string.match(m, '|([^|]+)$'))
end

-- The tokens in a window: the running total less the entries that left it
-- (read before they are removed), O(log n + removed).
local function tokens(key, sum, cutoff)
  local gone = redis.call('ZRANGEBYSCORE', key, '-inf', cutoff)
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', key, '-inf', cutoff) end
  if redis.call('ZCARD', key) == 0 then
    redis.call('DEL', sum)  -- an empty window sums to exactly 0 again
    return 0
  end
  local total = redis.call('GET', sum)
  if not total then
    -- A log without its total (evicted apart): add it up once, then keep it.
    local t = 0
    for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do t = t + amount_of(m) end
    redis.call('SET', sum, string.format('%.17g', t))
    local ttl = redis.call('PTTL', key)
    if ttl > 0 then redis.call('PEXPIRE', sum, ttl) end
    return t
  end
  if #gone == 0 then return tonumber(total) end
  local out = 0
  for _, m in ipairs(gone) do out = out + amount_of(m) end
  return tonumber(redis.call('INCRBYFLOAT', sum, string.format('%.17g', -out)))
end

for i = 1, n do
  local kind = ARGV[3 + (i - 1) * 4]
  local limit = tonumber(ARGV[4 + (i - 1) * 4])
  local amount = tonumber(ARGV[5 + (i - 1) * 4])
  local window = tonumber(ARGV[6 + (i - 1) * 4])
  local key = keys[i]
  if kind == 'bud' then
    local v = redis.call('HMGET', key, 'spent', 'reserved')
    local spent = tonumber(v[1]) or 0
    local reserved = tonumber(v[2]) or 0
    if spent + reserved + amount > limit then return {i - 1, 0} end
  elseif kind ~= 'hold' then
    local used, need
    if kind == 'tok' then
      used = tokens(key, sums[i], now - window)
      need = amount
    else
      redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
      used = redis.call('ZCARD', key)
      need = 1
    end
    if used + need > limit then
      local retry = 1000
      if kind ~= 'str' then
        -- when the oldest entry leaves; a whole window when none is there (as in-process)
        retry = window
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
  local amount = ARGV[5 + (i - 1) * 4]
  local window = tonumber(ARGV[6 + (i - 1) * 4])
  local key = keys[i]
  if kind == 'bud' then
    if redis.call('HSETNX', key, 'r:' .. member, amount) == 1 then  -- a member holds once
      redis.call('HINCRBYFLOAT', key, 'reserved', amount)
    end
  elseif kind == 'hold' then
    redis.call('HSETNX', key, 'r:' .. member, '0')
  else
    local added = redis.call('ZADD', key, now, member .. '|' .. amount)
    redis.call('PEXPIRE', key, window + 1000)
    if kind == 'tok' then
      if added == 1 then redis.call('INCRBYFLOAT', sums[i], amount) end
      redis.call('PEXPIRE', sums[i], window + 1000)
    end
  end
end
return {-1, 0}
"""

# ARGV: member, then 3 per settlement (kind, reserved, actual).
# Returns the spend after each budget settlement.
_SETTLE = """
local member = ARGV[1]
local out = {}
local k = 1
for i = 1, (#ARGV - 1) / 3 do
  local kind = ARGV[2 + (i - 1) * 3]
  local reserved = ARGV[3 + (i - 1) * 3]
  local actual = ARGV[4 + (i - 1) * 3]
  local key = KEYS[k]
  k = k + 1
  if kind == 'bud' then
    local field = 'r:' .. member
    local held = redis.call('HGET', key, field)
    if held then
      redis.call('HDEL', key, field)
      if tonumber(held) ~= 0 then redis.call('HINCRBYFLOAT', key, 'reserved', '-' .. held) end
      out[#out + 1] = redis.call('HINCRBYFLOAT', key, 'spent', actual)
    else
      -- No hold: settled already (a retry whose first attempt got here) or never admitted.
      out[#out + 1] = redis.call('HGET', key, 'spent') or '0'
    end
  else
    local sum
    if kind == 'tok' then
      sum = KEYS[k]
      k = k + 1
    end
    -- Only an entry that still holds the reserved amount: a replay finds none.
    local old = member .. '|' .. reserved
    local score = redis.call('ZSCORE', key, old)
    if score then
      redis.call('ZREM', key, old)
      if kind == 'tok' then
        local delta = -tonumber(reserved)
        if redis.call('ZADD', key, score, member .. '|' .. actual) == 1 then
          delta = delta + tonumber(actual)
        end
        if delta ~= 0 and redis.call('EXISTS', sum) == 1 then
          redis.call('INCRBYFLOAT', sum, string.format('%.17g', delta))
        end
      end
    end
  end
end
return out
"""


def _num(v: float) -> bytes:
    # Lua's tonumber and Redis floats both read repr() of a Python float. Admission
    # and settlement must spell an amount alike: it is part of the sorted-set member.
    return repr(float(v)).encode() if v != int(v) else b"%d" % int(v)


class _Script:
    """A Lua script run by EVALSHA (EVAL when the server's script cache lost it)."""

    def __init__(self, body: str) -> None:
        self.body = body.encode()
        self.sha = hashlib.sha1(self.body, usedforsecurity=False).hexdigest().encode()


_ADMIT_SCRIPT = _Script(_ADMIT)
_SETTLE_SCRIPT = _Script(_SETTLE)
_LOG = b":log"  # a `tok` check's log and running total (see the key layout above)
_SUM = b":sum"

MAX_IDLE_CONNECTIONS = 32
_EARLY = 0.001  # a timer may fire up to this much before a deadline and still count it as due
# Whether an idle connection has something to read or saw EOF: `can_read` since
# redis-py 8, `can_read_destructive` before (deprecated in 8).
_PROBE = "can_read" if hasattr(AbstractConnection, "can_read") else "can_read_destructive"


def _redis_keys(kind: str, key: str) -> tuple[bytes, ...]:
    """The Redis keys of one counter, in the order the scripts take them."""
    k = key.encode()
    return (k + _LOG, k + _SUM) if kind == "tok" else (k,)


class _Deadlines:
    """`asyncio.timeout` for many short calls at the cost of one timer.

    Each call records its task and deadline; a single timer, armed for the
    earliest deadline, cancels the tasks that overran and re-arms itself for
    the next one (or stays off when nothing is in flight). A call that ends in
    time costs two dict operations instead of a timer armed and cancelled.
    Cancellation is counted as asyncio.timeout counts it: a call cancelled by
    its deadline alone ends in TimeoutError, any other cancellation stands.
    """

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._due: dict[asyncio.Task[Any], tuple[float, int]] = {}
        self._fired: dict[asyncio.Task[Any], int] = {}
        self._timer: asyncio.TimerHandle | None = None

    def start(self, task: asyncio.Task[Any]) -> None:
        loop = task.get_loop()
        due = loop.time() + self._timeout
        self._due[task] = (due, task.cancelling())
        if self._timer is None:
            self._timer = loop.call_at(due, self._fire, loop)

    def end(self, task: asyncio.Task[Any]) -> bool:
        """Close the task's call; True when its deadline (and nothing else) cancelled it."""
        self._due.pop(task, None)
        cancelling = self._fired.pop(task, None)
        return cancelling is not None and task.uncancel() <= cancelling

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time() + _EARLY
        nxt = None
        for task, (due, cancelling) in list(self._due.items()):
            if due <= now:
                del self._due[task]
                self._fired[task] = cancelling
                task.cancel()
            elif nxt is None or due < nxt:
                nxt = due
        if nxt is not None:
            self._timer = loop.call_at(nxt, self._fire, loop)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class RedisCounters:
    """The counters in Redis, shared by every instance.

    Admission and settlement are on the request path, so they skip redis-py's
    client layer (pool lock and bookkeeping, retry wrapper, Script object) and
    its per-operation socket timeouts (a task and a timer for each write, a
    timer for each read): each runs on a redis-py connection of its own, held
    in a small free list, as one EVALSHA round trip bounded by `timeout`
    (`_Deadlines`: no timer per call). Connections are redis-py's (connect,
    AUTH/SELECT, hiredis or the pure-Python parser), so is the packing of the
    command. A connection that failed or timed out is disconnected and
    dropped, so a late reply can never be read as the answer to a later call.
    Every other command goes through the ordinary client.
    """

    def __init__(self, url: str, timeout: float) -> None:
        self._r = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False
        )
        self._timeout = timeout
        # Only a factory of hot-path connections: the deadline bounds their reads and writes.
        self._factory = aioredis.ConnectionPool.from_url(
            url, socket_timeout=None, socket_connect_timeout=timeout, retry_on_timeout=False
        )
        self._idle: list[AbstractConnection] = []
        self._deadlines = _Deadlines(timeout)

    async def _eval(self, script: _Script, keys: list[bytes], args: list[bytes]) -> Any:
        """One script run, within the deadline; raises TimeoutError past it."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("the Redis counters are called from a task")
        self._deadlines.start(task)
        try:
            return await self._run(script, keys, args)
        except asyncio.CancelledError:
            if self._deadlines.end(task):
                raise TimeoutError(f"no answer from Redis within {self._timeout}s") from None
            raise
        finally:
            self._deadlines.end(task)

    async def _run(self, script: _Script, keys: list[bytes], args: list[bytes]) -> Any:
        conn = self._idle.pop() if self._idle else self._factory.make_connection()  # type: ignore[no-untyped-call]
        try:
            if conn.is_connected:
                try:
                    # Something to read on an idle connection, or EOF: the server
                    # closed it (a restart). redis-py's pool checks the same.
                    stale = await getattr(conn, _PROBE)()
                except (RedisConnectionError, OSError):
                    stale = True
                if stale:
                    await conn.disconnect(nowait=True)
            n = b"%d" % len(keys)
            await conn.send_packed_command(
                conn.pack_command(b"EVALSHA", script.sha, n, *keys, *args), check_health=False
            )
            try:
                out = await conn.read_response()
            except NoScriptError:
                # The server's script cache was emptied (a restart, SCRIPT FLUSH): EVAL reloads it.
                await conn.send_packed_command(
                    conn.pack_command(b"EVAL", script.body, n, *keys, *args), check_health=False
                )
                out = await conn.read_response()
        except ResponseError:
            # A whole error reply was read: the connection is still in step.
            await self._release(conn)
            raise
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        await self._release(conn)
        return out

    async def _release(self, conn: AbstractConnection) -> None:
        if len(self._idle) < MAX_IDLE_CONNECTIONS:
            self._idle.append(conn)
        else:
            # Left over from a burst: close it (without waiting for the close to finish).
            await conn.disconnect(nowait=True)

    async def admit(self, checks: list[Check], member: str, now_ms: int) -> Verdict:
        keys: list[bytes] = []
        args = [b"%d" % now_ms, member.encode()]
        for c in checks:
            keys += _redis_keys(c.kind, c.key)
            args += [c.kind.encode(), _num(c.limit), _num(c.amount), b"%d" % c.window_ms]
        failed, retry = await self._eval(_ADMIT_SCRIPT, keys, args)
        return Verdict(int(failed), int(retry))

    async def settle(self, settles: list[Settle], member: str) -> list[float]:
        if not settles:
            return []
        # Stream and token entries were added as member|amount at admission.
        keys: list[bytes] = []
        args = [member.encode()]
        for s in settles:
            keys += _redis_keys(s.kind, s.key)
            args += [s.kind.encode(), _num(s.reserved), _num(s.actual)]
        out = await self._eval(_SETTLE_SCRIPT, keys, args)
        return [float(v) for v in out]

    async def budget(self, key: str) -> tuple[float, float]:
        spent, reserved = await self._r.hmget(key, ["spent", "reserved"])
        return float(spent or 0), float(reserved or 0)

    async def seed_budget(self, key: str, spent: float, ttl_ms: int) -> None:
        if await self._r.hsetnx(key, "spent", _num(spent)):
            await self._r.pexpire(key, ttl_ms)

    async def usage(self, kind: str, key: str, window_ms: int, now_ms: int) -> float:
        # Off the request path: the entries in the window, as admission counts them.
        log = key + ":log" if kind == "tok" else key
        members = await self._r.zrangebyscore(log, f"({now_ms - window_ms}", "+inf")
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
        self._deadlines.close()
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.disconnect()
        await self._factory.aclose()
        await self._r.aclose()
