"""Before / after: two builds of Lectr (two Python environments, each with
its own `lectr` installed) measured in alternating rounds on the same
upstreams as `make bench` (latency at 1 and 4 connections, throughput at 32),
so a code change is compared with its baseline in the same conditions
rather than across days.

Run: `python -m benchmarks.ab --a BEFORE_PYTHON --b AFTER_PYTHON [--rounds 3]
[--seconds 8] [--streams 50]`, from the checkout whose benchmark code measures both.
Prints each round and the median per side; loopback only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import upstreams
from benchmarks.scenarios import FULL, Bench, Progress
from benchmarks.targets import Env, lectr

FIGURES = (
    ("p50 @1 ms", ("latency", "1", "p50")),
    ("p99 @1 ms", ("latency", "1", "p99")),
    ("p50 @4 ms", ("latency", "4", "p50")),
    ("p99 @4 ms", ("latency", "4", "p99")),
    ("CPU µs/req @1", ("latency", "1", "cpu_us_per_req")),
    ("req/s @32", ("throughput", "32", "rps")),
    ("CPU µs/req @32", ("throughput", "32", "cpu_us_per_req")),
    ("chunk transit µs", ("streaming", "transit_us_p50")),
)


def one(seconds: float, streams: int, out: Path) -> None:
    """One round of the Lectr target served by this interpreter's `lectr`."""
    from dataclasses import replace

    plan = replace(FULL, latency_s=seconds, throughput_s=seconds, streams=streams, throughput_conns=(32,))
    tmp = Path(tempfile.mkdtemp(prefix="lectr-ab-"))
    fixed, stream = upstreams.start_fixed(tmp), upstreams.start_stream(tmp)
    try:
        bench = Bench(plan, tmp, Progress())
        bench.fixed_pid = fixed.pid
        t = lectr.start(Env(tmp=tmp, fixed=fixed, stream=stream))
        try:
            res = bench.latency_throughput(t)
            res["streaming"] = bench.streaming(t) if streams else {}
            res["streaming"].pop("samples", None)
        finally:
            t.stop()
    finally:
        fixed.stop()
        stream.stop()
    out.write_text(json.dumps(res))


def _get(d: Any, path: tuple[str, ...]) -> float | None:
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return float(d) if d is not None else None


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", help="the baseline's python")
    ap.add_argument("--b", help="the change's python")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--streams", type=int, default=50)
    ap.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # a round, run by the driver
    a = ap.parse_args()
    if a.one:
        one(a.seconds, a.streams, a.one)
        return
    if not (a.a and a.b):
        ap.error("--a and --b are required")
    runs: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
    with tempfile.TemporaryDirectory(prefix="lectr-ab-") as d:
        for r in range(a.rounds):
            for side in ("a", "b") if r % 2 == 0 else ("b", "a"):
                out = Path(d) / f"{side}-{r}.json"
                py = getattr(a, side)
                cmd = [py, "-m", "benchmarks.ab", "--one", str(out)]
                cmd += ["--seconds", str(a.seconds), "--streams", str(a.streams)]
                subprocess.run(cmd, check=True, cwd=Path(__file__).resolve().parent.parent)
                res = json.loads(out.read_text())
                runs[side].append(res)
                shown = ", ".join(f"{n} {_get(res, p) or 0:.3f}" for n, p in FIGURES)
                print(f"round {r + 1} {side}: {shown}", file=sys.stderr, flush=True)
    print(f"a = {a.a}, b = {a.b}; medians of {a.rounds} rounds (min-max)")
    print("| figure | a | b | b - a |")
    print("|---|---:|---:|---:|")
    for name, path in FIGURES:
        va = [v for v in (_get(x, path) for x in runs["a"]) if v is not None]
        vb = [v for v in (_get(x, path) for x in runs["b"]) if v is not None]
        if va and vb:
            ma, mb = statistics.median(va), statistics.median(vb)
            print(
                f"| {name} | {ma:.3f} ({min(va):.3f}-{max(va):.3f}) | "
                f"{mb:.3f} ({min(vb):.3f}-{max(vb):.3f}) | {mb - ma:+.3f} |"
            )


if __name__ == "__main__":
    main()
