"""Process helpers for the benchmarks: the process tree of a target, its CPU
time and resident memory from /proc, a background RSS sampler, and starting
and stopping the programs a benchmark run owns."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from devtools import process

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rfind(")") + 2 :].split()


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants (any thread may have forked them)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        f = _stat_fields(int(entry))
        if f is not None:
            parents.setdefault(int(f[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (all their threads, dead or alive)."""
    total = 0
    for p in pids:
        f = _stat_fields(p)
        if f is not None:
            total += int(f[11]) + int(f[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident set size of one process."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0


def tree_rss(pid: int) -> tuple[int, int]:
    """(RSS of the largest process in the tree, RSS summed over the tree)."""
    sizes = [rss_bytes(p) for p in tree(pid)]
    return max(sizes, default=0), sum(sizes)


class CpuMeter:
    """CPU time a process tree spends between `start()` and `stop()`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._pids: list[int] = []
        self._t0 = 0.0
        self.seconds = 0.0

    def start(self) -> CpuMeter:
        self._pids = tree(self.pid)
        self._t0 = cpu_seconds(self._pids)
        return self

    def stop(self) -> float:
        # Processes started during the run are counted from zero.
        pids = sorted(set(self._pids) | set(tree(self.pid)))
        self.seconds = cpu_seconds(pids) - self._t0
        return self.seconds


@dataclass
class RssSampler:
    """Samples a process tree's RSS every `every` seconds in a thread."""

    pid: int
    every: float = 1.0
    on_sample: Callable[[float, int, int], None] | None = None
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, largest, tree)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> RssSampler:
        t0 = time.monotonic()

        def run() -> None:
            while not self._stop.is_set():
                largest, total = tree_rss(self.pid)
                t = time.monotonic() - t0
                self.samples.append((t, largest, total))
                if self.on_sample is not None:
                    self.on_sample(t, largest, total)
                self._stop.wait(self.every)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[tuple[float, int, int]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.samples


def spawn(
    cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a program in its own process group, output to `log`."""
    return process.spawn(Path(cmd[0]).name, cmd, log, env=env, cwd=cwd).proc


def terminate(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    """Stop a program started by `spawn` and everything in its process group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # Workers that outlived their parent (same group, started by it).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def wait_idle(pid: int, max_wait: float = 30.0, window: float = 0.5, busy: float = 0.1) -> float:
    """Wait until the tree uses under `busy` of a core over `window` (a target
    still working off requests its last load run left behind); seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_wait:
        pids = tree(pid)
        c0 = cpu_seconds(pids)
        time.sleep(window)
        if cpu_seconds(pids) - c0 < busy * window:
            break
    return time.monotonic() - t0
