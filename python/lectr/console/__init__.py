"""The Lectr console at /console: server-rendered pages over the management layer."""

from lectr.console.pages import Console, ConsoleContext

__all__ = ["Console", "ConsoleContext"]
