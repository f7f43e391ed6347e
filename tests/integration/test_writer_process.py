"""The record writer in a process of its own: records survive the serving
process being killed outright and the writer process dying; /readyz shows the
writer process and what it holds."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from devtools.harness import Gateway, Mock, running
from tests.integration.test_proxy import CHAT, post


def _process(gw: Gateway) -> dict[str, Any]:
    writer: dict[str, Any] = httpx.get(gw.url + "/readyz").json()["writer"]
    process: dict[str, Any] = writer["process"]
    return process


def _wait_process(gw: Gateway, what: str, ok: Any, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not ok(p := _process(gw)):
        assert time.monotonic() < deadline, f"writer process never {what}: {p}"
        time.sleep(0.02)
    return p


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if state[state.rindex(")") + 2] == "Z":  # exited, not yet reaped
            return True
        time.sleep(0.05)
    return False


def _serve(gw: Gateway, key: str, feature: str, n: int) -> None:
    served = sum(post(gw, key, CHAT, **{"X-Lectr-Feature": feature}).status_code == 200 for _ in range(n))
    assert served == n


def _start_holding(gw: Gateway, feature: str, n: int) -> tuple[str, int]:
    """Start the gateway, serve `n` requests and wait until its writer process
    holds their records; the org key and the writer's pid."""
    key = gw.create_org("o")
    gw.start()
    _serve(gw, key, feature, n)
    return key, _wait_process(gw, f"took the {n} records", lambda p: p["holding"] == n)["pid"]


def test_serving_process_killed_loses_no_handed_over_record(tmp_root: Path, mock: Mock) -> None:
    # A long flush interval keeps the records in the writer process's memory.
    with running(tmp_root, mock, LECTR_WRITER_FLUSH_INTERVAL="60") as gw:
        _, writer = _start_holding(gw, "sigkill", 40)
        worker = _parent(writer)
        assert worker != writer and gw.proc is not None
        # No shutdown, no drain: the serving worker and granian's main process die at once.
        os.kill(worker, signal.SIGKILL)
        gw.proc.kill()
        gw.proc.wait(timeout=10)
        # The writer sees its input close, stores what it holds and exits.
        assert _gone(writer, timeout=30), "the writer process did not exit after the serving process died"
        assert len(gw.records(expect=40, timeout=1, feature="sigkill")) == 40


def test_writer_process_killed_is_restarted_and_loses_nothing(tmp_root: Path, mock: Mock) -> None:
    with running(tmp_root, mock, LECTR_WRITER_FLUSH_INTERVAL="60") as gw:
        key, first = _start_holding(gw, "restart", 30)
        os.kill(first, signal.SIGKILL)
        # The serving side still had all 30 and hands them to the next writer.
        second = _wait_process(
            gw, "restarted", lambda p: p["pid"] not in (None, first) and p["holding"] == 30
        )
        assert second["restarts"] == 1
        _serve(gw, key, "restart", 10)
        ready = httpx.get(gw.url + "/readyz").json()
        assert ready["status"] == "ok"
        assert ready["writer"]["depth"] == 40
        assert ready["writer"]["dropped"] == 0
        assert gw.proc is not None
        gw.proc.terminate()
        assert gw.proc.wait(timeout=40) == 0
        rows = gw.records(expect=40, timeout=1, feature="restart")
        assert len(rows) == 40
        assert len({r["id"] for r in rows}) == 40
        assert "record writer process exited with code -9; restarting it" in gw.log.read_text()
