"""Programs the dev services need: found on this machine, else installed once from Debian's packages."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from devtools.process import ServiceError

# Packages apt-get was already asked for in this process: a second attempt
# would only repeat a slow failure.
_attempted: set[str] = set()
_lock = threading.Lock()


class MissingProgram(ServiceError):
    """A program is not installed and could not be installed; the message says what to do."""


def _apt_get() -> list[str] | None:
    """How this process may run apt-get: directly as root, else through
    passwordless sudo, else not at all."""
    if not shutil.which("apt-get"):
        return None
    if os.geteuid() == 0:
        return ["apt-get"]
    if (
        shutil.which("sudo")
        and subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode == 0
    ):
        return ["sudo", "-n", "apt-get"]
    return None


def apt_install(package: str) -> None:
    """`apt-get install package`, refreshing the package lists once if the
    first attempt fails (a fresh machine has none). Raises MissingProgram."""
    with _lock:
        if package in _attempted:
            return
        _attempted.add(package)
        apt = _apt_get()
        if apt is None:
            raise MissingProgram(f"cannot install {package!r}: apt-get needs root or passwordless sudo")
        print(f"devtools: installing {package} (apt-get)", file=sys.stderr, flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = [*apt, "install", "-y", "-q", "--no-install-recommends", package]
        if subprocess.run(install, env=env, capture_output=True, timeout=900, check=False).returncode == 0:
            return
        subprocess.run([*apt, "update", "-q"], env=env, capture_output=True, timeout=900, check=False)
        r = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900, check=False)
        if r.returncode != 0:
            raise MissingProgram(f"apt-get install {package} failed:\n{r.stderr[-2000:]}")


def ensure(what: str, package: str, find: Callable[[], Path | None]) -> Path:
    """`find()`, installing Debian's `package` first when it finds nothing."""
    found = find()
    if found is not None:
        return found
    try:
        apt_install(package)
    except MissingProgram as e:
        raise MissingProgram(f"{what} not found ({e}): install Debian/Ubuntu package {package!r}") from None
    found = find()
    if found is None:
        raise MissingProgram(f"{what} not found: package {package!r} installed no such program")
    return found


def which(name: str, *extra: str) -> Callable[[], Path | None]:
    """A finder for `ensure`: `name` on PATH, else the first of `extra` that exists."""

    def find() -> Path | None:
        hit = shutil.which(name) or next((p for p in extra if Path(p).is_file()), None)
        return Path(hit) if hit else None

    return find


def program(name: str, package: str, *extra: str) -> Path:
    """The path of program `name`, installing `package` when it is missing."""
    return ensure(name, package, which(name, *extra))


def _postgres_bindir() -> Path | None:
    def major(path: str) -> float:
        try:
            return float(Path(path).parents[1].name)
        except ValueError:
            return 0.0

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=major)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("postgres")
    return Path(on_path).parent if on_path and Path(on_path).with_name("initdb").exists() else None


def postgres_bindir() -> Path:
    """The newest PostgreSQL's bin folder (initdb, postgres), installing Debian's postgresql if none."""
    return ensure("PostgreSQL", "postgresql", _postgres_bindir)
