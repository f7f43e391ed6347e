"""The admin API's route table: the `@route` decorator handlers register
with, the caller's identity, and the JSON response helpers."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec

JSON = [("content-type", "application/json")]
encode = msgspec.json.Encoder().encode


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: the admin, or an org reading its own data."""

    admin: bool
    org_id: str | None = None


H = TypeVar("H", bound=Callable[..., Awaitable[None]])
# (method, path pattern, handler name, admin only); also the OpenAPI paths.
ROUTES: list[tuple[str, str, re.Pattern[str], str, bool]] = []


def route(method: str, pattern: str, admin_only: bool = True) -> Callable[[H], H]:
    rx = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")

    def deco(fn: H) -> H:
        ROUTES.append((method, pattern, rx, fn.__name__, admin_only))
        return fn

    return deco
