"""What the report's parts share: reading a figure out of the results and
writing one, and the names of the targets the report is about."""

from __future__ import annotations

import math
from typing import Any

MAIN = "lectr"
FLOOR = "granian-proxy"
PLOTS = ("latency.png", "throughput.png", "streaming.png", "memory.png")


def get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:,.{digits}f}"
