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
import json
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks import env, ingest_latency, load, procs, report, upstreams
from benchmarks.targets import (
    FEATURE,
    FEATURE_STREAM,
    MODEL_FIXED,
    MODEL_STREAM,
    PROVIDER_KEY,
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

BODY_FIXED = json.dumps(
    {"model": MODEL_FIXED, "messages": [{"role": "user", "content": "Say hello in one short sentence."}]},
    separators=(",", ":"),
).encode()
BODY_STREAM = json.dumps(
    {
        "model": MODEL_STREAM,
        "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
        "stream": True,
    },
    separators=(",", ":"),
).encode()

# The agent-protocol streams: the same prompt as Responses and Messages requests.
PROTOCOL_BODIES = {
    "responses": json.dumps(
        {"model": "gpt-4o", "input": "Say hello in one short sentence.", "stream": True},
        separators=(",", ":"),
    ).encode(),
    "messages": json.dumps(
        {
            "model": "claude-haiku-4-5",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
            "stream": True,
        },
        separators=(",", ":"),
    ).encode(),
}


@dataclass(frozen=True)
class Plan:
    """How long each scenario runs."""

    mode: str
    latency_s: float
    throughput_s: float
    warmup_s: float
    streams: int
    rss_requests: int  # the 1 M-request run
    rss_max_s: float  # ... bounded in time; the figure says how many it reached
    ingest_records: int
    ingest_latency_rounds: int  # scenario 7: alternating rounds per placement
    ingest_latency_s: float
    ingest_backlog: int  # records the writer replays meanwhile, in the backlog variant
    latency_conns: tuple[int, ...] = (1, 4)
    throughput_conns: tuple[int, ...] = (32, 64)


FULL = Plan("full", 8, 8, 2, 100, 1_000_000, 570, 200_000, 4, 8, 2_000_000)
SMOKE = Plan("smoke", 1, 2, 1, 5, 2_000, 2, 2_000, 1, 1, 20_000)


class Progress:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, msg: str) -> None:
        s = int(time.monotonic() - self.t0)
        print(f"[{s // 60:02d}:{s % 60:02d}] {msg}", file=sys.stderr, flush=True)


def _headers(t: Running, feature: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {PROVIDER_KEY}",
        "X-Lectr-Feature": feature,
        **t.headers,
    }


def check_answers(t: Running, stream: bool) -> dict[str, Any]:
    """One request of each kind it serves, checked by hand: the target really answers."""
    r = httpx.post(t.url_fixed, content=BODY_FIXED, headers=_headers(t, FEATURE), timeout=30)
    body = r.json() if r.status_code == 200 else {}
    ok_fixed = r.status_code == 200 and body.get("object") == "chat.completion" and "usage" in body
    if not stream:
        if not ok_fixed:
            raise RuntimeError(f"{t.name} did not answer properly: {r.status_code} {r.text[:300]!r}")
        return {"non_stream": r.status_code}
    with httpx.stream(
        "POST", t.url_stream, content=BODY_STREAM, headers=_headers(t, "bench-check"), timeout=30
    ) as s:
        text = s.read().decode()
    ok_stream = s.status_code == 200 and "data: [DONE]" in text
    if not (ok_fixed and ok_stream):
        raise RuntimeError(
            f"{t.name} did not answer properly: {r.status_code} {r.text[:300]!r} / "
            f"{s.status_code} {text[:300]!r}"
        )
    return {"non_stream": r.status_code, "stream": s.status_code}


class Bench:
    def __init__(self, plan: Plan, tmp: Path, progress: Progress) -> None:
        self.plan = plan
        self.tmp = tmp
        self.say = progress
        self.wrk = env.wrk()
        self.commands: dict[str, str] = {}
        self.fixed_pid = 0

    # --- wrk with CPU and memory around it ---------------------------------

    def run_wrk(self, t: Running, conns: int, seconds: float, label: str) -> dict[str, Any]:
        waited = procs.wait_idle(t.pid)
        if waited > 2:
            self.say(f"  ({t.name} was busy for {waited:.0f} s after the previous run)")
        cpu = procs.CpuMeter(t.pid).start()
        mock_cpu = procs.CpuMeter(self.fixed_pid).start()
        rss = procs.RssSampler(t.pid, every=0.5).start()
        res = load.wrk(self.wrk, t.url_fixed, conns, seconds, BODY_FIXED, _headers(t, FEATURE), self.tmp)
        samples = rss.stop()
        cpu_s, mock_s = cpu.stop(), mock_cpu.stop()
        self.commands.setdefault(f"wrk ({label})", res.command.replace(t.url_fixed, "<target URL>"))
        out = asdict(res)
        out.pop("command")
        out["cpu_s"] = cpu_s
        out["cpu_us_per_req"] = cpu_s / res.requests * 1e6 if res.requests else None
        out["upstream_cpu_us_per_req"] = mock_s / res.requests * 1e6 if res.requests else None
        out["rss_peak_mib"] = max((s[1] for s in samples), default=0) / 2**20
        out["rss_tree_peak_mib"] = max((s[2] for s in samples), default=0) / 2**20
        return out

    # --- scenarios ----------------------------------------------------------

    def latency_throughput(self, t: Running) -> dict[str, Any]:
        p = self.plan
        self.run_wrk(t, 4, p.warmup_s, "warm-up")
        out: dict[str, Any] = {"latency": {}, "throughput": {}}
        for c in p.latency_conns:
            r = self.run_wrk(t, c, p.latency_s, f"latency, {c} conn")
            out["latency"][str(c)] = r
            self.say(
                f"  {t.name} latency c={c}: p50 {r['p50']:.3f} ms, p99 {r['p99']:.3f} ms, "
                f"{r['rps']:.0f} req/s, {r['cpu_us_per_req'] or 0:.0f} µs CPU/req, "
                f"errors {r['errors'] + r['non2xx']}"
            )
        for c in p.throughput_conns:
            r = self.run_wrk(t, c, p.throughput_s, f"throughput, {c} conns")
            out["throughput"][str(c)] = r
            self.say(
                f"  {t.name} throughput c={c}: {r['rps']:.0f} req/s, p99 {r['p99']:.2f} ms, "
                f"{r['cpu_us_per_req'] or 0:.0f} µs CPU/req, RSS {r['rss_peak_mib']:.0f} MiB, "
                f"errors {r['errors'] + r['non2xx']}"
            )
        return out

    def streaming(self, t: Running) -> dict[str, Any]:
        procs.wait_idle(t.pid)
        warmup = 3
        samples = load.stream_many(
            t.url_stream, self.plan.streams, BODY_STREAM, _headers(t, FEATURE_STREAM), warmup=warmup
        )
        out = summarize_streams(samples)
        out["samples"] = [asdict(s) for s in samples]
        if t.usage is not None:
            out["capture"] = t.usage(FEATURE_STREAM, self.plan.streams + warmup)
        # The same stream in the agent protocols, where the target speaks them.
        for proto, (url, extra) in t.protocol_streams.items():
            feature = f"{FEATURE_STREAM}-{proto}"
            ps = load.stream_many(
                url, self.plan.streams, PROTOCOL_BODIES[proto], _headers(t, feature) | extra, warmup, proto
            )
            p_out = summarize_streams(ps)
            if t.usage is not None:
                p_out["capture"] = t.usage(feature, self.plan.streams + warmup)
            out.setdefault("protocols", {})[proto] = p_out
            self.say(
                f"  {t.name} {proto} stream: first token {p_out['first_token_ms']:.3f} ms, "
                f"final event {p_out['done_ms']:.2f} ms, event transit {p_out['transit_us_p50']:.0f} µs, "
                f"usage captured {p_out.get('capture', 'n/a')}"
            )
        self.say(
            f"  {t.name} streaming: TTFB {out['ttfb_ms']:.3f} ms, "
            f"first token {out['first_token_ms']:.3f} ms, "
            f"[DONE] {out['done_ms']:.2f} ms, chunk transit {out['transit_us_p50']:.0f} µs, "
            f"events {out['events']}, usage captured {out.get('capture', 'n/a')}"
        )
        return out

    def rss_run(self, t: Running, rate: float) -> dict[str, Any]:
        """RSS before, during and after `plan.rss_requests` requests at 32
        connections: wrk in segments of up to 30 s until that many requests
        were served or `plan.rss_max_s` ran out."""
        p = self.plan
        before = procs.tree_rss(t.pid)
        ready_before = _readyz(t)
        self.say(
            f"  {t.name} memory: up to {p.rss_requests:,} requests (~{p.rss_requests / max(rate, 1):.0f} s "
            f"at {rate:.0f} req/s, capped at {p.rss_max_s:.0f} s); RSS now {before[0] / 2**20:.1f} MiB"
        )
        sampler = procs.RssSampler(t.pid, every=1.0).start()
        cpu = procs.CpuMeter(t.pid).start()
        t0 = time.monotonic()
        served = errors = 0
        progress: list[tuple[float, int]] = [(0.0, 0)]
        while served < p.rss_requests:
            left = p.rss_max_s - (time.monotonic() - t0)
            if left < 1:
                break
            need = (p.rss_requests - served) / max(rate, 1.0) * 1.02 + 1
            res = load.wrk(
                self.wrk, t.url_fixed, 32, min(30.0, left, need), BODY_FIXED, _headers(t, FEATURE), self.tmp
            )
            served += res.requests
            errors += res.errors + res.non2xx
            rate = res.rps or rate
            progress.append((time.monotonic() - t0, served))
            largest, total = procs.tree_rss(t.pid)
            self.say(
                f"    {progress[-1][0]:4.0f} s: {served:,} requests ({res.rps:.0f} req/s), "
                f"RSS {largest / 2**20:.1f} MiB (tree {total / 2**20:.1f})"
            )
        seconds = time.monotonic() - t0
        cpu_s = cpu.stop()
        time.sleep(3)  # let the writer drain
        samples = sampler.stop()
        after = procs.tree_rss(t.pid)
        ready_after = _readyz(t)
        res = load.WrkResult(32, seconds, served, served / seconds, 0, 0, 0, 0, 0, 0, 0, errors, 0, "")
        during = [s[1] for s in samples]
        # Growth between 10 % into the run and its end: flat means no leak.
        tail = [s for s in samples if s[0] >= 0.1 * seconds and s[0] <= seconds] or samples
        growth = (tail[-1][1] - tail[0][1]) / 2**20 if tail else 0.0
        out = {
            "requests": res.requests,
            "seconds": res.seconds,
            "rps": res.rps,
            "errors": res.errors + res.non2xx,
            "cpu_us_per_req": cpu_s / res.requests * 1e6 if res.requests else None,
            "rss_before_mib": before[0] / 2**20,
            "rss_during_max_mib": max(during, default=0) / 2**20,
            "rss_after_mib": after[0] / 2**20,
            "rss_tree_before_mib": before[1] / 2**20,
            "rss_tree_max_mib": max((s[2] for s in samples), default=0) / 2**20,
            "rss_tree_after_mib": after[1] / 2**20,
            "growth_after_10pct_mib": growth,
            "flat": abs(growth) <= max(2.0, 0.03 * tail[0][1] / 2**20) if tail else None,
            "writer_before": ready_before,
            "writer_after": ready_after,
            "samples": [(round(s[0], 2), s[1], s[2]) for s in samples],
            "progress": [(round(a, 2), b) for a, b in progress],
        }
        self.say(
            f"  {t.name} memory: {res.requests:,} requests in {res.seconds:.0f} s; "
            f"RSS {out['rss_before_mib']:.1f} → "
            f"max {out['rss_during_max_mib']:.1f} → {out['rss_after_mib']:.1f} MiB; writer {ready_after}"
        )
        return out

    # --- one target, start to stop -----------------------------------------

    def target(self, name: str, starter: Callable[[], Running], scenarios: str) -> dict[str, Any]:
        self.say(f"{name}: starting")
        t0 = time.monotonic()
        t = starter()
        out: dict[str, Any] = {"startup_s": time.monotonic() - t0, "command": t.command, "notes": t.notes}
        try:
            out["rss_idle_mib"] = procs.tree_rss(t.pid)[0] / 2**20
            out["answered"] = check_answers(t, "s" in scenarios)
            if "lt" in scenarios:
                out.update(self.latency_throughput(t))
            else:
                self.run_wrk(t, 4, self.plan.warmup_s, "warm-up")
                out["latency"] = {}
                for c in self.plan.latency_conns:
                    r = self.run_wrk(t, c, self.plan.latency_s, f"latency, {c} conn")
                    out["latency"][str(c)] = r
                    self.say(f"  {name} latency c={c}: p50 {r['p50']:.3f} ms, p99 {r['p99']:.3f} ms")
            if "s" in scenarios:
                out["streaming"] = self.streaming(t)
            if "m" in scenarios:
                rate = max(r["rps"] for r in out["throughput"].values())
                out["memory"] = self.rss_run(t, rate)
        finally:
            t.stop()
            self.say(f"{name}: stopped")
        return out


def _readyz(t: Running) -> dict[str, Any] | None:
    base = t.url_fixed.removesuffix("/v1/chat/completions")
    try:
        w = httpx.get(f"{base}/readyz", timeout=5).json()["writer"]
    except Exception:
        return None
    return {k: w[k] for k in ("queued", "written", "dropped", "depth") if k in w}


def summarize_streams(samples: list[load.StreamSample]) -> dict[str, Any]:
    def med(xs: list[float]) -> float:
        return statistics.median(xs) if xs else float("nan")

    transit = sorted(x for s in samples for x in s.transit_us)
    n_chunks = max((len(s.arrivals) for s in samples), default=0)
    per_chunk = [med([s.arrivals[i] for s in samples if len(s.arrivals) > i]) for i in range(n_chunks)]
    per_chunk_transit = [
        med([s.transit_us[i] for s in samples if len(s.transit_us) > i]) for i in range(n_chunks)
    ]
    return {
        "streams": len(samples),
        "ok": sum(1 for s in samples if s.status == 200 and s.done is not None),
        "ttfb_ms": med([s.ttfb for s in samples]),
        "first_token_ms": med([s.first_token for s in samples if s.first_token is not None]),
        "done_ms": med([s.done for s in samples if s.done is not None]),
        "events": int(med([s.events for s in samples])),
        "content_events": int(med([s.content_events for s in samples])),
        "usage_events_seen_by_client": sum(s.usage_events for s in samples),
        "transit_us_p50": med(transit),
        "transit_us_p90": transit[int(0.9 * (len(transit) - 1))] if transit else float("nan"),
        "transit_us_p99": transit[int(0.99 * (len(transit) - 1))] if transit else float("nan"),
        "arrival_ms_by_chunk": per_chunk,
        "transit_us_by_chunk": per_chunk_transit,
    }


def ingest(plan: Plan, tmp: Path, say: Progress) -> dict[str, Any]:
    from benchmarks.storage import ingest_writer
    from devtools.services import Postgres
    from lectr.store.postgres import PostgresStore
    from lectr.store.sqlite import SQLiteStore

    out: dict[str, Any] = {"records": plan.ingest_records, "batch": 1000}
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
