"""Reads of the insights rollups for both backends: sums per group, per
window and per series, token traffic, and their pruning."""

from __future__ import annotations

from typing import Any

from lectr.insights.histogram import HIST_COLS
from lectr.store.primitives import Primitives
from lectr.store.rollups import KEY_COLS, MINUTE_KEEP, SUM_COLS, window_pieces


def _sum(col: str) -> str:
    # PostgreSQL sums bigint as numeric; the cast keeps integers integers.
    return f"sum({col})" if col in ("cost_usd", "latency_ms_sum") else f"CAST(sum({col}) AS BIGINT)"


class RollupQueries(Primitives):
    """Rollup reads on the backend's `_fetch` and `_exec`."""

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
