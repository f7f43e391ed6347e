"""The admin JSON API under /admin (orgs, keys, request log and its export)."""

from lectr.admin.api import AdminAPI

__all__ = ["AdminAPI"]
