"""Cost of a tokens/min admission against how full its window is.

Times `admit([tokens check])` on the Redis counters (a throwaway
redis-server on loopback, one connection, sequential calls) and on the
in-process counters, with 0, 10,000 and 90,000 live entries in the window:
the median µs of `--n` admissions, sizes taking turns (on an empty window
each one gets a fresh key; otherwise each adds one entry to the window it is
timed on), and for Redis the server's own time per script too.
`--baseline REV` times `python/lectr/policy/` as it was at git revision REV
too, in the same process (e.g. 1309417, before the running total).

Windows are filled through the implementation's own admissions, except a
baseline's, which are written directly in that revision's layout (a tokens
log as a sorted set at the check's key, members `member|amount`; in-process
an ordered dict of member -> (ts, amount)): filling 90,000 entries one
admission at a time through an O(n) admission would take hours.

Run: `python -m benchmarks.policy_counters [--baseline 1309417] [--n 200]` (REV from
before the folders of issue 14, a5b2ee2 or older; for later changes compare whole
builds with `benchmarks.ab`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from benchmarks.env import module_at
from lectr.control.policy.counters import Check

SIZES = (0, 10_000, 90_000)
BIG = 10**12  # a tokens limit no window reaches
NOW = 1_000_000_000  # ms: every entry is within a minute of it
AMOUNT = 100


async def _fill_own(c: Any, key: str, n: int) -> None:
    """`n` live entries through the counters' own admissions."""
    for start in range(0, n, 32):  # as many as the counters keep connections for
        calls = [
            c.admit([Check("tok", key, BIG, AMOUNT)], f"f{i}", NOW - 30_000 + i * 30_000 // n)
            for i in range(start, min(n, start + 32))
        ]
        verdicts = await asyncio.gather(*calls)
        assert all(v.failed == -1 for v in verdicts)


def _fill_old_redis(url: str, key: str, n: int) -> None:
    r = redis.Redis.from_url(url)
    for start in range(0, n, 10_000):
        end = min(n, start + 10_000)
        r.zadd(key, {f"f{i}|{AMOUNT}": NOW - 30_000 + i * 30_000 // n for i in range(start, end)})
    r.pexpire(key, 3_600_000)
    r.close()


def _fill_old_local(c: Any, key: str, n: int) -> None:
    log = c._logs.setdefault(key, collections.OrderedDict())
    for i in range(n):
        log[f"f{i}"] = (NOW - 30_000 + i * 30_000 // n, float(AMOUNT))


async def _time(
    c: Any, keys: dict[int, str], n: int, r: redis.Redis | None
) -> dict[int, tuple[float, float]]:
    """Per window size: the median µs of `n` admissions, and with Redis the
    server's own µs per script (commandstats). Sizes take turns, 10
    admissions at a time, so a machine whose speed drifts is timed alike
    for each (on an empty window each admission gets a fresh key)."""
    samples: dict[int, list[float]] = {size: [] for size in keys}
    server: dict[int, list[float]] = {size: [0.0, 0.0] for size in keys}  # usec, calls
    for turn in range(0, n, 10):
        for size, key in keys.items():
            if r is not None:
                r.config_resetstat()
            for i in range(turn, min(n, turn + 10)):
                k = f"{key}:{i}" if size == 0 else key
                t0 = time.perf_counter_ns()
                v = await c.admit([Check("tok", k, BIG, AMOUNT)], f"x{i}", NOW)
                samples[size].append((time.perf_counter_ns() - t0) / 1000)
                assert v.failed == -1
            if r is not None:
                stats = r.info("commandstats")
                for cmd in ("cmdstat_evalsha", "cmdstat_eval"):
                    server[size][0] += stats.get(cmd, {}).get("usec", 0)
                    server[size][1] += stats.get(cmd, {}).get("calls", 0)
    return {
        size: (statistics.median(samples[size]), server[size][0] / max(server[size][1], 1)) for size in keys
    }


async def run(n: int, baseline: str | None) -> None:
    from devtools.services import RedisServer
    from lectr.control.policy.counters import LocalCounters
    from lectr.control.policy.redis_counters import RedisCounters

    srv = RedisServer()
    r = redis.Redis.from_url(srv.url)
    rows: list[tuple[str, list[str]]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            impls: list[tuple[str, Any, Any, bool]] = [("current", RedisCounters, LocalCounters, False)]
            if baseline is not None:
                old_local = module_at(baseline, "python/lectr/policy/counters.py", Path(tmp))
                old_redis = module_at(baseline, "python/lectr/policy/redis_counters.py", Path(tmp))
                impls.append((baseline, old_redis.RedisCounters, old_local.LocalCounters, True))
            for label, redis_cls, local_cls, old in impls:
                keys = {size: f"bench:{label}:{size}:tok" for size in SIZES}
                shared = redis_cls(srv.url, 10.0)
                try:
                    for size, key in keys.items():
                        if old:
                            _fill_old_redis(srv.url, key, size)
                        else:
                            await _fill_own(shared, key, size)
                    timed = await _time(shared, keys, n, r)
                finally:
                    await shared.close()
                rows.append((f"redis {label}", [f"{timed[s][0]:.1f}" for s in SIZES]))
                rows.append((f"  server-side script {label}", [f"{timed[s][1]:.1f}" for s in SIZES]))
                local = local_cls()
                for size, key in keys.items():
                    if old:
                        _fill_old_local(local, key, size)
                    else:
                        await _fill_own(local, key, size)
                timed = await _time(local, keys, n, None)
                rows.append((f"in-process {label}", [f"{timed[s][0]:.1f}" for s in SIZES]))
    finally:
        r.close()
        srv.destroy()
    print(f"tokens/min admission µs (median of {n}; server-side: mean), by live entries in the window")
    print(f"{'':<32}" + "".join(f"{s:>12,}" for s in SIZES))
    for name, cells in rows:
        print(f"{name:<32}" + "".join(f"{c:>12}" for c in cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="admissions timed per cell")
    ap.add_argument("--baseline", help="also time python/lectr/policy/ at this git revision")
    args = ap.parse_args()
    asyncio.run(run(args.n, args.baseline))


if __name__ == "__main__":
    main()
