"""Real processes on free ports for the tests and benchmarks: the mock provider and the
gateway (`lectr serve`), each started as a user would and polled until ready."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from devtools.ports import free_port
from devtools.process import http_ok, wait_ready

ROOT = Path(__file__).resolve().parent.parent
LECTR = [sys.executable, "-m", "lectr"]


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    """Wait until `url` answers below 500; ServiceError if `proc` exits or time runs out."""
    wait_ready(url, proc, log, http_ok(url), timeout)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Mock:
    """The shared mock provider in a subprocess."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"mock-{self.port}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devtools.mock_provider", "--port", str(self.port)],
            cwd=ROOT,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait_http(f"{self.url}/_mock/stats", self.proc, self.log)

    def stop(self) -> None:
        stop(self.proc)

    def __enter__(self) -> Mock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def requests(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = httpx.get(f"{self.url}/_mock/requests").json()
        return out

    def clear(self) -> None:
        httpx.delete(f"{self.url}/_mock/requests")

    def stats(self) -> dict[str, int]:
        out: dict[str, int] = httpx.get(f"{self.url}/_mock/stats").json()
        return out


class Hostile:
    """The hostile provider (devtools/hostile_provider.py) in a subprocess."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"hostile-{self.port}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devtools.hostile_provider", "--port", str(self.port)],
            cwd=ROOT,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait_http(f"{self.url}/_hostile/stats", self.proc, self.log)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = httpx.get(f"{self.url}/_hostile/stats").json()
        return out

    def received(self, request_id: str) -> int:
        """Requests that arrived with `x-hostile-id: request_id`."""
        return int(self.stats()["requests"].get(request_id, 0))


class Gateway:
    """`lectr serve` in a subprocess with its own data dir, pointed at the mock."""

    def __init__(self, tmp: Path, mock: Mock | Hostile, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = tmp / f"data-{self.port}"
        self.log = tmp / f"gateway-{self.port}.log"
        self.env = {
            **os.environ,
            "LECTR_DATA_DIR": str(self.data_dir),
            "LECTR_OPENAI_BASE_URL": f"{mock.url}/v1",
            "LECTR_ANTHROPIC_BASE_URL": f"{mock.url}/anthropic/v1",
            "LECTR_GROQ_BASE_URL": f"{mock.url}/groq/openai/v1",
            "LECTR_GEMINI_BASE_URL": f"{mock.url}/gemini/v1beta/openai",
            "LECTR_WRITER_FLUSH_INTERVAL": "0.05",
            "LECTR_CONTROL_REFRESH_INTERVAL": "0.2",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> str:
        r = subprocess.run(
            [*LECTR, *args], check=False, env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        if r.returncode != 0:
            raise RuntimeError(f"lectr {' '.join(args)} failed: {r.stderr}")
        return r.stdout

    def create_org(self, name: str) -> str:
        return self.cli("orgs", "create", name).strip().splitlines()[-1]

    def start(self) -> Gateway:
        self.proc = subprocess.Popen(
            [*LECTR, "serve", "--port", str(self.port)],
            env=self.env,
            cwd=ROOT,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_http(f"{self.url}/healthz", self.proc, self.log)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def worker_pids(self) -> list[int]:
        """The granian worker processes (children of `lectr serve`)."""
        assert self.proc is not None
        kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return [int(k) for k in kids if b"writer_process" not in Path(f"/proc/{k}/cmdline").read_bytes()]

    def worker_rss(self) -> int:
        """Resident memory of the workers, bytes (VmRSS from /proc)."""
        total = 0
        for pid in self.worker_pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total

    def wait_rss_below(self, limit: int, timeout: float = 10.0) -> int:
        """Poll until the workers' RSS is at most `limit`; returns the last reading."""
        deadline = time.monotonic() + timeout
        rss = self.worker_rss()
        while rss > limit and time.monotonic() < deadline:
            time.sleep(0.1)
            rss = self.worker_rss()
        return rss

    def records(self, timeout: float = 5.0, expect: int = 1, **where: Any) -> list[dict[str, Any]]:
        """Rows of the request log matching `where`, waiting for `expect` of them."""
        import sqlite3

        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            conn = sqlite3.connect(self.data_dir / "lectr.db")
            conn.row_factory = sqlite3.Row
            clause = " AND ".join(f"{k} = ?" for k in where) or "1"
            rows = [
                dict(r)
                for r in conn.execute(
                    f"SELECT * FROM requests WHERE {clause} ORDER BY ts", tuple(where.values())
                )
            ]
            conn.close()
            if len(rows) >= expect:
                return rows
            time.sleep(0.05)
        return rows


@contextmanager
def running(tmp: Path, mock: Mock | Hostile, **env: str) -> Iterator[Gateway]:
    gw = Gateway(tmp, mock, **env)
    try:
        yield gw
    finally:
        gw.stop()
