"""Fixtures of the container tests: one Docker engine and one gateway image per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker_engine import IMAGE, Engine, build_image


@pytest.fixture(scope="session")
def engine(tmp_root: Path) -> Iterator[Engine]:
    e = Engine(tmp_root)
    yield e
    e.stop()


@pytest.fixture(scope="session")
def image(engine: Engine) -> str:
    seconds = build_image(IMAGE)
    print(f"\nimage {IMAGE} built in {seconds:.1f} s")
    return IMAGE
