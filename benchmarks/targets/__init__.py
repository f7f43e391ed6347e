"""One module per target, each exporting the same names (msgspec's benchmark
style): `NAME`, `DESCRIPTION` and `start(env) -> Running`; a `Running` target
has `url_fixed` / `url_stream` (where the runner sends non-streamed and
streamed chat completions), `pid` (the root of the process tree whose CPU and
memory are measured), `headers` (what its clients must add) and `stop()`.

Every target talks to the same two upstreams (`benchmarks.upstreams`): the
fixed nginx body for non-streamed requests, the stamped aiohttp stream for
streamed ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.upstreams import Upstream

# The same request bodies for every target. Lectr's one matching routing rule
# rewrites gpt-4o to gpt-4o-mini; the fixed upstream answers any model.
MODEL_FIXED = "gpt-4o"
MODEL_STREAM = "llama-3.1-8b-instant"
FEATURE = "bench"
FEATURE_STREAM = "bench-stream"
PROVIDER_KEY = "sk-bench-provider-key"


@dataclass
class Env:
    """What every target starts from."""

    tmp: Path
    fixed: Upstream
    stream: Upstream
    litellm: str | None = None  # the litellm command, when that target runs


@dataclass
class Running:
    name: str
    url_fixed: str
    url_stream: str
    pid: int
    command: str
    stop: Callable[[], None]
    headers: dict[str, str] = field(default_factory=dict)
    # Lectr only: how many streamed records were captured with provider usage.
    usage: Callable[[str, int], dict[str, Any]] | None = None
    # Agent-protocol streams ("responses", "messages"): URL and extra headers,
    # for the targets that speak them (direct and Lectr).
    protocol_streams: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    notes: str = ""
