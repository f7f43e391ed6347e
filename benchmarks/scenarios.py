"""The scenarios every target runs, and what they need: the request bodies,
how long each scenario runs (`Plan`), and `Bench`, which runs wrk with CPU
and memory measured around it, the latency / throughput runs, the streaming
fidelity run and the memory run, and summarises each."""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks import env, load, procs
from benchmarks.targets import (
    FEATURE,
    FEATURE_STREAM,
    MODEL_FIXED,
    MODEL_STREAM,
    PROVIDER_KEY,
    Running,
)

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


def headers(t: Running, feature: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {PROVIDER_KEY}",
        "X-Lectr-Feature": feature,
        **t.headers,
    }


def check_answers(t: Running, stream: bool) -> dict[str, Any]:
    """One request of each kind it serves, checked by hand: the target really answers."""
    r = httpx.post(t.url_fixed, content=BODY_FIXED, headers=headers(t, FEATURE), timeout=30)
    body = r.json() if r.status_code == 200 else {}
    ok_fixed = r.status_code == 200 and body.get("object") == "chat.completion" and "usage" in body
    if not stream:
        if not ok_fixed:
            raise RuntimeError(f"{t.name} did not answer properly: {r.status_code} {r.text[:300]!r}")
        return {"non_stream": r.status_code}
    with httpx.stream(
        "POST", t.url_stream, content=BODY_STREAM, headers=headers(t, "bench-check"), timeout=30
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
        res = load.wrk(self.wrk, t.url_fixed, conns, seconds, BODY_FIXED, headers(t, FEATURE), self.tmp)
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
            t.url_stream, self.plan.streams, BODY_STREAM, headers(t, FEATURE_STREAM), warmup=warmup
        )
        out = summarize_streams(samples)
        out["samples"] = [asdict(s) for s in samples]
        if t.usage is not None:
            out["capture"] = t.usage(FEATURE_STREAM, self.plan.streams + warmup)
        # The same stream in the agent protocols, where the target speaks them.
        for proto, (url, extra) in t.protocol_streams.items():
            feature = f"{FEATURE_STREAM}-{proto}"
            ps = load.stream_many(
                url, self.plan.streams, PROTOCOL_BODIES[proto], headers(t, feature) | extra, warmup, proto
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
                self.wrk, t.url_fixed, 32, min(30.0, left, need), BODY_FIXED, headers(t, FEATURE), self.tmp
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
