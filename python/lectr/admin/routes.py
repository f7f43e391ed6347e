"""The admin API's plumbing: the `@route` table handlers register with, the
caller's identity, one request as handlers see it, and the context every
area of the API is built with."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, TypeVar
from urllib.parse import parse_qsl

import msgspec

from lectr.control import ControlPlane
from lectr.control.manage import Manager
from lectr.control.policy.engine import Policy
from lectr.errors import InvalidRequest
from lectr.gateway.breaker import Health
from lectr.insights.service import Insights
from lectr.observe.alerts import WebhookSender
from lectr.store.base import Store

JSON = [("content-type", "application/json")]
encode = msgspec.json.Encoder().encode


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: the admin, or an org reading its own data."""

    admin: bool
    org_id: str | None = None


class Request:
    """One admin call: the RSGI scope and protocol, the caller, the path's
    parameters; helpers to read the query and body and to answer JSON."""

    __slots__ = ("params", "proto", "scope", "who")

    def __init__(self, scope: Any, proto: Any, who: Principal, params: dict[str, str]) -> None:
        self.scope = scope
        self.proto = proto
        self.who = who
        self.params = params

    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.scope.query_string))

    async def body(self, typ: type[Any]) -> Any:
        raw = await self.proto()
        try:
            return msgspec.json.decode(raw or b"{}", type=typ)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            raise InvalidRequest(f"invalid request body: {e}") from None

    def json(self, status: int, value: Any) -> None:
        self.proto.response_bytes(status, JSON, encode(value))


class Context(msgspec.Struct, frozen=True):
    """What the API's areas work with; `manager` makes every change."""

    store: Store
    control: ControlPlane
    health: Health
    policy: Policy
    webhooks: WebhookSender
    insights: Insights
    manager: Manager


Handler = Callable[[Any, Request], Awaitable[None]]
H = TypeVar("H", bound=Handler)


class Route(NamedTuple):
    method: str
    pattern: str  # also the OpenAPI path
    rx: re.Pattern[str]
    name: str  # handler name = OpenAPI operationId
    admin_only: bool
    fn: Handler


ROUTES: list[Route] = []


def route(method: str, pattern: str, admin_only: bool = True) -> Callable[[H], H]:
    """Register a handler (a method of an area class) for METHOD pattern."""
    rx = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")

    def deco(fn: H) -> H:
        ROUTES.append(Route(method, pattern, rx, fn.__name__, admin_only, fn))
        return fn

    return deco
