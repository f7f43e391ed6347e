"""A dev service's process: its own session, output to a log, polled until ready, stopped by its signal."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx


class ServiceError(RuntimeError):
    """A service did not start; the message says which and why, with its log's tail."""


def tail(log: Path, lines: int = 30) -> str:
    """The last lines of a log, for error messages."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def http_ok(url: str) -> Callable[[], bool]:
    """A readiness check: `url` answers below 500."""

    def ready() -> bool:
        try:
            return httpx.get(url, timeout=1.0).status_code < 500
        except httpx.HTTPError:
            return False

    return ready


def wait_ready(
    name: str, proc: subprocess.Popen[bytes], log: Path, ready: Callable[[], bool], timeout: float = 30.0
) -> None:
    """Poll `ready()` until it holds; ServiceError if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise ServiceError(f"{name} exited with {proc.returncode}:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise ServiceError(f"{name} not ready after {timeout:.0f}s:\n{tail(log)}")
        time.sleep(0.05)


@dataclass
class Service:
    """One running program."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    url: str
    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout: float = 15.0
    expected_exit: bool = field(default=False)

    def wait_ready(self, ready: Callable[[], bool], timeout: float = 30.0) -> None:
        """Poll `ready()`; a service that never gets there is killed, not left behind."""
        try:
            wait_ready(self.name, self.proc, self.log, ready, timeout)
        except BaseException:
            self.kill()
            self.proc.wait()
            raise

    def signal(self) -> None:
        """Send its stop signal without waiting. A graceful signal goes to the
        main process, which stops its own workers in order; SIGKILL goes to
        the whole process group, as a crash (or a container's end) takes
        granian's workers with it."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if self.stop_signal == signal.SIGKILL:
                    self.kill()
                else:
                    self.proc.send_signal(self.stop_signal)

    def kill(self) -> None:
        """SIGKILL to its process group (it leads its own session)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def wait_stopped(self) -> int:
        """Wait for the exit, killing the group only if it overruns its stop timeout."""
        try:
            return self.proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.wait()

    def stop(self) -> int:
        """Signal, wait, and kill only if it does not exit in time."""
        self.signal()
        return self.wait_stopped()


def spawn(
    name: str,
    argv: list[str],
    log: Path,
    url: str = "",
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
    stop_signal: signal.Signals = signal.SIGTERM,
    stop_timeout: float = 15.0,
) -> Service:
    """Start `argv` in a session of its own (a terminal's Ctrl-C reaches only
    the caller, which stops services in order), output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            user=user,
        )
    return Service(name, proc, log, url, stop_signal, stop_timeout)
