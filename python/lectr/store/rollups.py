"""The insights rollups (minute, hour, day) as the record writer keeps them:
rows from records, the upsert SQL of both backends, and which levels cover a
window."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from lectr.insights.histogram import EDGES, HIST_BUCKETS, HIST_COLS, latency_bucket
from lectr.types import Record


def bucket_case(column: str) -> str:
    """SQL for `latency_bucket(column)`."""
    whens = " ".join(f"WHEN {column} < {edge!r} THEN {i}" for i, edge in enumerate(EDGES))
    return f"CASE {whens} ELSE {HIST_BUCKETS - 1} END"


# --- rollups ----------------------------------------------------------------

KEY_COLS = ("org_id", "bucket", "feature", "model_requested", "model_actual", "provider", "task", "routed")
SUM_COLS: tuple[str, ...] = (
    "requests",
    "errors",
    "upstream_errors",
    "priced",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_usd",
    "latency_ms_sum",
    *HIST_COLS,
)
_FIRST_HIST = SUM_COLS.index(HIST_COLS[0])
# (table, bucket width in seconds), finest first.
LEVELS: tuple[tuple[str, int], ...] = (("rollup_minute", 60), ("rollup_hour", 3600), ("rollup_day", 86400))
MINUTE_KEEP = 8 * 86400  # minute rows serve short windows and the detector


def is_error(r: Record) -> bool:
    """The request log's `status=error` filter, so the two always agree."""
    return r.status_code >= 400 or r.error_category is not None


def is_routed(r: Record) -> bool:
    # Routing rules have generated ids; policy rewrites (budget fallbacks)
    # record ids like `budget:*:day` and are not routing.
    return r.rule_id is not None and ":" not in r.rule_id


def rollup_rows(records: Iterable[Record]) -> dict[str, list[tuple[Any, ...]]]:
    """The rollup deltas of some records, per table: one row (key columns,
    then sums) per distinct key, sorted by key so that concurrent writers
    lock rows in the same order and cannot deadlock."""
    width = len(SUM_COLS)
    minutes: dict[tuple[Any, ...], list[Any]] = {}
    # Each record is added once, to its minute; hours and days sum minutes.
    for r in records:
        key = (
            r.org_id,
            int(r.ts // 60) * 60,
            r.feature,
            r.model_requested or "",
            r.model_actual or "",
            r.provider,
            r.task or "",
            1 if r.rule_id is not None and ":" not in r.rule_id else 0,  # is_routed
        )
        a = minutes.get(key)
        if a is None:
            a = minutes[key] = [0] * width
            a[7] = a[8] = 0.0
        prompt = r.prompt_tokens or 0
        a[0] += 1
        if r.status_code >= 400 or r.error_category is not None:  # is_error
            a[1] += 1
        if r.error_source in ("provider", "network"):
            a[2] += 1
        if r.cost_usd is not None:
            a[3] += 1
            a[7] += r.cost_usd
        a[4] += prompt
        a[5] += r.completion_tokens or 0
        # Clamped as the price table clamps it, so costs recomputed from
        # these sums equal the recorded ones.
        cached = r.cached_tokens or 0
        a[6] += cached if cached < prompt else prompt
        a[8] += r.latency_ms
        a[_FIRST_HIST + latency_bucket(r.latency_ms)] += 1
    out = {LEVELS[0][0]: sorted((*k, *v) for k, v in minutes.items())}
    for table, step in LEVELS[1:]:
        acc: dict[tuple[Any, ...], list[Any]] = {}
        for k, v in minutes.items():
            coarse = (k[0], k[1] // step * step, *k[2:])
            a = acc.get(coarse)
            if a is None:
                acc[coarse] = list(v)
            else:
                for i, x in enumerate(v):
                    if x:
                        a[i] += x
        out[table] = sorted((*k, *v) for k, v in acc.items())
    return out


def upsert_parts(table: str) -> tuple[str, str]:
    """The SQL before and after the source of the rows (VALUES or SELECT)
    of a statement adding delta rows to a rollup table."""
    cols = (*KEY_COLS, *SUM_COLS)
    sets = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in SUM_COLS)
    return (
        f"INSERT INTO {table} ({', '.join(cols)})",
        f" ON CONFLICT ({', '.join(KEY_COLS)}) DO UPDATE SET {sets}",
    )


def upsert_sql(table: str, placeholders: str) -> str:
    """Add delta rows to a rollup table (`placeholders` is the VALUES or
    SELECT source of the rows)."""
    head, tail = upsert_parts(table)
    return f"{head} {placeholders}{tail}"


def sqlite_upserts() -> list[tuple[str, tuple[str, str]]]:
    """Per table, the head and tail of the upsert; SQLite's writer puts a
    multi-row VALUES list between them."""
    return [(t, upsert_parts(t)) for t, _ in LEVELS]


def pg_upserts() -> list[tuple[str, str]]:
    """One statement per table, fed by one JSON array of row objects: the
    server parses it, where binding ~80 parameters per row would cost more
    than the insert itself. Absent latency buckets are zero."""
    cols = ", ".join(f"coalesce({c}, 0)" if c in HIST_COLS else c for c in (*KEY_COLS, *SUM_COLS))
    return [
        (t, upsert_sql(t, f"SELECT {cols} FROM json_populate_recordset(NULL::{t}, %s::json)"))
        for t, _ in LEVELS
    ]


_NAMES = (*KEY_COLS, *SUM_COLS)
_DENSE = len(KEY_COLS) + _FIRST_HIST
_json = msgspec.json.Encoder()


def pg_payload(rows: list[tuple[Any, ...]]) -> str:
    """Rollup rows as the JSON `pg_upserts` reads (zero buckets left out)."""
    objs = []
    for r in rows:
        o = dict(zip(_NAMES[:_DENSE], r[:_DENSE], strict=True))
        for i in range(_DENSE, len(r)):
            if r[i]:
                o[_NAMES[i]] = r[i]
        objs.append(o)
    return _json.encode(objs).decode()


def window_pieces(since: int, until: int) -> list[tuple[str, int, int]]:
    """Cover [since, until) (whole minutes) with the fewest rollup rows: whole
    days in the middle, whole hours next to them, minutes at the edges."""
    pieces: list[tuple[str, int, int]] = []

    def cover(level: int, lo: int, hi: int) -> None:
        if lo >= hi:
            return
        table, step = LEVELS[level]
        if level == 0:
            pieces.append((table, lo, hi))
            return
        a = -(-lo // step) * step
        b = hi // step * step
        if a >= b:
            cover(level - 1, lo, hi)
            return
        pieces.append((table, a, b))
        cover(level - 1, lo, a)
        cover(level - 1, b, hi)

    cover(len(LEVELS) - 1, since, until)
    return pieces
