"""Fixtures: one mock provider and one gateway shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.harness import Gateway, Mock
from devtools.services import Postgres, RedisServer


@pytest.fixture(scope="session")
def tmp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lectr")


@pytest.fixture(scope="session")
def mock(tmp_root: Path) -> Iterator[Mock]:
    m = Mock(tmp_root)
    yield m
    m.proc.terminate()
    m.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def gateway(tmp_root: Path, mock: Mock) -> Iterator[Gateway]:
    gw = Gateway(tmp_root, mock)
    gw.key = gw.create_org("acme")  # type: ignore[attr-defined]
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture
def key(gateway: Gateway) -> str:
    return gateway.key  # type: ignore[attr-defined,no-any-return]


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    pg = Postgres()
    yield pg
    pg.destroy()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    r = RedisServer()
    yield r
    r.destroy()
