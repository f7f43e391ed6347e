"""Insights queries for both backends: rollup reads, detector samples,
anomalies with their alert outbox, and the detector lease."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from lectr.insights.histogram import HIST_COLS
from lectr.store.rollups import KEY_COLS, MINUTE_KEEP, SUM_COLS, window_pieces
from lectr.types import Anomaly, WindowStats

# --- the detector's rows ----------------------------------------------------

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


def _sum(col: str) -> str:
    # PostgreSQL sums bigint as numeric; the cast keeps integers integers.
    return f"sum({col})" if col in ("cost_usd", "latency_ms_sum") else f"CAST(sum({col}) AS BIGINT)"


class InsightsMixin:
    """Insights queries for both backends, on three primitives the backend
    supplies (SQL with `%s` placeholders; SQLite translates them)."""

    async def _fetch(self, query: str, args: tuple[Any, ...]) -> list[Any]:
        raise NotImplementedError

    async def _exec(self, ops: list[tuple[str, tuple[Any, ...]]]) -> list[int]:
        """Run `ops` in one transaction (no control-version bump); the row
        count of each."""
        raise NotImplementedError

    async def _exec_many(self, query: str, rows: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    # --- rollups ---------------------------------------------------------

    async def rollup_groups(self, org_id: str, since: int, until: int) -> list[Any]:
        """Sums per (feature, model requested, model actual, provider, task,
        routed) over [since, until), minute-aligned, from the fewest rows."""
        parts, args = [], []
        for table, lo, hi in window_pieces(since, until):
            parts.append(
                f"SELECT {', '.join(KEY_COLS[2:])}, {', '.join(SUM_COLS)} FROM {table} "
                "WHERE org_id = %s AND bucket >= %s AND bucket < %s"
            )
            args += [org_id, lo, hi]
        if not parts:
            return []
        sums = ", ".join(_sum(c) for c in SUM_COLS)
        dims = ", ".join(KEY_COLS[2:])
        return await self._fetch(
            f"SELECT {dims}, {sums} FROM ({' UNION ALL '.join(parts)}) r GROUP BY {dims}", tuple(args)
        )

    async def rollup_windows(self, since: int, until: int, width: int) -> list[Any]:
        """Per org, feature and `width`-second window in [since, until), from
        minute rows: requests, errors, cost, requests whose model was changed,
        latency histogram."""
        hist = ", ".join(_sum(c) for c in HIST_COLS)
        w = int(width)
        return await self._fetch(
            f"SELECT org_id, feature, (bucket / {w}) * {w} AS w, {_sum('requests')}, {_sum('errors')}, "
            "sum(cost_usd), "
            f"{_sum('CASE WHEN model_requested <> model_actual THEN requests ELSE 0 END')}, "
            f"{hist} FROM rollup_minute WHERE bucket >= %s AND bucket < %s GROUP BY org_id, feature, w",
            (since, until),
        )

    async def rollup_series(
        self, org_id: str, since: int, until: int, width: int, by: str | None = None, latency: bool = True
    ) -> list[Any]:
        """Per `width`-second window in [since, until) (and per `by`, a rollup
        dimension, when given): requests, errors, cost and, with `latency`,
        the latency histogram; from the coarsest rollup rows `width` allows
        (minute, hour or day)."""
        if by is not None and by not in KEY_COLS[2:]:
            raise ValueError(f"unknown rollup dimension {by!r}")
        table = "rollup_minute" if width < 3600 else "rollup_hour" if width < 86400 else "rollup_day"
        w = int(width)
        dim = f"{by}, " if by else ""
        hist = "".join(", " + _sum(c) for c in HIST_COLS) if latency else ""
        return await self._fetch(
            f"SELECT {dim}(bucket / {w}) * {w} AS w, {_sum('requests')}, {_sum('errors')}, "
            f"sum(cost_usd){hist} FROM {table} WHERE org_id = %s AND bucket >= %s AND bucket < %s "
            f"GROUP BY {dim}w ORDER BY w",
            (org_id, since, until),
        )

    async def traffic(self, org_id: str, since: int, until: int) -> list[Any]:
        """Tokens per (feature, model requested, model actual, provider, task)
        over [since, until) from hour rows, with the first hour seen."""
        return await self._fetch(
            "SELECT feature, model_requested, model_actual, provider, task, "
            + ", ".join(_sum(c) for c in ("requests", "prompt_tokens", "completion_tokens", "cached_tokens"))
            + ", min(bucket) FROM rollup_hour "
            "WHERE org_id = %s AND bucket >= %s AND bucket < %s "
            "GROUP BY feature, model_requested, model_actual, provider, task",
            (org_id, since, until),
        )

    async def prune_insights(self, now: float, keep_days: int) -> None:
        """Drop minute rows and samples past 8 days, and hour and day rows
        past the request log's retention (0 keeps them)."""
        ops: list[tuple[str, tuple[Any, ...]]] = [
            ("DELETE FROM rollup_minute WHERE bucket < %s", (int(now) - MINUTE_KEEP,)),
            ("DELETE FROM insight_windows WHERE window_start < %s", (int(now) - MINUTE_KEEP,)),
        ]
        if keep_days > 0:
            cutoff = int(now) - keep_days * 86400
            ops += [
                ("DELETE FROM rollup_hour WHERE bucket < %s", (cutoff - 3600,)),
                ("DELETE FROM rollup_day WHERE bucket < %s", (cutoff - 86400,)),
            ]
        await self._exec(ops)

    # --- detector samples ---------------------------------------------------

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

    # --- anomalies ------------------------------------------------------------

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


class InsightsStore(Protocol):
    """The insights part of the store interface (implemented by InsightsMixin)."""

    async def rollup_groups(self, org_id: str, since: int, until: int) -> list[Any]: ...

    async def rollup_windows(self, since: int, until: int, width: int) -> list[Any]: ...

    async def rollup_series(
        self, org_id: str, since: int, until: int, width: int, by: str | None = None, latency: bool = True
    ) -> list[Any]: ...

    async def traffic(self, org_id: str, since: int, until: int) -> list[Any]: ...

    async def prune_insights(self, now: float, keep_days: int) -> None: ...

    async def save_samples(self, rows: list[tuple[Any, ...]]) -> None: ...

    async def samples_at(self, window_start: int) -> list[Any]: ...

    async def first_seen(self, since: int, org_id: str | None = None) -> dict[tuple[str, str], int]: ...

    async def baseline_sums(self, since: int, until: int, min_requests: int) -> list[WindowStats]: ...

    async def dismissed_ranges(self, since: int) -> list[tuple[str, str, int, int]]: ...

    async def detector_lease(self, holder: str, now: float, ttl: float) -> tuple[bool, int | None]: ...

    async def set_last_window(self, holder: str, window: int) -> None: ...

    async def list_anomalies(
        self, org_id: str | None = None, dismissed: bool = True, ongoing_only: bool = False
    ) -> list[Anomaly]: ...

    async def open_anomaly(self, a: Anomaly, next_alert: float | None) -> bool: ...

    async def continue_anomaly(self, a: Anomaly) -> None: ...

    async def end_anomaly(self, anomaly_id: str, now: float) -> None: ...

    async def dismiss_anomaly(self, org_id: str, anomaly_id: str, now: float) -> Anomaly | None: ...

    async def claim_alert(self, now: float, retry_at: float) -> Anomaly | None: ...

    async def alert_retry(self, anomaly_id: str, at: float) -> None: ...

    async def alert_done(self, anomaly_id: str, state: str, now: float) -> None: ...
