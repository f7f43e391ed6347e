"""The `lectr` command: serve the gateway and manage the control plane (one
module per command group, all through `control.manage.Manager`)."""

from lectr.cli.main import main

__all__ = ["main"]
