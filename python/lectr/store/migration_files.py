"""The versioned migration files shipped for each backend
(`migrations/{sqlite,postgres}/NNNN_name.sql`)."""

from __future__ import annotations

import re
from importlib import resources


def migrations(backend: str) -> list[tuple[int, str]]:
    """(version, SQL text) of every migration of `backend`, oldest first."""
    folder = resources.files("lectr").joinpath(f"store/migrations/{backend}")
    out = []
    for entry in folder.iterdir():
        m = re.match(r"(\d+)_.*\.sql$", entry.name)
        if m:
            out.append((int(m.group(1)), entry.read_text()))
    return sorted(out)
