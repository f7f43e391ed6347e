"""The anomaly detector's rows for both backends: per-window samples, the
baseline sums over them, and the lease that makes one instance the detector."""

from __future__ import annotations

from typing import Any

from lectr.store.primitives import Primitives
from lectr.types import WindowStats


class DetectorState(Primitives):
    """Detector samples and lease on the backend's primitives."""

    async def save_samples(self, rows: list[tuple[Any, ...]]) -> None:
        """Upsert (org, feature, window, requests, errors, cost, drifted, p95)."""
        if rows:
            await self._exec_many(
                "INSERT INTO insight_windows (org_id, feature, window_start, requests, errors, cost_usd, "
                "drifted, p95_ms) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (org_id, feature, window_start) DO UPDATE SET requests = excluded.requests, "
                "errors = excluded.errors, cost_usd = excluded.cost_usd, drifted = excluded.drifted, "
                "p95_ms = excluded.p95_ms",
                rows,
            )

    async def samples_at(self, window_start: int) -> list[Any]:
        return await self._fetch(
            "SELECT org_id, feature, requests, errors, cost_usd, drifted, p95_ms FROM insight_windows "
            "WHERE window_start = %s",
            (window_start,),
        )

    async def first_seen(self, since: int, org_id: str | None = None) -> dict[tuple[str, str], int]:
        """The earliest window with traffic at or after `since`, per scope."""
        where = "window_start >= %s"
        args: list[Any] = [since]
        if org_id is not None:
            where += " AND org_id = %s"
            args.append(org_id)
        rows = await self._fetch(
            f"SELECT org_id, feature, min(window_start) FROM insight_windows WHERE {where} "
            "GROUP BY org_id, feature",
            tuple(args),
        )
        return {(r[0], r[1]): int(r[2]) for r in rows}

    async def baseline_sums(self, since: int, until: int, min_requests: int) -> list[WindowStats]:
        """Per scope, sums over samples in [since, until) that no dismissed
        anomaly of the same scope covers."""
        m = int(min_requests)
        ok = f"CASE WHEN requests >= {m}"
        rows = await self._fetch(
            "SELECT s.org_id, s.feature, count(*), sum(requests), sum(requests * requests), sum(cost_usd), "
            f"sum(cost_usd * cost_usd), sum({ok} THEN 1 ELSE 0 END), "
            f"sum({ok} THEN errors * 1.0 / requests ELSE 0 END), "
            f"sum({ok} THEN (errors * 1.0 / requests) * (errors * 1.0 / requests) ELSE 0 END), "
            f"sum({ok} THEN p95_ms ELSE 0 END), sum({ok} THEN p95_ms * p95_ms ELSE 0 END), "
            f"sum({ok} THEN drifted * 1.0 / requests ELSE 0 END), "
            f"sum({ok} THEN (drifted * 1.0 / requests) * (drifted * 1.0 / requests) ELSE 0 END) "
            "FROM insight_windows s WHERE s.window_start >= %s AND s.window_start < %s AND NOT EXISTS ("
            "SELECT 1 FROM anomalies a WHERE a.org_id = s.org_id AND a.feature = s.feature "
            "AND a.state = 'dismissed' AND s.window_start >= a.window_start AND s.window_start < a.window_end"
            ") GROUP BY s.org_id, s.feature",
            (since, until),
        )
        out = []
        for r in rows:
            f = [float(x or 0) for x in r[3:]]
            out.append(
                WindowStats(
                    org_id=r[0],
                    feature=r[1],
                    n=int(r[2]),
                    req=f[0],
                    req_sq=f[1],
                    cost=f[2],
                    cost_sq=f[3],
                    n_ratio=int(f[4]),
                    err=f[5],
                    err_sq=f[6],
                    p95=f[7],
                    p95_sq=f[8],
                    drift=f[9],
                    drift_sq=f[10],
                )
            )
        return out

    async def dismissed_ranges(self, since: int) -> list[tuple[str, str, int, int]]:
        """(org, feature, start, end) of dismissed anomalies ending after `since`."""
        rows = await self._fetch(
            "SELECT org_id, feature, window_start, window_end FROM anomalies "
            "WHERE state = 'dismissed' AND window_end > %s",
            (since,),
        )
        return [(r[0], r[1], int(r[2]), int(r[3])) for r in rows]

    # --- lease ----------------------------------------------------------------

    async def detector_lease(self, holder: str, now: float, ttl: float) -> tuple[bool, int | None]:
        """Take or renew the detector lease; (leader?, last evaluated window)."""
        (taken,) = await self._exec(
            [
                (
                    "UPDATE insights_state SET holder = %s, expires_at = %s "
                    "WHERE name = 'detector' AND (holder = %s OR expires_at < %s)",
                    (holder, now + ttl, holder, now),
                )
            ]
        )
        rows = await self._fetch("SELECT last_window FROM insights_state WHERE name = 'detector'", ())
        last = rows[0][0] if rows else None
        return taken == 1, None if last is None else int(last)

    async def set_last_window(self, holder: str, window: int) -> None:
        await self._exec(
            [
                (
                    "UPDATE insights_state SET last_window = %s WHERE name = 'detector' AND holder = %s",
                    (window, holder),
                )
            ]
        )
