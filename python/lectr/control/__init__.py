"""The control plane: live snapshots the request path reads (`snapshot`), the
one place every change is made (`manage`), and the checks on its input
(`validation`)."""

from lectr.control.snapshot import EMPTY, ControlPlane, Snapshot, compile_rules

__all__ = ["EMPTY", "ControlPlane", "Snapshot", "compile_rules"]
