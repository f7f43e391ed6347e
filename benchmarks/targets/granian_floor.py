"""granian alone under `lectr serve`'s settings (benchmarks/floor.py), the
floor Lectr's figures are reported above: `granian-static` answers the
fixed body itself, `granian-proxy` passes requests through Lectr's upstream
client to the same upstreams as every target, with nothing else."""

from __future__ import annotations

import sys

from benchmarks import procs
from benchmarks.targets import Env, Running
from devtools.harness import ROOT, wait_http
from devtools.ports import free_port


def start_floor(env: Env, mode: str) -> Running:
    port = free_port()
    log = env.tmp / f"granian-{mode}.log"
    proc = procs.spawn(
        [sys.executable, "-m", "benchmarks.floor", mode, str(port), env.fixed.url, env.stream.url],
        log,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", proc, log)
    return Running(
        name=f"granian-{mode}",
        url_fixed=f"{url}/v1/chat/completions",
        url_stream=f"{url}/stream/v1/chat/completions" if mode == "proxy" else f"{url}/v1/chat/completions",
        pid=proc.pid,
        command=f"python -m benchmarks.floor {mode} {port} ...  (1 worker, lectr serve's granian settings)",
        stop=lambda: procs.terminate(proc),
        notes="answers the fixed body itself: no upstream" if mode == "static" else "",
    )


class _Mode:
    """A target module's face (NAME, DESCRIPTION, start) for one floor mode."""

    def __init__(self, mode: str, description: str) -> None:
        self.NAME = f"granian-{mode}"
        self.DESCRIPTION = description
        self._mode = mode

    def start(self, env: Env) -> Running:
        return start_floor(env, self._mode)


static = _Mode("static", "granian alone, answering the fixed body itself (no upstream)")
proxy = _Mode("proxy", "granian + Lectr's upstream client, pass-through, nothing else (the floor)")
