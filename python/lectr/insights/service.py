"""The insights service: an org's overview, anomaly feed and model recommendations."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import msgspec

from lectr.config import Settings
from lectr.errors import Conflict, InvalidRequest, NotFound
from lectr.gateway.pricing import PriceTable
from lectr.insights import overview as _overview
from lectr.insights.anomalies import BASELINE, MIN_HISTORY, WINDOW
from lectr.insights.recommendations import DowngradeMap, Recommendation, recommend, rule_for
from lectr.store.base import Store
from lectr.types import Anomaly, Rule

__all__ = ["AnomalyFeed", "Insights", "Overview", "Recommendation"]
Overview = _overview.Overview


class FeatureBaseline(msgspec.Struct):
    feature: str
    hours_left: float


class AnomalyFeed(msgspec.Struct):
    """`status` is `building_baseline` until the org has 48 h of history
    (`hours_left` says how long); features still learning are listed."""

    status: str
    hours_left: float
    building_features: list[FeatureBaseline]
    data: list[Anomaly]


def _hours_left(first: int | None, now: float) -> float:
    if first is None:
        return MIN_HISTORY / 3600
    return max(0.0, math.ceil((MIN_HISTORY - (now - first)) / 360) / 10)


class Insights:
    """An org's overview, anomalies and recommendations."""

    def __init__(
        self,
        store: Store,
        prices: PriceTable,
        downgrades: DowngradeMap,
        untagged_threshold: float = 0.2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._prices = prices
        self._downgrades = downgrades
        self._untagged = untagged_threshold
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, store: Store, prices: PriceTable | None = None) -> Insights:
        return cls(
            store,
            prices or PriceTable.load(settings.prices_file),
            DowngradeMap.load(settings.downgrades_file),
            settings.untagged_prompt_threshold,
        )

    async def overview(self, org_id: str, since: float | None = None, until: float | None = None) -> Overview:
        """Traffic over [since, until) (default: the last 24 hours)."""
        now = self._clock()
        until = now if until is None else until
        since = until - 86400 if since is None else since
        if since >= until:
            raise InvalidRequest("since must be before until")
        lo, hi = _overview.align(since, until, now)
        rows = await self._store.rollup_groups(org_id, lo, hi)
        return _overview.build(org_id, lo, hi, rows, self._untagged)

    async def anomalies(self, org_id: str, history: bool = False) -> AnomalyFeed:
        """The feed: anomalies not dismissed, ongoing or raised in the last 7
        days; with `history`, every anomaly, dismissed ones included."""
        now = self._clock()
        first = await self._store.first_seen(int(now) - BASELINE - WINDOW, org_id)
        left = _hours_left(first.get((org_id, "")), now)
        building = [
            FeatureBaseline(f, _hours_left(t, now))
            for (_, f), t in sorted(first.items())
            if f and _hours_left(t, now) > 0
        ]
        found = await self._store.list_anomalies(org_id, dismissed=history)
        if not history:
            found = [a for a in found if a.ongoing or a.detected_at >= now - BASELINE]
        return AnomalyFeed(
            status="building_baseline" if left > 0 else "active",
            hours_left=left,
            building_features=building,
            data=found,
        )

    async def dismiss(self, org_id: str, anomaly_id: str) -> Anomaly:
        a = await self._store.dismiss_anomaly(org_id, anomaly_id, self._clock())
        if a is None:
            raise NotFound(f"no anomaly {anomaly_id!r} in this org")
        return a

    async def recommendations(self, org_id: str, days: float = 7) -> list[Recommendation]:
        """Cheaper models for the org's features, from the last `days` of traffic."""
        if not 0 < days <= 90:
            raise InvalidRequest("days must be between 0 and 90")
        now = int(self._clock())
        since = now - int(days * 86400)
        # Hour rows: the hour `since` falls in, up to the current one.
        rows = await self._store.traffic(org_id, since // 3600 * 3600, now // 3600 * 3600 + 3600)
        rules = await self._store.list_rules(org_id)
        return recommend(org_id, rows, since, now, self._prices, self._downgrades, rules)

    async def rule_for(
        self, org_id: str, rec_id: str, split_percent: int | None = None, days: float = 7
    ) -> Rule:
        """The routing rule (not yet stored) that applies a recommendation
        after the org's other rules, optionally for only `split_percent` % of
        the matching traffic."""
        split = 100 if split_percent is None else split_percent
        if not 1 <= split <= 100:
            raise InvalidRequest("split_percent must be between 1 and 100")
        rec = next((r for r in await self.recommendations(org_id, days) if r.id == rec_id), None)
        if rec is None:
            raise NotFound(f"no recommendation {rec_id!r} for this org")
        if rec.applied_rule_id is not None:
            raise Conflict(f"recommendation {rec_id} is already applied as rule {rec.applied_rule_id}")
        rules = await self._store.list_rules(org_id)
        priority = max((r.priority for r in rules), default=0) + 10
        return rule_for(rec, org_id, priority, split)
