"""The Lectr console at /console: server-rendered pages over the management layer."""

from lectr.console.frame import ConsoleContext
from lectr.console.router import Console

__all__ = ["Console", "ConsoleContext"]
