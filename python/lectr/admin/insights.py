"""Admin API handlers for insights: overview, anomalies, recommendations and applying one."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from lectr.admin.routes import Principal, route
from lectr.errors import InvalidRequest
from lectr.insights import Insights
from lectr.types import OrgEntry


class ApplyIn(msgspec.Struct, forbid_unknown_fields=True):
    """Apply a recommendation, optionally to a share of the matching traffic."""

    split_percent: int | None = None


# Unix seconds a time parameter may take: up to the last second of year 9999
# (what datetime can represent); nan, inf and ±1e308 used to reach the
# minute alignment and the store and fail there as a 500.
MAX_TIME = 253402300799.0


def parse_time(value: str, name: str) -> float:
    """A time query parameter, Unix seconds or ISO 8601, as Unix seconds."""
    try:
        t = float(value)
    except ValueError:
        try:
            t = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise InvalidRequest(f"{name} must be Unix seconds or ISO 8601, got {value[:40]!r}") from None
    if not 0 <= t <= MAX_TIME:  # also false for nan
        raise InvalidRequest(f"{name} must be a time between 1970 and 9999, got {value[:40]!r}")
    return t


def query_time(q: dict[str, str], name: str) -> float | None:
    value = q.get(name)
    return None if value is None else parse_time(value, name)


def _days(q: dict[str, str]) -> float:
    try:
        return float(q.get("days", "7"))
    except ValueError:
        raise InvalidRequest("days must be a number") from None


class InsightsRoutes:
    """Mixed into AdminAPI, which supplies the attributes below (the app sets
    `insights`)."""

    insights: Insights

    async def _org(self, ref: str) -> OrgEntry:
        raise NotImplementedError

    async def _body(self, proto: Any, typ: type[Any]) -> Any:
        raise NotImplementedError

    def _json(self, proto: Any, status: int, value: Any) -> None:
        raise NotImplementedError

    async def _changed(self) -> None:
        raise NotImplementedError

    @route("GET", "/admin/orgs/{org}/overview", admin_only=False)
    async def overview(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        q = dict(parse_qsl(scope.query_string))
        self._json(
            proto, 200, await self.insights.overview(org.id, query_time(q, "since"), query_time(q, "until"))
        )

    @route("GET", "/admin/orgs/{org}/anomalies", admin_only=False)
    async def anomalies(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        q = dict(parse_qsl(scope.query_string))
        history = q.get("all", "0").lower() in ("1", "true", "yes")
        self._json(proto, 200, await self.insights.anomalies(org.id, history))

    @route("POST", "/admin/orgs/{org}/anomalies/{anomaly}/dismiss")
    async def dismiss_anomaly(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        self._json(proto, 200, await self.insights.dismiss(org.id, p["anomaly"]))

    @route("GET", "/admin/orgs/{org}/recommendations", admin_only=False)
    async def recommendations(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        q = dict(parse_qsl(scope.query_string))
        self._json(proto, 200, {"data": await self.insights.recommendations(org.id, _days(q))})

    @route("POST", "/admin/orgs/{org}/recommendations/{rec}/apply")
    async def apply_recommendation(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        body: ApplyIn = await self._body(proto, ApplyIn)
        q = dict(parse_qsl(scope.query_string))
        rule = await self.insights.apply(org.id, p["rec"], body.split_percent, _days(q))
        await self._changed()
        self._json(proto, 201, rule)
