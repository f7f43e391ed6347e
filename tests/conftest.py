"""Fixtures: one mock provider and one gateway shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.harness import Gateway, Mock
from devtools.services import Postgres, RedisServer

# Fixtures that start a server, and the marker their tests get, so that
# `-m "not postgres"` (etc.) leaves out every test that needs one.
SERVER_FIXTURES = {"postgres": "postgres", "redis_server": "redis", "own_redis": "redis"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        # Store and insights tests run on both backends through fixtures
        # parametrized "sqlite" / "postgres".
        if callspec is not None and any(v == "postgres" for v in callspec.params.values()):
            names.add("postgres")
        for fixture, marker in SERVER_FIXTURES.items():
            if fixture in names:
                item.add_marker(marker)


@pytest.fixture(scope="session")
def tmp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lectr")


@pytest.fixture(scope="session")
def mock(tmp_root: Path) -> Iterator[Mock]:
    with Mock(tmp_root) as m:
        yield m


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
