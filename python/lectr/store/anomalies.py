"""Anomalies for both backends: the feed's rows (opened, continued, ended,
dismissed) and the alert outbox that delivers each once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lectr.store.primitives import Primitives
from lectr.types import Anomaly

ANOMALY_COLS = (
    "id, org_id, feature, type, metric, baseline, sigma, observed, deviation, severity, "
    "window_start, window_end, detected_at, state, ongoing, resolved_at, dismissed_at, "
    "alert_state, alert_attempts, alerted_at"
)


def anomaly_of(r: Sequence[Any]) -> Anomaly:
    return Anomaly(
        id=r[0],
        org_id=r[1],
        feature=r[2] or None,
        type=r[3],
        metric=r[4],
        baseline=r[5],
        sigma=r[6],
        observed=r[7],
        deviation=r[8],
        severity=r[9],
        window_start=int(r[10]),
        window_end=int(r[11]),
        detected_at=r[12],
        state=r[13],
        ongoing=bool(r[14]),
        resolved_at=r[15],
        dismissed_at=r[16],
        alert_state=r[17],
        alert_attempts=r[18],
        alerted_at=r[19],
    )


class AnomalyRows(Primitives):
    """Anomaly rows and their alert state on the backend's `_fetch` and `_exec`."""

    async def list_anomalies(
        self, org_id: str | None = None, dismissed: bool = True, ongoing_only: bool = False
    ) -> list[Anomaly]:
        where, args = ["1 = 1"], []
        if org_id is not None:
            where.append("org_id = %s")
            args.append(org_id)
        if not dismissed:
            where.append("state <> 'dismissed'")
        if ongoing_only:
            where.append("ongoing")
        rows = await self._fetch(
            f"SELECT {ANOMALY_COLS} FROM anomalies WHERE {' AND '.join(where)} ORDER BY detected_at DESC, id",
            tuple(args),
        )
        return [anomaly_of(r) for r in rows]

    async def open_anomaly(self, a: Anomaly, next_alert: float | None) -> bool:
        """Insert a new anomaly; False if this one (same id) or another ongoing
        one for its org, feature and type already exists."""
        values = (
            a.id,
            a.org_id,
            a.feature or "",
            a.type,
            a.metric,
            a.baseline,
            a.sigma,
            a.observed,
            a.deviation,
            a.severity,
            a.window_start,
            a.window_end,
            a.detected_at,
            a.state,
            True,
            None,
            None,
            a.alert_state,
            0,
            None,
        )
        (n,) = await self._exec(
            [
                (
                    f"INSERT INTO anomalies ({ANOMALY_COLS}, alert_next) "
                    f"VALUES ({', '.join(['%s'] * (len(values) + 1))}) ON CONFLICT DO NOTHING",
                    (*values, next_alert),
                )
            ]
        )
        return n == 1

    async def continue_anomaly(self, a: Anomaly) -> None:
        """The deviation goes on: latest figures, window extended."""
        await self._exec(
            [
                (
                    "UPDATE anomalies SET baseline = %s, sigma = %s, observed = %s, deviation = %s, "
                    "severity = %s, window_end = %s WHERE id = %s AND ongoing AND window_end <= %s",
                    (
                        a.baseline,
                        a.sigma,
                        a.observed,
                        a.deviation,
                        a.severity,
                        a.window_end,
                        a.id,
                        a.window_end,
                    ),
                )
            ]
        )

    async def end_anomaly(self, anomaly_id: str, now: float) -> None:
        """The metric is back within its baseline."""
        await self._exec(
            [
                (
                    "UPDATE anomalies SET ongoing = %s, resolved_at = %s, "
                    "state = CASE WHEN state = 'active' THEN 'resolved' ELSE state END "
                    "WHERE id = %s AND ongoing",
                    (False, now, anomaly_id),
                )
            ]
        )

    async def dismiss_anomaly(self, org_id: str, anomaly_id: str, now: float) -> Anomaly | None:
        """Dismiss: off the feed, no further alert, window out of baselines.
        None if the org has no such anomaly."""
        await self._exec(
            [
                (
                    "UPDATE anomalies SET state = 'dismissed', dismissed_at = %s, "
                    "alert_state = CASE WHEN alert_state = 'pending' THEN 'none' ELSE alert_state END "
                    "WHERE org_id = %s AND id = %s AND state <> 'dismissed'",
                    (now, org_id, anomaly_id),
                )
            ]
        )
        rows = await self._fetch(
            f"SELECT {ANOMALY_COLS} FROM anomalies WHERE org_id = %s AND id = %s", (org_id, anomaly_id)
        )
        return anomaly_of(rows[0]) if rows else None

    async def claim_alert(self, now: float, retry_at: float) -> Anomaly | None:
        """One anomaly whose alert is due, claimed for this caller until
        `retry_at` (a conditional update, so only one instance sends it)."""
        rows = await self._fetch(
            f"SELECT {ANOMALY_COLS} FROM anomalies WHERE alert_state = 'pending' AND alert_next <= %s "
            "ORDER BY alert_next LIMIT 5",
            (now,),
        )
        for r in rows:
            (n,) = await self._exec(
                [
                    (
                        "UPDATE anomalies SET alert_next = %s, alert_attempts = alert_attempts + 1 "
                        "WHERE id = %s AND alert_state = 'pending' AND alert_next <= %s",
                        (retry_at, r[0], now),
                    )
                ]
            )
            if n == 1:
                a = anomaly_of(r)
                a.alert_attempts += 1
                return a
        return None

    async def alert_retry(self, anomaly_id: str, at: float) -> None:
        """A delivery failed: due again at `at`."""
        await self._exec(
            [
                (
                    "UPDATE anomalies SET alert_next = %s WHERE id = %s AND alert_state = 'pending'",
                    (at, anomaly_id),
                )
            ]
        )

    async def alert_done(self, anomaly_id: str, state: str, now: float) -> None:
        """Record a delivery (`sent`) or giving up (`failed`)."""
        await self._exec(
            [
                (
                    "UPDATE anomalies SET alert_state = %s, alerted_at = %s "
                    "WHERE id = %s AND alert_state = 'pending'",
                    (state, now if state == "sent" else None, anomaly_id),
                )
            ]
        )
