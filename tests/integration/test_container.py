"""The gateway image built and run for real: serving, health, user, contents, SIGTERM drain, settings.

The image is built by deploy/image.sh from local Debian bases (tests/docker_engine.py
starts a daemon when none runs); every container uses host networking and
reaches the mock provider on loopback. Records are read from the SQLite file
on the container's data volume, a host directory.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from devtools.harness import Mock
from devtools.ports import free_port
from tests.docker_engine import Container, data_dir, docker

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(1800)]

TOKEN = "container-admin-token"
PROVIDER_KEY = "sk-test-provider-key-0123456789"
MESSAGES: list[Any] = [{"role": "user", "content": "hello"}]


class Gateway:
    """The image running `lectr serve` on a free loopback port, its data dir a host directory."""

    def __init__(self, image: str, tmp: Path, mock: Mock, *args: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = data_dir(tmp / f"container-data-{self.port}")
        settings = {
            # Loopback only: with host networking the image's 0.0.0.0 would be every interface.
            "LECTR_HOST": "127.0.0.1",
            "LECTR_PORT": str(self.port),
            "LECTR_ADMIN_TOKEN": TOKEN,
            "LECTR_OPENAI_BASE_URL": f"{mock.url}/v1",
            "LECTR_WRITER_FLUSH_INTERVAL": "0.05",
            **env,
        }
        started = time.monotonic()
        self.container = Container(
            f"lectr-test-{self.port}",
            "-v",
            f"{self.data}:/var/lib/lectr",
            *(a for k, v in settings.items() for a in ("-e", f"{k}={v}")),
            *args,
            image=image,
        )
        deadline = started + 60
        while not self.answers():
            if not self.container.running():
                raise RuntimeError(f"container exited:\n{self.container.logs()}")
            assert time.monotonic() < deadline, f"no /healthz within 60 s:\n{self.container.logs()}"
            time.sleep(0.05)
        # From `docker run` to the first 200 from /healthz.
        self.startup = time.monotonic() - started

    def answers(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def new_org(self) -> tuple[str, str]:
        r = httpx.post(
            self.url + "/admin/orgs",
            json={"name": f"org-{uuid.uuid4().hex[:6]}"},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        assert r.status_code < 300, r.text
        body = r.json()
        return str(body["org"]["id"]), str(body["key"])

    def records(self, org: str) -> list[dict[str, Any]]:
        conn = sqlite3.connect(self.data / "lectr.db")
        conn.row_factory = sqlite3.Row
        try:
            rows = conn.execute("SELECT * FROM requests WHERE org_id = ? ORDER BY ts", (org,)).fetchall()
            return [dict(r) for r in rows]
        finally:
            conn.close()

    def wait_records(self, org: str, expected: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        rows = self.records(org)
        while len(rows) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
            rows = self.records(org)
        return rows


def client(url: str, key: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=url + "/v1",
        api_key=PROVIDER_KEY,
        default_headers={"X-Lectr-Key": key, **headers},
        max_retries=0,
        timeout=30,
    )


@pytest.fixture(scope="module")
def provider(tmp_root: Path) -> Iterator[Mock]:
    m = Mock(tmp_root)
    yield m
    m.proc.terminate()
    m.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def gateway(image: str, tmp_root: Path, provider: Mock) -> Iterator[Gateway]:
    gw = Gateway(image, tmp_root, provider, LECTR_RETENTION_DAYS="7")
    print(f"\ncontainer start-up (docker run to /healthz 200): {gw.startup:.2f} s")
    yield gw
    gw.container.remove()


def test_serves_a_completion_and_a_stream_and_stores_them_on_the_volume(
    gateway: Gateway, provider: Mock
) -> None:
    org, key = gateway.new_org()
    sdk = client(gateway.url, key)
    r = sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert r.choices[0].message.content
    chunks = list(
        sdk.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert len(chunks) > 2 and chunks[-1].usage is not None
    # Both reached the mock provider on loopback, with the caller's key.
    seen = [q for q in provider.requests() if q["path"] == "/v1/chat/completions"]
    assert len(seen) >= 2
    rows = gateway.wait_records(org, 2)
    assert [(row["streaming"], row["status_code"]) for row in rows] == [(0, 200), (1, 200)]
    assert all(row["completion_tokens"] for row in rows)
    # The file is the volume's: the container wrote it as its own user.
    assert (gateway.data / "lectr.db").stat().st_uid == 10001


def test_lectr_settings_reach_the_container(gateway: Gateway) -> None:
    # Port, admin token and provider URL were proven above; the rest as the gateway sees them.
    import json

    seen = json.loads(gateway.container.exec("lectr", "config"))
    assert seen["retention_days"] == 7
    assert seen["port"] == gateway.port
    assert seen["host"] == "127.0.0.1"
    assert seen["data_dir"] == "/var/lib/lectr"
    assert TOKEN not in json.dumps(seen), "secrets are masked"


def test_healthcheck_goes_healthy_and_every_process_runs_as_uid_10001(gateway: Gateway) -> None:
    # The image's own HEALTHCHECK (every 10 s): python -m lectr.healthcheck /healthz.
    deadline = time.monotonic() + 90
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        health = gateway.container.inspect()["State"]["Health"]
        if health["Status"] == "healthy":
            break
        assert health["Status"] == "starting", health
        time.sleep(0.5)
    assert health["Status"] == "healthy", health
    assert health["Log"][-1]["ExitCode"] == 0

    # PID 1 is tini (SIGTERM forwarding, reaping), everything runs as 10001.
    script = (
        "import os\n"
        "for p in filter(str.isdigit, os.listdir('/proc')):\n"
        "    uid = next(x.split()[1] for x in open(f'/proc/{p}/status') if x.startswith('Uid:'))\n"
        "    print(uid, open(f'/proc/{p}/cmdline').read().replace(chr(0), ' ').replace(chr(10), ' '))\n"
    )
    procs = [line.split(" ", 1) for line in gateway.container.exec("python", "-c", script).splitlines()]
    assert procs and all(uid == "10001" for uid, _ in procs), procs
    pid1 = gateway.container.exec("cat", "/proc/1/cmdline").split("\0")
    assert pid1[:3] == ["tini", "--", "lectr"], pid1
    assert any("serve" in cmd for _, cmd in procs), procs
    assert gateway.container.inspect()["Config"]["User"] == "10001:10001"


def test_the_image_holds_no_build_tools_source_or_cache(image: str) -> None:
    script = (
        "for t in cargo rustc rustup gcc cc ld maturin pip pip3 make git; do command -v $t; done; "
        "for d in /src /dist /target /root/.cargo /usr/local/cargo /root/.cache /root/.rustup; "
        "do [ -e $d ] && echo $d; done; "
        "find / -xdev \\( -name '*.whl' -o -name Cargo.toml -o -name '*.rs' -o -name '*.deb' "
        "-o -name pip -type d \\) -print; true"
    )
    # Python's own ensurepip wheels (pip, setuptools) are what `python -m venv`
    # installs from: part of the interpreter's distribution, no tool on the PATH.
    ensurepip = ("/usr/share/python-wheels/", "/ensurepip/_bundled/")
    found = docker("run", "--rm", "--network", "host", "--entrypoint", "/bin/sh", image, "-c", script).stdout
    assert [f for f in found.split() if not any(e in f for e in ensurepip)] == [], found
    size = int(docker("image", "inspect", "-f", "{{.Size}}", image).stdout)
    print(f"\nimage size: {size / 1e6:.0f} MB")
    # The runtime stage is Debian + Python + the wheel's dependencies (~250 MB);
    # a build stage leaking in would add rustc and cargo (~800 MB).
    assert size < 400e6, size


class Load:
    """Clients in threads sending requests to one URL until stopped; counts what they were answered."""

    def __init__(self, url: str, key: str, threads: int = 6) -> None:
        self.accepted = 0
        self.failed = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(url, key)) for _ in range(threads)]

    def _run(self, url: str, key: str) -> None:
        # Provider latency keeps requests in flight when SIGTERM arrives.
        sdk = client(url, key, **{"x-mock-latency-ms": "100"})
        while not self._stop.is_set():
            try:
                sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
                ok = True
            except openai.APIError:
                ok = False
                time.sleep(0.01)
            with self._lock:
                if ok:
                    self.accepted += 1
                else:
                    self.failed += 1

    def wait_for(self, accepted: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.accepted < accepted:
            assert time.monotonic() < deadline, f"{accepted} accepted requests not within {timeout} s"
            time.sleep(0.05)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)


def test_docker_stop_under_load_keeps_every_answered_request(
    image: str, tmp_root: Path, provider: Mock
) -> None:
    gw = Gateway(image, tmp_root, provider)
    try:
        org, key = gw.new_org()
        with Load(gw.url, key) as load:
            load.wait_for(60)
            # SIGTERM through tini: granian finishes the requests in flight,
            # each worker drains its records into SQLite, exit 0.
            code = gw.container.stop(grace=40)
        assert code == 0, gw.container.logs()
        rows = gw.records(org)
        # Every 2xx a client got has its record; a failure is a request the
        # stopping server never answered (refused or closed), so never stored.
        assert load.accepted <= len(rows) <= load.accepted + load.failed, (len(rows), load.accepted)
        assert load.accepted >= 60
    finally:
        gw.container.remove()


@pytest.mark.parametrize(
    ("setting", "value", "named"),
    [("LECTR_PORT", "not-a-port", "port"), ("LECTR_WORKERS", "0", "workers")],
)
def test_a_bad_setting_fails_at_start_with_one_clear_line(
    image: str, setting: str, value: str, named: str
) -> None:
    name = f"lectr-bad-{uuid.uuid4().hex[:6]}"
    r = docker(
        "run", "--name", name, "--network", "host", "-e", f"{setting}={value}", image, check=False, timeout=60
    )
    try:
        assert r.returncode != 0
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, r.stderr
        assert lines[0].startswith("lectr: ") and named in lines[0], lines[0]
        assert "Traceback" not in r.stdout + r.stderr
    finally:
        docker("rm", "-f", name, check=False)
