"""Persistence: the store interface both backends implement, and `open_store`
choosing the backend from one setting (`database_url`). Backends raise the
domain errors of `lectr.errors` (NotFound, Conflict)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from lectr.config import Settings
from lectr.types import (
    Anomaly,
    ControlData,
    FallbackChain,
    KeyEntry,
    LogFilter,
    OrgEntry,
    Record,
    Rule,
    WindowStats,
)

KEY_PREFIX = "lc_key_"


def new_key() -> tuple[str, str, bytes]:
    """A fresh org key: (plaintext, public prefix, SHA-256 of the plaintext).

    32 random bytes give 43 URL-safe characters after `lc_key_`; the first
    eight of those are the prefix shown in listings. A token that starts
    with `-` is drawn again: `lectr keys revoke ORG -abc...` would read that
    prefix as an option (older such keys stay valid).
    """
    token = secrets.token_urlsafe(32)
    while token.startswith("-"):
        token = secrets.token_urlsafe(32)
    key = KEY_PREFIX + token
    return key, token[:8], hash_key(key)


def hash_key(key: str) -> bytes:
    """The stored form of a key. Keys are 256-bit random, so a plain SHA-256
    (no salt, no stretching) cannot be brute-forced."""
    return hashlib.sha256(key.encode()).digest()


def encode_cursor(ts: float, record_id: str) -> str:
    """An opaque pagination cursor for the row (ts, id)."""
    return base64.urlsafe_b64encode(f"{ts!r}|{record_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The (ts, id) inside a cursor; ValueError if it was not made by us."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts, record_id = raw.split("|", 1)
        return float(ts), record_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("invalid cursor") from None


STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "499", "error")


def filter_sql(
    f: LogFilter, cursor: str | None, param: str = "%s", ts: str = "%s", row_compare: bool = True
) -> tuple[str, list[Any]]:
    """WHERE clause and parameters of a log filter and page cursor. `param`
    is the driver's placeholder, `ts` how a Unix-seconds parameter compares
    with the ts column; `row_compare` uses `(ts, id) < (...)` (PostgreSQL
    walks the index with it) instead of the expanded form."""
    where = ["org_id = " + param]
    args: list[Any] = [f.org_id]
    for column, value in (
        ("feature", f.feature),
        ("task", f.task),
        ("provider", f.provider),
        ("rule_id", f.rule),
    ):
        if value is not None:
            where.append(f"{column} = {param}")
            args.append(value)
    if f.model is not None:
        where.append(f"(model_requested = {param} OR model_actual = {param})")
        args += [f.model, f.model]
    if f.status is not None:
        if f.status == "error":
            where.append("(status_code >= 400 OR error_category IS NOT NULL)")
        elif f.status == "499":
            where.append("status_code = 499")
        else:
            low = int(f.status[0]) * 100
            where.append(f"status_code >= {low} AND status_code < {low + 100} AND status_code <> 499")
    if f.since is not None:
        where.append(f"ts >= {ts}")
        args.append(f.since)
    if f.until is not None:
        where.append(f"ts < {ts}")
        args.append(f.until)
    if cursor:
        cts, rid = decode_cursor(cursor)
        if row_compare:
            where.append(f"(ts, id) < ({ts}, {param})")
            args += [cts, rid]
        else:
            where.append(f"(ts < {ts} OR (ts = {ts} AND id < {param}))")
            args += [cts, cts, rid]
    return " AND ".join(where), args


class Store(Protocol):
    """What the gateway needs from a database."""

    @property
    def notifications(self) -> Callable[[], AsyncIterator[None]] | None:
        """Yields once per control-plane change made anywhere (any instance,
        any process); None when the backend cannot notify (callers poll)."""
        ...

    async def migrate(self) -> list[int]:
        """Apply pending migrations; return the versions applied."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the database cannot be reached."""
        ...

    async def write_records(self, records: list[Record]) -> None:
        """Store a batch of request records (idempotent on record id)."""
        ...

    async def control_version(self) -> int: ...

    async def load_control(self) -> ControlData: ...

    async def create_org(self, name: str) -> OrgEntry: ...

    async def get_org(self, name_or_id: str) -> OrgEntry: ...

    async def list_orgs(self) -> list[OrgEntry]: ...

    async def set_org_disabled(self, org_id: str, disabled: bool) -> None: ...

    async def set_org_azure(self, org_id: str, endpoint: str | None, api_version: str | None) -> None: ...

    async def create_key(self, org_id: str) -> tuple[str, KeyEntry]:
        """A new key for the org: (plaintext, stored entry). The plaintext is
        returned once and never stored."""
        ...

    async def list_keys(self, org_id: str) -> list[KeyEntry]: ...

    async def revoke_key(self, org_id: str, prefix: str) -> None: ...

    async def count_records(self, org_id: str | None = None) -> int: ...

    async def query_requests(
        self, f: LogFilter, cursor: str | None = None, limit: int = 100
    ) -> tuple[list[Record], str | None]:
        """One page of the request log, newest first, and the next cursor."""
        ...

    def export_requests(self, f: LogFilter) -> AsyncIterator[list[Record]]:
        """Every matching record, newest first, in bounded batches."""
        ...

    async def apply_retention(self, days: int) -> int:
        """Delete records older than `days`; return how many (or partitions) went."""
        ...

    async def maintain(self) -> None:
        """Periodic housekeeping (PostgreSQL: create partitions ahead)."""
        ...

    async def list_rules(self, org_id: str) -> list[Rule]: ...

    async def create_rule(self, rule: Rule) -> Rule: ...

    async def update_rule(self, rule: Rule) -> None: ...

    async def delete_rule(self, org_id: str, rule_id: str) -> None: ...

    async def reorder_rules(self, org_id: str, rule_ids: list[str]) -> None: ...

    async def list_fallbacks(self, org_id: str | None = None) -> list[FallbackChain]: ...

    async def set_fallback(self, chain: FallbackChain) -> None: ...

    async def delete_fallback(self, org_id: str, scope: str) -> None: ...

    async def list_scoped(self, typ: type[Any], org_id: str | None = None) -> list[Any]:
        """Budgets, rate limits or latency targets (all, or one org's)."""
        ...

    async def put_scoped(self, item: Any) -> None:
        """Create or replace a budget, rate limit or latency target."""
        ...

    async def delete_scoped(self, typ: type[Any], key: tuple[str, ...]) -> None: ...

    async def spend(self, org_id: str, feature: str | None, since: float) -> float:
        """USD recorded for an org (or one feature) since a Unix time."""
        ...

    # --- insights: rollups, detector samples and lease, anomalies and alerts

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


def open_store(settings: Settings) -> Store:
    """The store the settings ask for: PostgreSQL when `database_url` is set,
    else the embedded SQLite file under `data_dir`."""
    if settings.database_url:
        from lectr.store.postgres import PostgresStore

        return PostgresStore(settings.database_url)
    from lectr.store.sqlite import SQLiteStore

    return SQLiteStore(settings.sqlite_path)
