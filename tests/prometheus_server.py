"""A real Prometheus for the tests: Debian's package (installed if missing) on a free port."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from devtools.harness import stop, wait_http
from devtools.ports import free_port

BINARY = "/usr/bin/prometheus"


def ensure_installed() -> str:
    """Path of the prometheus binary, installing the Debian package if needed."""
    found = shutil.which("prometheus") or (BINARY if Path(BINARY).exists() else None)
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"]
    if subprocess.run(install, env=env, capture_output=True, timeout=600).returncode != 0:
        # A fresh machine has no package lists yet.
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600, check=True)
        subprocess.run(install, env=env, capture_output=True, timeout=600, check=True)
    found = shutil.which("prometheus") or BINARY
    if not Path(found).exists():
        raise RuntimeError("the prometheus package installed no prometheus binary")
    return found


class Prometheus:
    """Prometheus in a subprocess with its own data dir and scrape config."""

    def __init__(self, tmp: Path, targets: list[str], interval: str = "1s") -> None:
        binary = ensure_installed()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        home = tmp / f"prometheus-{self.port}"
        home.mkdir(parents=True)
        config = home / "prometheus.yml"
        quoted = ", ".join(f"'{t}'" for t in targets)
        config.write_text(
            f"global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n"
            f"scrape_configs:\n  - job_name: lectr\n    static_configs:\n      - targets: [{quoted}]\n"
        )
        self.log = home / "prometheus.log"
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait_http(f"{self.url}/-/ready", self.proc, self.log)

    def stop(self) -> None:
        stop(self.proc)

    def api(self, path: str, **params: Any) -> Any:
        r = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = r.json()
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query at the current time; the result vector."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else []
        return result

    def scalar(self, expr: str) -> float | None:
        """The single value of an instant query, or None when it has none."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expr: str, ok: Callable[[float | None], bool], timeout: float = 20.0) -> float | None:
        """Poll `expr` until `ok(value)`; the last value is returned or reported."""
        deadline = time.monotonic() + timeout
        value = self.scalar(expr)
        while not ok(value):
            if time.monotonic() > deadline:
                targets = self.api("targets")
                raise TimeoutError(f"{expr} = {value} after {timeout}s; targets: {targets}")
            time.sleep(0.2)
            value = self.scalar(expr)
        return value
