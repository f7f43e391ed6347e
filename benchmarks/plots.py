"""The run's PNG plots: latency percentiles, throughput, streaming
arrivals, memory against requests served."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from benchmarks.figures import MAIN, get


def plots(r: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = {**r["targets"], **r.get("extras", {})}
    names = list(T)
    colors = {n: plt.get_cmap("tab10")(i % 10) for i, n in enumerate(names)}

    # Latency percentiles per target.
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, c in zip(axes, ("1", "4"), strict=True):
        shown = [n for n in names if get(T[n], "latency", c)]
        width = 0.8 / 3
        for j, q in enumerate(("p50", "p90", "p99")):
            vals = [T[n]["latency"][c][q] for n in shown]
            ax.bar([i + (j - 1) * width for i in range(len(shown))], vals, width, label=q)
        ax.set_xticks(range(len(shown)), shown, rotation=30, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("ms (log)")
        ax.set_title(f"non-streamed latency, {c} connection{'s' if c != '1' else ''}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)

    # Throughput and CPU per request per target.
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    shown = [n for n in r["targets"] if get(T[n], "throughput")]
    for j, c in enumerate(("32", "64")):
        axes[0].bar(
            [i + (j - 0.5) * 0.4 for i in range(len(shown))],
            [T[n]["throughput"][c]["rps"] for n in shown],
            0.4,
            label=f"{c} connections",
        )
    axes[0].set_yscale("log")
    axes[0].set_ylabel("requests/s (log)")
    axes[0].set_title("throughput, one worker each")
    axes[0].legend()
    axes[0].set_xticks(range(len(shown)), shown, rotation=30, ha="right")
    axes[1].bar(range(len(shown)), [T[n]["throughput"]["32"]["cpu_us_per_req"] or 0 for n in shown])
    axes[1].set_yscale("log")
    axes[1].set_ylabel("µs CPU per request (log)")
    axes[1].set_title("CPU time per request, 32 connections")
    axes[1].set_xticks(range(len(shown)), shown, rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)

    # Streaming timeline: when each chunk arrived, and its transit time.
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for n in r["targets"]:
        s = get(T[n], "streaming")
        if not s or not s["arrival_ms_by_chunk"]:
            continue
        xs = list(range(1, len(s["arrival_ms_by_chunk"]) + 1))
        axes[0].plot(xs, s["arrival_ms_by_chunk"], marker=".", label=n, color=colors[n])
        axes[1].plot(xs, s["transit_us_by_chunk"], marker=".", label=n, color=colors[n])
    axes[0].set_xlabel("content chunk")
    axes[0].set_ylabel("ms since the request was sent (median)")
    axes[0].set_title("streaming timeline, 20 chunks × 5 ms")
    axes[0].legend()
    axes[1].set_xlabel("content chunk")
    axes[1].set_ylabel("µs from upstream send to client (median, log)")
    axes[1].set_yscale("log")
    axes[1].set_title("per-chunk transit")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out / "streaming.png", dpi=110)
    plt.close(fig)

    # RSS across the long run.
    fig, ax = plt.subplots(figsize=(8, 4))
    mem = get(r["targets"], MAIN, "memory")
    if mem and mem["samples"]:
        prog = mem.get("progress") or [(0.0, 0), (mem["seconds"], mem["requests"])]

        def served(at: float) -> float:
            """Requests served by `at` seconds, interpolated between wrk segments."""
            for (t0, n0), (t1, n1) in itertools.pairwise(prog):
                if at <= t1:
                    return n0 + (n1 - n0) * (max(at, t0) - t0) / ((t1 - t0) or 1)
            return prog[-1][1]

        xs = [served(s[0]) for s in mem["samples"]]
        ax.plot(xs, [s[1] / 2**20 for s in mem["samples"]], label="serving worker")
        ax.plot(xs, [s[2] / 2**20 for s in mem["samples"]], label="process tree")
        ax.axhline(64, linestyle="--", color="grey", label="64 MiB goal")
        ax.set_ylim(bottom=0)
        ax.legend()
    ax.set_xlabel("requests served")
    ax.set_ylabel("RSS MiB")
    ax.set_title("Lectr memory under sustained load")
    fig.tight_layout()
    fig.savefig(out / "memory.png", dpi=110)
    plt.close(fig)
