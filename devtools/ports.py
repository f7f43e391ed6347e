"""Free TCP ports on 127.0.0.1 for throwaway servers, below the kernel's ephemeral range."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

# Ports handed out by the kernel for outgoing connections (and for bind to
# port 0) come from this range; a server started on one of them a moment
# later can find it taken by a connection made in between (a container's
# client of PostgreSQL, say). Throwaway servers get ports below it.
_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _below_ephemeral() -> tuple[int, int]:
    try:
        low = int(_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return (10000, low - 1) if low > 11000 else (1024, low - 1)


def free_port() -> int:
    """A TCP port on 127.0.0.1, outside the ephemeral range, that was free a moment ago."""
    first, last = _below_ephemeral()
    for _ in range(200):
        port = first + secrets.randbelow(last - first + 1)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # a crowded range: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
