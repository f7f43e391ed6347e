"""Per-request cost of `lectr.observe.metrics` on the serving thread, in process.

Times what the request path calls once per request (`inflight(+1)`,
`observe(record)`, `inflight(-1)`, plus `stream_started` / `stream_ended`
for streams) over a mix of records, in prometheus-client's multiprocess mode
(what `lectr serve` uses), and the same with the background flush included
(`Metrics.sync()` every `--per-flush` requests, i.e. once a second at that
request rate). `--baseline REV` times `python/lectr/metrics.py` as it was at
git revision REV too, in the same process, interleaved.

Run: `python -m benchmarks.metrics_observe [--baseline a5b2ee2] [--n 200000]` (REV from
before the folders of issue 14, a5b2ee2 or older: the file moved; for later
changes compare whole builds with `benchmarks.ab`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks.env import module_at


def _load(rev: str | None, multiproc_dir: str) -> ModuleType:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
    if rev is None:
        import lectr.observe.metrics

        return lectr.observe.metrics
    return module_at(rev, "python/lectr/metrics.py", Path(multiproc_dir).parent)


def records() -> list[tuple[Any, float | None]]:
    """A traffic mix: 3 orgs, 5 features, 2 providers, errors, streams, rules."""
    from lectr.types import Record

    out: list[tuple[Any, float | None]] = []
    models = [("openai", "gpt-4o-mini"), ("openai", "gpt-4.1"), ("anthropic", "claude-3-5-haiku")]
    for i in range(240):
        provider, model = models[i % 3]
        err = i % 10 == 9
        out.append(
            (
                Record(
                    id=str(i),
                    ts=0.0,
                    org_id=f"org_{i % 3}",
                    endpoint="/v1/chat/completions",
                    provider=provider,
                    model_requested=model,
                    model_actual=model,
                    rule_id="rule_1" if i % 4 == 0 else None,
                    status_code=500 if err else 200,
                    error_category="server_error" if err else None,
                    error_source="provider" if err else None,
                    streaming=i % 5 == 0,
                    latency_ms=5.0 + (i * 37) % 900,
                    ttfb_ms=2.0 + (i * 13) % 300,
                    prompt_tokens=None if err else 100 + i,
                    completion_tokens=None if err else 20 + i % 7,
                    cached_tokens=None if err else (i % 2) * 40,
                    token_source=None if err else "provider",
                    cost_usd=None if err else 0.0001 * (i % 11),
                    feature=("search", "chat", "extract", "summarise", "untagged")[i % 5],
                    task=("classification", None, "generation")[i % 3],
                ),
                None if i % 17 == 0 else 4.0 + (i * 37) % 890,
            )
        )
    return out


def bench(module: ModuleType, n: int, per_flush: int | None) -> float:
    """µs per request: inflight(+1), [stream], observe, inflight(-1)[, flush share]."""
    m = module.Metrics(lambda: 0)
    mix = records()
    todo = [mix[i % len(mix)] for i in range(n)]
    inflight, started, ended, observe, sync = m.inflight, m.stream_started, m.stream_ended, m.observe, m.sync
    t0 = time.perf_counter()
    for i, (rec, up) in enumerate(todo):
        inflight(1)
        if rec.streaming:
            started()
            ended()
        observe(rec, up)
        inflight(-1)
        if per_flush is not None and i % per_flush == per_flush - 1:
            sync()
    if per_flush is not None:
        sync()
    return (time.perf_counter() - t0) / n * 1e6


def bench_observe(module: ModuleType, n: int) -> float:
    """µs per `observe()` call alone."""
    m = module.Metrics(lambda: 0)
    mix = records()
    todo = [mix[i % len(mix)] for i in range(n)]
    observe = m.observe
    t0 = time.perf_counter()
    for rec, up in todo:
        observe(rec, up)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--baseline", metavar="REV", help="also time metrics.py at this git revision")
    p.add_argument("--n", type=int, default=200_000, help="requests per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--per-flush", type=int, default=2000, help="requests between background flushes")
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="lectr-bench-metrics-")
    try:
        mp_dir = os.path.join(tmp, "multiproc")
        os.mkdir(mp_dir)
        modules = {"current": _load(None, mp_dir)}
        if args.baseline:
            modules[args.baseline] = _load(args.baseline, mp_dir)
        results: dict[str, dict[str, list[float]]] = {k: {"observe": [], "request": []} for k in modules}
        for _ in range(args.rounds):
            for name, module in modules.items():
                results[name]["observe"].append(bench_observe(module, args.n))
                results[name]["request"].append(bench(module, args.n, args.per_flush))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"multiprocess mode, {args.n} requests x {args.rounds} rounds, best round, µs per call\n")
    print(f"| metrics.py | observe() | request path + flush share (flush every {args.per_flush}) |")
    print("|---|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {min(r['observe']):.2f} | {min(r['request']):.2f} |")


if __name__ == "__main__":
    main()
