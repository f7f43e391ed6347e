"""The policy counters against a real redis-server: the same verdicts in Redis
as in-process, and the request-path round trip under failure (a restart, a
lost script cache, a stalled server, a cancelled caller, a burst)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis

from lectr.errors import PolicyUnavailable
from lectr.policy import Policy
from lectr.policy.counters import Check, Counters, LocalCounters, Settle, Verdict
from lectr.policy.redis_counters import MAX_IDLE_CONNECTIONS, RedisCounters
from lectr.pricing import PriceTable
from lectr.types import RateLimit
from tests.redis_server import RedisServer

NOW = 1_000_000_000  # ms; windows are relative to the `now` each call passes


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server of the test's own, to kill or stop."""
    srv = RedisServer()
    try:
        yield srv
    finally:
        if srv.proc is not None:
            os.kill(srv.proc.pid, signal.SIGCONT)
        srv.destroy()


@pytest.fixture
async def counters(own_redis: RedisServer) -> AsyncIterator[RedisCounters]:
    c = RedisCounters(own_redis.url, 0.2)
    try:
        yield c
    finally:
        await c.close()


def stop(srv: RedisServer) -> None:
    assert srv.proc is not None
    os.kill(srv.proc.pid, signal.SIGSTOP)


def resume(srv: RedisServer) -> None:
    assert srv.proc is not None
    os.kill(srv.proc.pid, signal.SIGCONT)


async def scenario(c: Counters, p: str) -> list[Any]:
    req = Check("req", f"{p}:req", 2)
    tok = Check("tok", f"{p}:tok", 100, 40)
    st = Check("str", f"{p}:str", 1, 1, 3_600_000)
    bud = Check("bud", f"{p}:bud", 1.0, 0.4)
    return [
        await c.admit([req, tok, st, bud], "a", NOW),
        await c.admit([req, tok, st, bud], "b", NOW + 1),  # one stream open already
        await c.admit([req, Check("tok", tok.key, 100, 70), bud], "b", NOW + 2),  # 40 + 70 tokens
        await c.settle(
            [Settle("tok", tok.key, 40, 10), Settle("str", st.key, 1, 0), Settle("bud", bud.key, 0.4, 0.25)],
            "a",
        ),
        await c.admit([req, tok, st, bud], "c", NOW + 3),
        await c.admit([bud], "d", NOW + 4),  # 0.25 spent + 0.4 reserved + 0.4
        await c.admit([req], "d", NOW + 4),  # two requests in the window
        await c.admit([req], "d", NOW + 60_001),  # a's request left the window
        await c.budget(bud.key),
        await c.usage("tok", tok.key, 60_000, NOW + 5),
        await c.usage("str", st.key, 3_600_000, NOW + 5),
        await c.once(f"{p}:once", 60_000),
        await c.once(f"{p}:once", 60_000),
    ]


async def test_redis_gives_the_verdicts_of_the_in_process_counters(
    redis_server: RedisServer,
) -> None:
    shared = RedisCounters(redis_server.url, 0.5)
    try:
        in_redis = await scenario(shared, f"parity:{time.time_ns()}")
    finally:
        await shared.close()
    local = await scenario(LocalCounters(), "parity")
    assert in_redis == local
    assert local == [
        Verdict(-1),
        Verdict(2, 1000),
        Verdict(1, 59_998),
        [0.25],
        Verdict(-1),
        Verdict(0),
        Verdict(0, 59_996),
        Verdict(-1),
        (0.25, 0.4),
        50.0,
        1.0,
        True,
        False,
    ]


async def test_a_restart_and_a_lost_script_cache_are_survived(
    own_redis: RedisServer, counters: RedisCounters
) -> None:
    check = [Check("req", "restart:req", 10)]
    assert (await counters.admit(check, "a", NOW)).failed == -1
    own_redis.kill()
    own_redis.start()  # same port, empty: no data, no scripts
    await asyncio.sleep(0.1)  # the idle connection sees the server's close
    assert (await counters.admit(check, "b", NOW)).failed == -1
    redis.Redis(port=own_redis.port).script_flush()
    assert await counters.settle([Settle("bud", "restart:bud", 0.0, 0.5)], "b") == [0.5]
    assert await counters.usage("req", "restart:req", 60_000, NOW) == 1


async def test_a_stalled_server_times_out_without_a_hang_or_a_stale_reply(
    own_redis: RedisServer, counters: RedisCounters
) -> None:
    assert (await counters.admit([Check("req", "warm:req", 10)], "w", NOW)).failed == -1
    stop(own_redis)
    start = time.monotonic()
    stalled = await asyncio.gather(
        *(counters.admit([Check("req", f"stalled:{i}", 10)], f"m{i}", NOW) for i in range(3)),
        return_exceptions=True,
    )
    assert all(isinstance(r, TimeoutError) for r in stalled), stalled
    assert time.monotonic() - start < 1.0
    # The deadline's cancellations are taken back: this task is not left cancelling.
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    resume(own_redis)
    # The stalled scripts run now; their replies must not answer the calls below.
    assert (await counters.admit([Check("req", "fresh:req", 1)], "x", NOW)).failed == -1
    assert (await counters.admit([Check("req", "fresh:req", 1)], "y", NOW)).failed == 0
    await asyncio.sleep(0.3)  # past every deadline: the timer is off again
    assert counters._deadlines._timer is None


async def test_a_cancelled_caller_stays_cancelled(own_redis: RedisServer, counters: RedisCounters) -> None:
    assert (await counters.admit([Check("req", "warm:req", 10)], "w", NOW)).failed == -1
    stop(own_redis)
    call = asyncio.create_task(counters.admit([Check("req", "cancel:req", 10)], "c", NOW))
    await asyncio.sleep(0.05)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    resume(own_redis)
    assert (await counters.admit([Check("req", "cancel:req", 10)], "d", NOW)).failed == -1


async def test_a_burst_is_counted_exactly_and_leaves_few_connections(
    redis_server: RedisServer,
) -> None:
    c = RedisCounters(redis_server.url, 0.5)
    key = f"burst:{time.time_ns()}:req"
    try:
        verdicts = await asyncio.gather(*(c.admit([Check("req", key, 10)], f"m{i}", NOW) for i in range(50)))
        assert sum(v.failed == -1 for v in verdicts) == 10
        assert len(c._idle) <= MAX_IDLE_CONNECTIONS
        assert await c.usage("req", key, 60_000, NOW) == 10
    finally:
        await c.close()


@pytest.mark.parametrize("fail_open", [True, False])
async def test_policy_fails_open_or_closed_and_settles_later(own_redis: RedisServer, fail_open: bool) -> None:
    policy = Policy(PriceTable.load(), own_redis.url, 0.2, fail_open, 1000)
    policy.configure([], [RateLimit(org_id="o", requests_per_min=10, tokens_per_min=100_000)], [])
    retry = asyncio.create_task(policy.run(interval=0.05))
    try:
        adm = await policy.admit("o", "f", "gpt-4o-mini", 30, 100, False, "m1")
        assert adm is not None and len(adm.settles) == 1
        stop(own_redis)
        start = time.monotonic()
        if fail_open:
            assert await policy.admit("o", "f", "gpt-4o-mini", 30, 100, False, "m2") is None
        else:
            with pytest.raises(PolicyUnavailable):
                await policy.admit("o", "f", "gpt-4o-mini", 30, 100, False, "m2")
        await policy.settle(adm, 50, None, 10.0)  # kept for a retry
        assert time.monotonic() - start < 1.0
        resume(own_redis)
        for _ in range(100):
            if not policy._unsettled:
                break
            await asyncio.sleep(0.05)
        assert not policy._unsettled
        state = await policy.state("o")
        # 50 settled for m1; m2's admission reached Redis before the stall and ran
        # when it ended (its reply came too late): its 110 tokens stay reserved.
        assert state["rate_limits"][0]["tokens_last_min"] == 160
    finally:
        retry.cancel()
        await policy.close()
