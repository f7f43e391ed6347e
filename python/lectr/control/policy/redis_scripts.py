"""The Lua scripts of the Redis counters: their key layout, bodies and the spelling of their arguments."""

from __future__ import annotations

import hashlib

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
# Returns {failed_index (0-based, -1 ok), retry_ms}; retry_ms -1: that budget's
# counter is missing (seed it, then admit again).
_ADMIT_LUA = """
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
    -- No counter: Redis lost it (a restart without persistence, an eviction)
    -- or its window just began. Admitting would start the spend at 0: ask
    -- the caller to seed it from the request log first (retry_ms -1).
    if redis.call('EXISTS', key) == 0 then return {i - 1, -1} end
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
_SETTLE_LUA = """
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


def lua_number(v: float) -> bytes:
    # Lua's tonumber and Redis floats both read repr() of a Python float. Admission
    # and settlement must spell an amount alike: it is part of the sorted-set member.
    return repr(float(v)).encode() if v != int(v) else b"%d" % int(v)


class Script:
    """A Lua script run by EVALSHA (EVAL when the server's script cache lost it)."""

    def __init__(self, body: str) -> None:
        self.body = body.encode()
        self.sha = hashlib.sha1(self.body, usedforsecurity=False).hexdigest().encode()


ADMIT = Script(_ADMIT_LUA)
SETTLE = Script(_SETTLE_LUA)
_LOG = b":log"  # a `tok` check's log and running total (see the key layout above)
_SUM = b":sum"


def redis_keys(kind: str, key: str) -> tuple[bytes, ...]:
    """The Redis keys of one counter, in the order the scripts take them."""
    k = key.encode()
    return (k + _LOG, k + _SUM) if kind == "tok" else (k,)
