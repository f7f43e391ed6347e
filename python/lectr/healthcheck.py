"""Probe a local gateway's `/healthz` or `/readyz`: the container HEALTHCHECK and dev stack readiness."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from lectr.config import ConfigError, Settings, load

# A wildcard listen address is not a destination: probe it through loopback.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104


def local_url(settings: Settings, path: str = "/healthz") -> str:
    """The URL of `path` on the gateway these settings describe, as seen from its own machine."""
    host = _WILDCARDS.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}{path}"


def probe(url: str, timeout: float = 2.0) -> bool:
    """True when `url` answers 200 within `timeout` seconds."""
    try:
        # Only ever a loopback URL built from the gateway's own settings.
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310
            return int(r.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main() -> None:
    """`python -m lectr.healthcheck [PATH]`: exit 0 if the local gateway answers PATH (default /healthz)."""
    path = sys.argv[1] if len(sys.argv) > 1 else "/healthz"
    try:
        url = local_url(load(), path)
    except ConfigError as e:
        sys.exit(f"lectr healthcheck: {e}")
    if not probe(url):
        sys.exit(f"lectr healthcheck: {url} did not answer 200")


if __name__ == "__main__":
    main()
