"""Scenario 7: the gateway's latency while its writer ingests into
PostgreSQL, against the same gateway storing nothing (issue 3).

Lectr as in `targets.lectr`, capturing to a throwaway PostgreSQL (fsync off),
in three variants, alternating over several rounds (the spread between starts
of the same code is larger than many effects), wrk at 1 and 4 connections:
- *storage*: the writer stores the gateway's own records (~3k/s here);
- *backlog*: as *storage*, and the writer also replays a spill of two million
  records (as after a database outage; `--backlog`), so it ingests as fast
  as it can for the whole measurement;
- *none*: the writer holds its records instead of writing them (flush
  interval of an hour, batch and queue larger than the run).

Two placements of the processes:
- *shared*: every process may run on every core, as in the other scenarios.
  Here storage competes for the cores with the gateway, wrk and the upstream.
- *isolated*: the storage (Lectr's writer process, PostgreSQL and, when the
  bench may move them, the kernel's unbound work queues) on the last core,
  everything else (the serving process, wrk, the upstream) on the first.
  This is what storage costs the request path itself, apart from what it
  costs the machine.

`python -m benchmarks.ingest_latency [--rounds 4] [--seconds 8]
[--only isolated,backlog]` runs it alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec

from benchmarks import env, load, procs, upstreams
from benchmarks.targets import FEATURE, Env, Running, lectr

NO_STORAGE = {
    "LECTR_WRITER_FLUSH_INTERVAL": "3600",
    "LECTR_WRITER_BATCH_SIZE": "100000000",
    "LECTR_WRITER_QUEUE_SIZE": "100000000",
}
VARIANTS = ("storage", "backlog", "none")
BACKLOG_FILES = 20  # the writer replays one file per cycle, flushing live records between
CONNS = (1, 4)


def _pin(pids: list[int], cpus: set[int]) -> None:
    """Every thread of `pids` onto `cpus` (threads keep their own affinity,
    so setting the process's alone would leave its running threads where
    they were)."""
    for pid in pids:
        with contextlib.suppress(FileNotFoundError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.sched_setaffinity(int(tid), cpus)


def _writer(t: Running) -> dict[str, Any]:
    ready: dict[str, Any] = httpx.get(t.url_fixed.split("/v1/")[0] + "/readyz", timeout=10).json()
    writer: dict[str, Any] = ready["writer"]
    return writer


# The kernel's unbound work queues (page writeback among them: PostgreSQL's
# dirty pages) go with the storage when the bench may move them (root).
WORKQUEUE_MASKS = [
    Path("/sys/devices/virtual/workqueue/cpumask"),
    Path("/sys/devices/virtual/workqueue/writeback/cpumask"),
]


@contextlib.contextmanager
def _workqueues_on(cpus: set[int]) -> Iterator[None]:
    saved: list[tuple[Path, str]] = []
    try:
        for mask in WORKQUEUE_MASKS:
            with contextlib.suppress(OSError):
                old = mask.read_text().strip()
                mask.write_text(f"{sum(1 << c for c in cpus):x}\n")
                saved.append((mask, old))
        yield
    finally:
        for mask, old in saved:
            with contextlib.suppress(OSError):
                mask.write_text(old + "\n")


@contextlib.contextmanager
def _placed(placement: str, t: Running, storage_roots: list[int], others: list[int]) -> Iterator[None]:
    """For *isolated*: the storage processes (and the kernel's unbound work
    queues) on the last core, the gateway, the upstream and this process (wrk
    inherits it) on the first."""
    everything = os.sched_getaffinity(0)
    if placement == "shared":
        yield
        return
    serve, store = {min(everything)}, {max(everything)}
    writer_pid = _writer(t).get("process", {}).get("pid")  # none: the writer runs in-process
    writer = procs.tree(writer_pid) if writer_pid else []
    storage = [p for root in storage_roots for p in procs.tree(root)] + writer
    serving = [p for p in procs.tree(t.pid) if p not in writer] + others
    try:
        _pin(serving, serve)
        _pin(storage, store)
        os.sched_setaffinity(0, serve)
        with _workqueues_on(store):
            yield
    finally:
        os.sched_setaffinity(0, everything)
        _pin(serving + storage, everything)


def _round(
    t: Running, wrk: str, seconds: float, warmup: float, tmp: Path, headers: dict[str, str]
) -> dict[str, Any]:
    from benchmarks.scenarios import BODY_FIXED

    load.wrk(wrk, t.url_fixed, 4, warmup, BODY_FIXED, headers, tmp)
    before = _writer(t)
    out: dict[str, Any] = {}
    for c in CONNS:
        r = load.wrk(wrk, t.url_fixed, c, seconds, BODY_FIXED, headers, tmp)
        out[str(c)] = {"p50": r.p50, "p99": r.p99, "p999": r.p999, "rps": r.rps, "requests": r.requests}
    after = _writer(t)
    out["written"] = after["written"] + after["replayed"] - before["written"] - before["replayed"]
    out["dropped"] = after["dropped"]
    return out


def _backlog(tmp: Path, per_file: int) -> Path:
    """Spill files of synthetic records (time-ordered ids, as the gateway's),
    written once; each round links them into its data folder (replaying a
    file deletes that link only)."""
    from benchmarks.storage import synthetic
    from lectr.capture.spill import _encode
    from lectr.gateway.exchange import record_id

    folder = tmp / f"ingest-backlog-{per_file}"
    if not folder.is_dir():
        folder.mkdir()
        for i in range(BACKLOG_FILES):
            rows = [
                msgspec.structs.replace(r, id=record_id(r.ts)) for r in synthetic(per_file, "org_backlog")
            ]
            (folder / f"spill-backlog-{i:03d}.jsonl").write_bytes(b"".join(_encode(r) + b"\n" for r in rows))
    return folder


def _data_dir(tmp: Path, name: str, backlog: Path | None) -> Path:
    data = tmp / name
    (data / "spill").mkdir(parents=True)
    for f in sorted(backlog.iterdir()) if backlog else []:
        os.link(f, data / "spill" / f.name)
    return data


def _pcts(figs: dict[str, Any]) -> str:
    return f"p50 {figs['p50']:.3f} p99 {figs['p99']:.3f} ms"


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in map(str, CONNS):
        for k in ("p50", "p99", "rps"):
            xs = [r[c][k] for r in rows]
            out[f"{k}_c{c}"] = {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}
    out["written_per_s"] = statistics.median(
        r["written"] / sum(r[str(c)]["requests"] / r[str(c)]["rps"] for c in CONNS) for r in rows
    )
    out["dropped"] = max(r["dropped"] for r in rows)
    out["backlog_left_min"] = min(r["backlog_left"] for r in rows)
    return out


def run(
    e: Env,
    rounds: int,
    seconds: float,
    warmup: float,
    say: Callable[[str], None],
    backlog_records: int = 2_000_000,
    only: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Both placements (isolated only with two cores or more), both variants,
    `rounds` alternating rounds each; medians and ranges per figure."""
    from benchmarks.scenarios import headers
    from devtools.services import Postgres

    wrk = env.wrk()
    placements = ["shared"] + (["isolated"] if len(os.sched_getaffinity(0)) >= 2 else [])
    # `only` narrows placements and variants it names; "none" always runs.
    placements = [p for p in placements if p in only] or placements
    variants = tuple(v for v in VARIANTS if v in only or v == "none")
    variants = variants if len(variants) > 1 else VARIANTS
    out: dict[str, Any] = {"rounds": rounds, "seconds": seconds, "placements": {}}
    backlog = _backlog(e.tmp, max(1, backlog_records // BACKLOG_FILES))
    pg = Postgres()
    try:
        postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
        upstream = procs.tree(e.fixed.pid)
        for placement in placements:
            rows: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
            for i in range(rounds):
                for variant in variants if i % 2 == 0 else variants[::-1]:
                    run_id = f"{placement}_{variant}_{i}"
                    url = pg.new_database(f"lectr_{run_id}")  # the target creates its org anew
                    data = _data_dir(e.tmp, f"ingest-{run_id}", backlog if variant == "backlog" else None)
                    settings = {"LECTR_DATA_DIR": str(data)} | (NO_STORAGE if variant == "none" else {})
                    t = lectr.start(e, name=f"lectr-{variant}", database_url=url, settings=settings)
                    try:
                        with _placed(placement, t, [postmaster], upstream):
                            row = _round(t, wrk, seconds, warmup, e.tmp, headers(t, FEATURE))
                            # The backlog must have outlasted the measurement.
                            row["backlog_left"] = len(list((data / "spill").glob("spill-backlog-*")))
                    finally:
                        t.stop()
                        shutil.rmtree(data, ignore_errors=True)
                    rows[variant].append(row)
                    say(
                        f"ingest latency {placement} {variant} round {i + 1}: "
                        + ", ".join(f"c={c} {_pcts(row[str(c)])}" for c in CONNS)
                        + f", written {row['written']:,}"
                    )
            summary = {v: _summary(rows[v]) for v in variants}
            summary["rounds"] = rows
            out["placements"][placement] = summary
    finally:
        pg.destroy()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--backlog", type=int, default=2_000_000)
    ap.add_argument(
        "--only", default="", help="placements and variants to run, comma-separated (default all)"
    )
    ap.add_argument("--out", type=Path, help="write the figures here as JSON")
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="lectr-ingest-latency-"))
    fixed, stream = upstreams.start_fixed(tmp), upstreams.start_stream(tmp)
    t0 = time.monotonic()
    try:
        res = run(
            Env(tmp=tmp, fixed=fixed, stream=stream),
            a.rounds,
            a.seconds,
            2,
            lambda m: print(f"[{time.monotonic() - t0:5.0f}s] {m}", file=sys.stderr, flush=True),
            a.backlog,
            only=tuple(filter(None, a.only.split(","))),
        )
    finally:
        fixed.stop()
        stream.stop()
    text = json.dumps(res, indent=1)
    if a.out:
        a.out.write_text(text)
    for placement, s in res["placements"].items():
        for v in (v for v in VARIANTS if v in s):
            figs = ", ".join(
                f"c={c} {_pcts({k: s[v][f'{k}_c{c}']['median'] for k in ('p50', 'p99')})}" for c in CONNS
            )
            print(f"{placement:9} {v:8} {figs}, written {s[v]['written_per_s']:,.0f}/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
