"""granian alone, for the floor every Lectr figure sits on: an RSGI app that
answers the fixed upstream's bytes itself (`static`), and a minimal
pass-through proxy on Lectr's own upstream client (`proxy`: no auth, no
routing, no record, no metrics). Both run under the same granian settings
as `lectr serve`.

Run: `python -m benchmarks.floor static|proxy PORT FIXED_URL STREAM_URL`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from benchmarks.upstreams import FIXED_BODY
from lectr.config import Settings
from lectr.gateway.upstream import Upstream

JSON = [("content-type", "application/json")]
BODY = FIXED_BODY.encode()


class Static:
    """Answers every request with the fixed body, without reading upstream."""

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.path != "/healthz":
            await proto()
        proto.response_bytes(200, JSON, BODY)


class PassThrough:
    """Forwards to the fixed upstream (`/stream/...` to the streaming one)
    through `Upstream.send`, as Lectr does, and relays the body."""

    def __init__(self, fixed: str, stream: str) -> None:
        self._fixed, self._stream = fixed, stream
        self._up = Upstream()

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.path == "/healthz":
            proto.response_bytes(200, JSON, b"{}")
            return
        body = await proto()
        if scope.path.startswith("/stream/"):
            url = self._stream + scope.path[len("/stream") :]
        else:
            url = self._fixed + scope.path
        resp = await self._up.send(scope.method, url, list(scope.headers.items()), body)
        if resp.body is not None and not resp.is_sse:
            proto.response_bytes(resp.status, resp.headers, resp.body)
            resp.close()
            return
        transport = proto.response_stream(resp.status, resp.headers)
        try:
            if resp.body:
                await transport.send_bytes(resp.body)
            while (chunk := await resp.next_chunk()) is not None:
                await transport.send_bytes(chunk)
        finally:
            resp.close()


def static() -> Static:
    return Static()


def proxy() -> PassThrough:
    return PassThrough(os.environ["LECTR_FLOOR_FIXED"], os.environ["LECTR_FLOOR_STREAM"])


def main() -> None:
    from granian import Granian

    from lectr.cli.serve import granian_options

    mode, port, fixed, stream = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if mode not in ("static", "proxy"):
        raise SystemExit(f"mode is static or proxy, not {mode!r}")
    # The workers import the factory and read the upstreams from here.
    os.environ["LECTR_FLOOR_FIXED"], os.environ["LECTR_FLOOR_STREAM"] = fixed, stream
    settings = Settings(host="127.0.0.1", port=port, workers=1, log_level="warning")
    Granian(f"benchmarks.floor:{mode}", factory=True, **granian_options(settings)).serve()


if __name__ == "__main__":
    main()
