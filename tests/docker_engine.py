"""A Docker engine for the container tests: Debian packages, a daemon, the image, host-network containers.

Nothing is skipped: missing packages are installed with apt-get, a daemon is
started (vfs storage) when none answers and stopped again at the end (only
the one started here), and the image is built with deploy/image.sh from local
Debian bases, since no image registry is reachable on the test machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from devtools.harness import ROOT

# Debian's docker.io client (20.10): a newer one on the PATH may demand the
# buildx plugin for BuildKit, which cannot be installed here.
DOCKER = "/usr/bin/docker"
IMAGE = "lectr:test"
PACKAGES = {
    "docker.io": DOCKER,
    "debootstrap": "/usr/sbin/debootstrap",
    "docker-compose": "/usr/bin/docker-compose",
}


def install_missing() -> None:
    missing = [pkg for pkg, path in PACKAGES.items() if not Path(path).exists()]
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", *missing]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
        subprocess.run(cmd, env=env, capture_output=True, check=True)


def docker(
    *args: str, check: bool = True, timeout: float = 120, **kw: Any
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r


def answers() -> bool:
    return docker("info", check=False, timeout=30).returncode == 0


class Engine:
    """The Docker daemon for this test session: the running one, or one started (and later stopped) here."""

    def __init__(self, tmp: Path) -> None:
        install_missing()
        self.proc: subprocess.Popen[bytes] | None = None
        if answers():
            return
        log = tmp / "dockerd.log"
        self.proc = subprocess.Popen(
            ["dockerd", "--storage-driver=vfs"], stdout=log.open("wb"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while not answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def build_image(tag: str = IMAGE) -> float:
    """Build the gateway image from local bases (made when missing); returns the seconds it took."""
    start = time.monotonic()
    r = subprocess.run(
        [str(ROOT / "deploy" / "image.sh"), tag],
        env={**os.environ, "DOCKER": DOCKER},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if r.returncode != 0:
        raise RuntimeError(f"deploy/image.sh failed:\n{r.stdout[-3000:]}{r.stderr[-5000:]}")
    return time.monotonic() - start


class Container:
    """One `docker run -d --network host` container, removed when done."""

    def __init__(self, name: str, *args: str, image: str = IMAGE) -> None:
        self.name = name
        docker("rm", "-f", name, check=False)
        self.id = docker("run", "-d", "--name", name, "--network", "host", *args, image).stdout.strip()

    def inspect(self) -> dict[str, Any]:
        out: list[dict[str, Any]] = json.loads(docker("inspect", self.name).stdout)
        return out[0]

    def running(self) -> bool:
        return bool(self.inspect()["State"]["Running"])

    def logs(self) -> str:
        r = docker("logs", self.name, check=False)
        return r.stdout + r.stderr

    def exec(self, *args: str) -> str:
        return docker("exec", self.name, *args).stdout

    def stop(self, grace: int = 40) -> int:
        docker("stop", "-t", str(grace), self.name, timeout=grace + 30)
        return int(self.inspect()["State"]["ExitCode"])

    def remove(self) -> None:
        docker("rm", "-f", "-v", self.name, check=False)


def data_dir(path: Path) -> Path:
    """A host directory for a container's /var/lib/lectr, writable by its uid 10001."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    os.chown(path, 10001, 10001)
    return path
