"""Nothing lost: the gateway on a real PostgreSQL that is stopped under load,
spill-file replay, and SIGTERM mid-load."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from devtools.harness import Gateway, Mock, running
from devtools.services import Postgres
from tests.integration.test_proxy import CHAT, headers


@pytest.fixture
def pg_url(postgres: Postgres) -> str:
    return postgres.new_database("g")


def stored(url: str) -> int:
    with psycopg.connect(url) as c:
        row = c.execute("SELECT count(*) FROM requests").fetchone()
    return int(row[0]) if row else 0


def wait_stored(url: str, expected: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    n = -1
    while time.monotonic() < deadline:
        try:
            n = stored(url)
        except psycopg.OperationalError:
            n = -1
        if n >= expected:
            return n
        time.sleep(0.2)
    return n


class Load:
    """Steady traffic from a few threads; counts responses the client got."""

    def __init__(self, gw: Gateway, key: str, threads: int = 4) -> None:
        self.served = 0
        self.failed = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(gw, key), daemon=True) for _ in range(threads)
        ]

    def _run(self, gw: Gateway, key: str) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                try:
                    ok = client.post(
                        gw.url + "/v1/chat/completions", json=CHAT, headers=headers(key)
                    ).status_code
                except httpx.HTTPError:
                    ok = 0
                with self._lock:
                    if ok == 200:
                        self.served += 1
                    else:
                        self.failed += 1
                time.sleep(0.005)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)


@pytest.fixture
def pg_gateway(tmp_root: Path, mock: Mock, pg_url: str) -> Iterator[tuple[Gateway, str]]:
    with running(tmp_root, mock, LECTR_DATABASE_URL=pg_url, LECTR_WRITER_SPILL_AFTER_FAILURES="1") as gw:
        key = gw.create_org("durable")
        gw.start()
        yield gw, key


def test_postgres_down_for_10s_loses_nothing(
    pg_gateway: tuple[Gateway, str], postgres: Postgres, pg_url: str
) -> None:
    gw, key = pg_gateway
    with Load(gw, key) as load:
        time.sleep(2)
        postgres.stop()
        postgres.wait_down()
        time.sleep(10)
        postgres.start()
        time.sleep(2)
    assert load.served > 100
    assert load.failed == 0  # serving never depended on the database
    ready = httpx.get(gw.url + "/readyz").json()
    assert wait_stored(pg_url, load.served) == load.served
    writer = httpx.get(gw.url + "/readyz").json()["writer"]
    assert writer["spilled"] > 0, ready  # the outage was long enough to spill
    assert writer["dropped"] == 0


def test_sigterm_mid_load_loses_nothing(pg_gateway: tuple[Gateway, str], pg_url: str) -> None:
    gw, key = pg_gateway
    with Load(gw, key) as load:
        time.sleep(3)
        assert gw.proc is not None
        gw.proc.terminate()
        assert gw.proc.wait(timeout=60) == 0
    assert load.served > 50
    assert wait_stored(pg_url, load.served, timeout=10) == load.served


@pytest.mark.parametrize("spill_after", ["default", "1"])
def test_outage_then_sigterm_stores_every_answered_request(
    tmp_root: Path, mock: Mock, postgres: Postgres, spill_after: str
) -> None:
    """Issue 20, defect 1, the exact sequence: load, `pg_ctl stop -m fast`
    for 9 s, start, stop the load, SIGTERM. The records spilled during the
    outage must be replayed by the drain, not left for a next start that a
    scale-down never brings."""
    url = postgres.new_database("outage")
    env = {"LECTR_DATABASE_URL": url}
    if spill_after != "default":
        env["LECTR_WRITER_SPILL_AFTER_FAILURES"] = spill_after
    with running(tmp_root, mock, **env) as gw:
        key = gw.create_org("outage")
        gw.start()
        with Load(gw, key) as load:
            time.sleep(2)
            postgres.stop()
            postgres.wait_down()
            time.sleep(9)
            postgres.start()
        writer = httpx.get(gw.url + "/readyz", timeout=10).json()["writer"]
        assert gw.proc is not None
        gw.proc.terminate()
        assert gw.proc.wait(timeout=60) == 0
        log = gw.log.read_text()
    assert load.failed == 0
    assert load.served > 100
    assert writer["spilled"] > 0, writer  # the outage was long enough to spill
    assert stored(url) == load.served, log[-3000:]
    assert "records remain spilled" in log  # the exit report says how many are left, and where
