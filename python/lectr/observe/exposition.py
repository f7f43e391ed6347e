"""Metrics across worker processes: the shared value directory and the
scrape view over every worker's files."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(path: Path) -> Path:
    """Create `path` and remove value files a previous run left there, so a
    new instance starts from zero (called by `lectr serve` before workers)."""
    path.mkdir(parents=True, exist_ok=True)
    for f in path.glob("*.db"):
        f.unlink()
    return path


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


class Exposition:
    """All workers' values from the shared directory, plus HELP/TYPE of the
    families no worker has written yet, as a single process would show them."""

    def __init__(self, path: str, declared: list[MetricWrapperBase]) -> None:
        self._collector = MultiProcessCollector(None, path)  # type: ignore[no-untyped-call]
        self._declared = declared

    def collect(self) -> Iterable[Metric]:
        families = list(self._collector.collect())  # type: ignore[no-untyped-call]
        seen = {f.name for f in families}
        for m in self._declared:
            families.extend(d for d in m.describe() if d.name not in seen)
        return sorted(families, key=lambda f: f.name)
