"""The policy counters against a real redis-server: the same verdicts in Redis
as in-process (a full tokens window included), settlements applied once, and
the request-path round trip under failure (a restart, a lost script cache, a
stalled server, a cancelled caller, a burst)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis

from devtools.services import RedisServer
from lectr.control.policy.counters import Check, Counters, LocalCounters, Settle, Verdict
from lectr.control.policy.engine import Policy
from lectr.control.policy.redis_counters import MAX_IDLE_CONNECTIONS, RedisCounters
from lectr.errors import PolicyUnavailable
from lectr.gateway.pricing import PriceTable
from lectr.types import Budget, RateLimit

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
        # a's settlement again (a retry after a timeout): nothing changes
        await c.settle(
            [Settle("tok", tok.key, 40, 10), Settle("str", st.key, 1, 0), Settle("bud", bud.key, 0.4, 0.25)],
            "a",
        ),
        await c.usage("tok", tok.key, 60_000, NOW + 5),
        # served past the cap under a fallback: a hold, then its cost, once
        await c.admit([Check("hold", bud.key, 0, 0), Check("tok", tok.key, 100, 5)], "e", NOW + 6),
        await c.settle([Settle("bud", bud.key, 0, 0.5), Settle("tok", tok.key, 5, 5)], "e"),
        await c.settle([Settle("bud", bud.key, 0, 0.5)], "e"),
        await c.settle([Settle("bud", bud.key, 0, 0.5)], "never-admitted"),
        await c.budget(bud.key),
        await c.usage("tok", tok.key, 60_000, NOW + 6),
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
        [0.25],
        50.0,
        Verdict(-1),
        [0.75],
        [0.75],
        [0.75],  # no hold: nothing applied, the spend as it is
        (0.75, 0.4),
        55.0,
    ]


async def test_a_restart_and_a_lost_script_cache_are_survived(
    own_redis: RedisServer, counters: RedisCounters
) -> None:
    check = [Check("req", "restart:req", 10), Check("bud", "restart:bud", 1.0, 0.0)]
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


WINDOW = 60_000
BIG = 10**12  # a tokens limit no window reaches


async def assert_window(c: Counters, key: str, now: int, live: dict[str, tuple[int, int]]) -> list[Verdict]:
    """Admission sees exactly the tokens of `live` (member -> (ts, amount)) and
    the retry of its oldest entry. The probes take nothing: a check that
    always fails follows them."""
    ref = sum(a for _, a in live.values())
    never = Check("req", f"{key}:never", 0)
    fits = await c.admit([Check("tok", key, BIG, BIG - ref), never], "probe", now)
    over = await c.admit([Check("tok", key, BIG, BIG - ref + 1), never], "probe", now)
    assert fits.failed == 1  # past the tokens check
    assert over.failed == 0
    if live:
        assert over.retry_after_ms == max(min(ts for ts, _ in live.values()) + WINDOW - now, 1)
    return [fits, over]


async def tokens_script(c: Counters, key: str) -> list[Any]:
    """20,000 live entries, then admissions, settlements (some replayed) and
    expiries while the window slides past all of them, checked against a
    reference computed here."""
    rng = random.Random(7)
    seen: list[Any] = []
    live: dict[str, tuple[int, int]] = {}  # the reference
    admitted: list[tuple[str, int]] = []
    sent: list[Settle] = []
    settled: list[str] = []

    async def admit(i: int, now: int) -> None:
        member, amount = f"m{i}", rng.randint(1, 100)
        v = await c.admit([Check("tok", key, BIG, amount)], member, now)
        assert v == Verdict(-1)
        live[member] = (now, amount)
        admitted.append((member, amount))

    def slide(now: int) -> None:
        while live and next(iter(live.values()))[0] <= now - WINDOW:  # in admission order
            del live[next(iter(live))]

    for i in range(20_000):
        await admit(i, NOW + 2 * i)
    now = NOW + 40_000
    assert len(live) == 20_000
    seen += await assert_window(c, key, now, live)
    for step in range(6_000):
        now += 15
        slide(now)
        op = rng.random()
        if op < 0.5:
            await admit(20_000 + step, now)
        elif op < 0.85 or not sent:
            member, reserved = rng.choice(admitted[-2_000:])
            s = Settle("tok", key, reserved, rng.randint(0, 100))
            seen.append(await c.settle([s], member))
            sent.append(s)
            settled.append(member)
            if member in live and live[member][1] == reserved:
                live[member] = (live[member][0], int(s.actual))
        else:  # a settlement again, as a retry after a timeout would send it
            j = rng.randrange(len(sent))
            seen.append(await c.settle([sent[j]], settled[j]))
        if step % 250 == 0:
            seen += await assert_window(c, key, now, live)
    assert not live.keys() & {m for m, _ in admitted[:20_000]}  # the first 20,000 all left
    seen += await assert_window(c, key, now, live)
    seen.append(await c.usage("tok", key, WINDOW, now))
    assert seen[-1] == sum(a for _, a in live.values())
    now += WINDOW
    seen += await assert_window(c, key, now, {})
    return seen


async def test_a_full_tokens_window_is_counted_right_in_redis_and_in_process(
    redis_server: RedisServer,
) -> None:
    shared = RedisCounters(redis_server.url, 2.0)
    try:
        in_redis = await tokens_script(shared, f"full:{time.time_ns()}:tok")
    finally:
        await shared.close()
    assert in_redis == await tokens_script(LocalCounters(), "full:tok")


async def test_a_settlement_replayed_after_a_timeout_charges_once(
    own_redis: RedisServer, counters: RedisCounters
) -> None:
    bud = Check("bud", "replay:bud", 1.0, 0.4)
    tok = Check("tok", "replay:tok", 1000, 40)
    assert (await counters.admit([tok, bud], "m", NOW)).failed == -1
    settles = [Settle("tok", tok.key, 40, 10), Settle("bud", bud.key, 0.4, 0.25)]
    stop(own_redis)
    with pytest.raises(TimeoutError):
        await counters.settle(settles, "m")  # sent: it runs when the server resumes
    resume(own_redis)
    assert await counters.settle(settles, "m") == [0.25]  # the retry
    assert await counters.budget(bud.key) == (0.25, 0.0)
    assert await counters.usage("tok", tok.key, WINDOW, NOW) == 10
    await assert_window(counters, tok.key, NOW, {"m": (NOW, 10)})


@pytest.mark.parametrize("fallback", [False, True], ids=["reserved", "fallback"])
@pytest.mark.parametrize("reached", [True, False], ids=["reply-lost", "never-sent"])
async def test_policy_retries_a_failed_settlement_and_charges_it_once(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, reached: bool, fallback: bool
) -> None:
    org = f"replay-{time.time_ns()}"
    policy = Policy(PriceTable.load(), redis_server.url, 0.5, False, 1000)
    budget = Budget(org_id=org, period="day", hard_usd=100.0)
    if fallback:  # no request fits: each is served by the fallback model, unreserved
        budget = Budget(
            org_id=org, period="day", hard_usd=1e-9, action="fallback", fallback_model="gpt-4o-mini"
        )
    policy.configure([budget], [RateLimit(org_id=org, tokens_per_min=100_000)], [])
    real = policy._counters.settle
    calls = 0

    async def flaky(settles: list[Settle], member: str) -> list[float]:
        nonlocal calls
        calls += 1
        if calls > 1:
            return await real(settles, member)
        if reached:
            await real(settles, member)
            raise TimeoutError("applied, but the reply was lost")
        raise ConnectionRefusedError("never sent")

    monkeypatch.setattr(policy._counters, "settle", flaky)
    retry = asyncio.create_task(policy.run(interval=0.01))
    try:
        adm = await policy.admit(org, "f", "gpt-4o", 300, 100, False, "m1")
        assert adm is not None
        assert adm.model_override == ("gpt-4o-mini" if fallback else None)
        await policy.settle(adm, 150, 0.01, 5.0)
        for _ in range(200):
            if not policy._unsettled:
                break
            await asyncio.sleep(0.01)
        assert not policy._unsettled and calls == 2
        state = await policy.state(org)
        assert (state["budgets"][0]["spent_usd"], state["budgets"][0]["reserved_usd"]) == (0.01, 0.0)
        assert state["rate_limits"][0]["tokens_last_min"] == 150
    finally:
        retry.cancel()
        await policy.close()
