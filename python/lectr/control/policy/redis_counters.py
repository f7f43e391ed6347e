"""The counters in Redis (see `counters` for the semantics): one Lua script
(`redis_scripts`) per admission and one per settlement, each one round trip,
atomic across every instance. Imported only when Redis is configured."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from lectr.control.policy.counters import Check, Settle, Verdict
from lectr.control.policy.redis_scripts import ADMIT, SETTLE, Script, lua_number, redis_keys

MAX_IDLE_CONNECTIONS = 32
_EARLY = 0.001  # a timer may fire up to this much before a deadline and still count it as due
# Whether an idle connection has something to read or saw EOF: `can_read` since
# redis-py 8, `can_read_destructive` before (deprecated in 8).
_PROBE = "can_read" if hasattr(AbstractConnection, "can_read") else "can_read_destructive"


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

    async def _eval(self, script: Script, keys: list[bytes], args: list[bytes]) -> Any:
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

    async def _run(self, script: Script, keys: list[bytes], args: list[bytes]) -> Any:
        reused = bool(self._idle)
        try:
            return await self._run_on(self._connection(), script, keys, args)
        except RedisConnectionError:
            if not reused:
                raise
            # An idle connection the server closed (a restart) fails on first
            # use: try once on a new one rather than fail open or closed.
            # Both scripts are idempotent per member, so a run that did get
            # through is not counted twice.
            return await self._run_on(self._factory.make_connection(), script, keys, args)  # type: ignore[no-untyped-call]

    def _connection(self) -> AbstractConnection:
        return self._idle.pop() if self._idle else self._factory.make_connection()  # type: ignore[no-untyped-call]

    async def _run_on(
        self, conn: AbstractConnection, script: Script, keys: list[bytes], args: list[bytes]
    ) -> Any:
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
            keys += redis_keys(c.kind, c.key)
            args += [c.kind.encode(), lua_number(c.limit), lua_number(c.amount), b"%d" % c.window_ms]
        failed, retry = await self._eval(ADMIT, keys, args)
        return Verdict(int(failed), int(retry))

    async def settle(self, settles: list[Settle], member: str) -> list[float]:
        if not settles:
            return []
        # Stream and token entries were added as member|amount at admission.
        keys: list[bytes] = []
        args = [member.encode()]
        for s in settles:
            keys += redis_keys(s.kind, s.key)
            args += [s.kind.encode(), lua_number(s.reserved), lua_number(s.actual)]
        out = await self._eval(SETTLE, keys, args)
        return [float(v) for v in out]

    async def budget(self, key: str) -> tuple[float, float]:
        try:
            spent, reserved = await self._r.hmget(key, ["spent", "reserved"])
        except RedisConnectionError:  # a pooled connection the server closed (a restart): once more
            spent, reserved = await self._r.hmget(key, ["spent", "reserved"])
        return float(spent or 0), float(reserved or 0)

    async def seed_budget(self, key: str, spent: float, ttl_ms: int) -> None:
        try:
            created = await self._r.hsetnx(key, "spent", lua_number(spent))
        except RedisConnectionError:  # a pooled connection the server closed (a restart): once more
            created = await self._r.hsetnx(key, "spent", lua_number(spent))
        if created:
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
