"""Lectr: a self-hosted AI gateway and control plane."""

from lectr._core import __version__

__all__ = ["__version__"]
