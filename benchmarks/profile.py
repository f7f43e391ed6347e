"""Profile Lectr's hot path under load: the fixed upstream and Lectr with every
feature on (as in the benchmarks), wrk at N connections, py-spy sampling the
serving worker meanwhile. Writes a flame graph (SVG) and the collapsed stacks,
and prints the frames with the most samples (own and inclusive).

Run: `python -m benchmarks.profile [--conns 1] [--seconds 15] [--native]
[--stream] [--gil] [--out DIR]` from a venv with a release build and py-spy
(the `bench` extra). `--native` includes the Rust and C frames (pausing the
process at each sample); `--gil` keeps only samples holding the GIL (where the
Python thread's CPU goes); `--stream` loads the streaming path (20 chunks ×
5 ms, one stream at a time, `--conns` ignored) instead of non-streamed requests.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks import env, load, procs, upstreams
from benchmarks.scenarios import BODY_FIXED, BODY_STREAM, headers
from benchmarks.targets import FEATURE, FEATURE_STREAM, Env, lectr


def _worker(pid: int) -> int:
    """The busiest process of the tree (granian's worker, not its supervisor)."""
    pids = procs.tree(pid)
    before = {p: procs.cpu_seconds([p]) for p in pids}
    time.sleep(1.0)
    return max(pids, key=lambda p: procs.cpu_seconds([p]) - before[p])


def summarize(raw: Path, top: int = 25) -> str:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    out = [f"{total} samples", "", "own time:"]
    out += [f"  {100 * v / total:5.1f}%  {k}" for k, v in own.most_common(top)]
    out += ["", "inclusive:"]
    out += [f"  {100 * v / total:5.1f}%  {k}" for k, v in incl.most_common(top)]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conns", type=int, default=1)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    ap.add_argument("--native", action="store_true", help="include native (Rust, C) frames")
    ap.add_argument("--stream", action="store_true", help="profile streamed requests")
    ap.add_argument("--gil", action="store_true", help="only samples holding the GIL (Python CPU time)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/profile"))
    a = ap.parse_args()
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        sys.exit("py-spy is not installed (pip install py-spy, or the bench extra)")
    a.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="lectr-profile-"))
    fixed, stream = upstreams.start_fixed(tmp), upstreams.start_stream(tmp)
    t = lectr.start(Env(tmp, fixed, stream))
    try:
        name = "stream" if a.stream else f"json-c{a.conns}"
        name += ("-native" if a.native else "") + ("-gil" if a.gil else "")
        if a.stream:
            # One stream at a time, as in the benchmark (about 8 per second).
            runner = threading.Thread(
                target=load.stream_many,
                args=(t.url_stream, int((a.seconds + 3) * 8), BODY_STREAM, headers(t, FEATURE_STREAM)),
            )
        else:
            runner = threading.Thread(
                target=load.wrk,
                args=(env.wrk(), t.url_fixed, a.conns, a.seconds + 3, BODY_FIXED, headers(t, FEATURE), tmp),
            )
        runner.start()
        worker = _worker(t.pid)
        raw = a.out / f"{name}.txt"
        cmd = [spy, "record", "-p", str(worker), "-d", str(a.seconds), "-r", str(a.rate)]
        # Native stacks need the process paused at each sample (slower, so sample less often).
        cmd += ["--native"] if a.native else ["--nonblocking"]
        cmd += ["--gil"] if a.gil else []
        r = subprocess.run([*cmd, "-f", "raw", "-o", str(raw)], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            sys.exit(f"py-spy failed: {r.stderr[-2000:]}")
        runner.join()
        summary = summarize(raw)
        (a.out / f"{name}-summary.txt").write_text(summary + "\n")
        print(summary)
        print(f"\ncollapsed stacks: {raw} (render with flamegraph.pl or speedscope)")
    finally:
        t.stop()
        fixed.stop()
        stream.stop()


if __name__ == "__main__":
    main()
