"""The benchmark runner: `python -m benchmarks [--smoke | --full]`.

Starts the two mock upstreams and, one after another, every target
(`benchmarks/targets/`), runs every scenario against it, stops it, and writes
`benchmarks/results/<date>/` (raw `results.json`, `results.md`, PNG plots);
`--full` also puts the table into `benchmarks/README.md`. Everything runs on
loopback and is bounded in time; everything started is stopped.

Scenarios, per target:
1. latency, non-streamed, 1 and 4 connections (wrk): p50/p90/p99, added over direct
2. throughput, 32 and 64 connections (wrk): requests/s
3. CPU time per request of the target's process tree (/proc), in every wrk run
4. streaming fidelity, 20 chunks × 5 ms, one stream at a time: added time to
   first byte, first token and [DONE]; per-chunk transit (each chunk carries the
   upstream's send time); usage captured (Lectr's store); the same stream as
   an OpenAI Responses and an Anthropic Messages stream (direct and Lectr):
   added first token, final event and per-event transit
5. memory: RSS before, during and after 1 M requests (Lectr), peak RSS (all)
6. ingest rate of the record writer (SQLite, PostgreSQL)
7. Lectr's latency while its writer ingests into PostgreSQL, vs no storage
   (`benchmarks.ingest_latency`)
Plus Lectr variants at 1 and 4 connections: 0 vs 100 routing rules, and a
rate limit checked in Redis on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import env, ingest_latency, report, upstreams
from benchmarks.scenarios import FULL, SMOKE, Bench, Plan, Progress
from benchmarks.targets import (
    Env,
    Running,
    direct,
    granian_floor,
    lectr,
    lectr_pg,
    litellm,
    nginx,
)

# Target modules (or objects with the same names: the two granian floors).
TARGETS: list[Any] = [direct, granian_floor.static, granian_floor.proxy, nginx, lectr, lectr_pg, litellm]
RESULTS = Path(__file__).resolve().parent / "results"


def ingest(plan: Plan, tmp: Path, say: Progress) -> dict[str, Any]:
    from benchmarks.storage import ingest_writer
    from devtools.services import Postgres
    from lectr.config import WriterSettings
    from lectr.store.postgres import PostgresStore
    from lectr.store.sqlite import SQLiteStore

    out: dict[str, Any] = {"records": plan.ingest_records, "batch": WriterSettings().batch_size}
    rate = asyncio.run(ingest_writer(SQLiteStore(tmp / "ingest" / "lectr.db"), plan.ingest_records))
    out["sqlite_per_s"] = rate
    say(f"ingest: SQLite {rate:,.0f} records/s")
    pg = Postgres()
    try:
        rate = asyncio.run(ingest_writer(PostgresStore(pg.url), plan.ingest_records))
    finally:
        pg.destroy()
    out["postgres_per_s"] = rate
    say(f"ingest: PostgreSQL {rate:,.0f} records/s")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="a few seconds per scenario (the test suite's)")
    mode.add_argument("--full", action="store_true", help="the real figures (default)")
    ap.add_argument("--out", type=Path, help="results folder (default benchmarks/results/<date>[-smoke])")
    ap.add_argument(
        "--targets",
        default=",".join(m.NAME for m in TARGETS),
        help="comma-separated subset of: " + ", ".join(m.NAME for m in TARGETS),
    )
    ap.add_argument("--no-extras", action="store_true", help="skip the Lectr variants (rules, Redis)")
    ap.add_argument("--no-readme", action="store_true", help="do not update benchmarks/README.md")
    a = ap.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every `finally` stops what it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    plan = SMOKE if a.smoke else FULL
    chosen = [m for m in TARGETS if m.NAME in a.targets.split(",")]
    date = dt.date.today().isoformat()
    out_dir: Path = a.out or RESULTS / (date if plan.mode == "full" else f"{date}-smoke")
    out_dir.mkdir(parents=True, exist_ok=True)
    say = Progress()
    say(f"benchmarks ({plan.mode}) → {out_dir}")

    load_before = env.loadavg()
    litellm_exe = env.litellm() if litellm in chosen else None
    results: dict[str, Any] = {
        "mode": plan.mode,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "plan": asdict(plan),
        "machine": env.machine() | {"loadavg_before": load_before},
        "versions": env.versions(litellm_exe),
        "targets": {},
        "extras": {},
        "failures": {},
    }
    build = results["versions"]["lectr"]["build"]
    say(f"lectr {results['versions']['lectr']['git']}: {build}")
    tmp = Path(tempfile.mkdtemp(prefix="lectr-bench-"))
    fixed = upstreams.start_fixed(tmp)
    stream = upstreams.start_stream(tmp)
    e = Env(tmp=tmp, fixed=fixed, stream=stream, litellm=litellm_exe)
    bench = Bench(plan, tmp, say)
    bench.fixed_pid = fixed.pid
    results["commands"] = {
        "upstream fixed": fixed.command,
        "upstream stream": stream.command,
        "runner": "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    try:
        for m in chosen:
            # granian-static has no upstream, so no stream to relay.
            scen = "lt" if m is granian_floor.static else "lts" + ("m" if m is lectr else "")
            try:
                results["targets"][m.NAME] = bench.target(m.NAME, lambda m=m: m.start(e), scen)
                results["commands"][f"target {m.NAME}"] = results["targets"][m.NAME]["command"]
            except Exception as ex:
                say(f"{m.NAME}: FAILED: {ex}")
                results["failures"][m.NAME] = traceback.format_exc()
        if not a.no_extras and lectr in chosen:
            results["extras"] = extras(bench, e, say, results)
        try:
            results["ingest"] = ingest(plan, tmp, say)
        except Exception as ex:
            say(f"ingest: FAILED: {ex}")
            results["failures"]["ingest"] = traceback.format_exc()
        if lectr in chosen:
            try:
                results["ingest_latency"] = ingest_latency.run(
                    e,
                    plan.ingest_latency_rounds,
                    plan.ingest_latency_s,
                    plan.warmup_s,
                    say,
                    backlog_records=plan.ingest_backlog,
                )
            except Exception as ex:
                say(f"ingest latency: FAILED: {ex}")
                results["failures"]["ingest_latency"] = traceback.format_exc()
    finally:
        fixed.stop()
        stream.stop()
    results["commands"]["wrk"] = bench.commands
    results["machine"]["loadavg_after"] = env.loadavg()
    report.finish(results, out_dir, update_readme=plan.mode == "full" and not a.no_readme)
    say(f"done: {out_dir} ({len(results['failures'])} failures)")
    return 1 if results["failures"] else 0


def extras(bench: Bench, e: Env, say: Progress, results: dict[str, Any]) -> dict[str, Any]:
    """Lectr variants at 1 and 4 connections: routing-rule count and a Redis-checked rate limit."""
    from devtools.services import RedisServer

    out: dict[str, Any] = {}
    variants: list[tuple[str, Callable[[], Running]]] = [
        ("lectr-0-rules", lambda: lectr.start(e, name="lectr-0-rules", rules=0)),
        ("lectr-100-rules", lambda: lectr.start(e, name="lectr-100-rules", rules=100, matching_rule=False)),
    ]
    redis = None
    try:
        redis = RedisServer()
        url = redis.url
        variants.append(
            (
                "lectr-redis-limit",
                lambda: lectr.start(e, name="lectr-redis-limit", rules=0, redis_url=url, rate_limit=True),
            )
        )
        for name, starter in variants:
            try:
                out[name] = bench.target(name, starter, "l")
            except Exception as ex:
                say(f"{name}: FAILED: {ex}")
                results["failures"][name] = traceback.format_exc()
    finally:
        if redis is not None:
            redis.destroy()
    return out
