"""`lectr serve`: run the gateway under granian."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import msgspec

from lectr.config import Settings


def version() -> str:
    from lectr import __version__

    return __version__


def granian_options(settings: Settings) -> dict[str, Any]:
    """How granian serves the gateway (and the benchmarks' granian floor)."""
    from granian.constants import Interfaces, Loops
    from granian.http import HTTP1Settings

    return {
        "address": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "interface": Interfaces.RSGI,
        "loop": Loops.uvloop,
        "log_level": settings.log_level,
        "websockets": False,
        # The defaults (backpressure = backlog / workers = 1024, a 30 s
        # header timeout) let ~1,100 idle sockets or a few slowloris
        # clients stop the gateway answering anyone (issue 19).
        "backlog": settings.listen_backlog,
        "backpressure": settings.max_connections,
        "http1_settings": HTTP1Settings(header_read_timeout=int(settings.header_timeout * 1000)),
    }


def serve(settings: Settings) -> None:
    """Serve until stopped; each worker imports the app with these settings."""
    # Workers record metrics in files under one directory, which the worker
    # answering /metrics reads whole (prometheus-client multiprocess mode), so
    # counters add up across workers. Workers are forked from this process,
    # so the variable must be set before prometheus_client is first imported.
    own_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if own_metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="lectr-metrics-")
    from granian import Granian

    from lectr.config import SETTINGS_ENV
    from lectr.observe.exposition import MULTIPROC_ENV, prepare_multiprocess_dir

    metrics_dir = prepare_multiprocess_dir(Path(os.environ[MULTIPROC_ENV]))

    # Workers are separate processes that import the app; they get the
    # validated settings whole, so flags and file reach them too.
    os.environ[SETTINGS_ENV] = msgspec.json.encode(settings).decode()
    print(
        f"lectr {version()} listening on http://{settings.host}:{settings.port} "
        f"({settings.workers} worker{'s' if settings.workers > 1 else ''}, "
        f"store: {'postgresql' if settings.database_url else settings.sqlite_path})",
        flush=True,
    )
    try:
        Granian("lectr.gateway.app:create_app", factory=True, **granian_options(settings)).serve()
    finally:
        if own_metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
