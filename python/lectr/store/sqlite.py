"""The embedded SQLite store: one file, WAL mode, every call run on one
dedicated thread so the event loop never blocks on disk; records go in
through `sqlite_writes`."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from lectr.errors import Conflict, NotFound
from lectr.store.anomalies import AnomalyRows
from lectr.store.base import encode_cursor, filter_sql, new_key
from lectr.store.detector_state import DetectorState
from lectr.store.rollup_queries import RollupQueries
from lectr.store.shared import SharedSQL
from lectr.store.sqlite_writes import batch_write
from lectr.types import RECORD_FIELDS, ControlData, KeyEntry, LogFilter, OrgEntry, Record

T = TypeVar("T")

_SELECT = f"SELECT {', '.join(RECORD_FIELDS)} FROM requests"

_ORG_COLS = "id, name, disabled, azure_endpoint, azure_api_version, created_at"
_KEY_COLS = "id, org_id, prefix, key_hash, created_at, revoked_at"


def _org(row: Any) -> OrgEntry:
    return OrgEntry(
        id=row[0],
        name=row[1],
        disabled=bool(row[2]),
        azure_endpoint=row[3],
        azure_api_version=row[4],
        created_at=row[5],
    )


def _key(row: Any) -> KeyEntry:
    return KeyEntry(
        id=row[0], org_id=row[1], prefix=row[2], key_hash=bytes(row[3]), created_at=row[4], revoked_at=row[5]
    )


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("lectr").joinpath("store/migrations/sqlite")
    out = []
    for entry in folder.iterdir():
        m = re.match(r"(\d+)_.*\.sql$", entry.name)
        if m:
            out.append((int(m.group(1)), entry.read_text()))
    return sorted(out)


class SQLiteStore(SharedSQL, RollupQueries, DetectorState, AnomalyRows):
    """Store backed by an SQLite file (safe across processes: WAL + busy timeout)."""

    notifications = None  # other processes' changes are found by polling

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lectr-sqlite")
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            # Switching to WAL takes an exclusive lock without waiting on the
            # busy handler, so workers opening a new file together retry here.
            for attempt in range(100):
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError:
                    if attempt == 99:
                        raise
                    time.sleep(0.05)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._conn = conn
        return self._conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(self._db()))

    async def close(self) -> None:
        def _close(conn: sqlite3.Connection) -> None:
            conn.close()
            self._conn = None

        if self._conn is not None:
            await self._run(_close)
        self._pool.shutdown(wait=True)

    async def ping(self) -> None:
        await self._run(lambda c: c.execute("SELECT 1").fetchone())

    async def migrate(self) -> list[int]:
        def _migrate(c: sqlite3.Connection) -> list[int]:
            # BEGIN IMMEDIATE takes the write lock, so concurrent starters
            # apply each migration exactly once.
            c.execute("BEGIN IMMEDIATE")
            try:
                c.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations "
                    "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
                )
                done = {r[0] for r in c.execute("SELECT version FROM schema_migrations")}
                applied = []
                for version, sql in _migrations():
                    if version in done:
                        continue
                    for statement in _split(sql):
                        c.execute(statement)
                    c.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, time.time()))
                    applied.append(version)
                c.execute("COMMIT")
                return applied
            except BaseException:
                c.execute("ROLLBACK")
                raise

        return await self._run(_migrate)

    async def write_records(self, records: list[Record]) -> None:
        if records:
            await self._run(batch_write(records))

    async def control_version(self) -> int:
        row = await self._run(lambda c: c.execute("SELECT version FROM control_version").fetchone())
        return int(row[0])

    async def load_control(self) -> ControlData:
        def _load(c: sqlite3.Connection) -> ControlData:
            c.execute("BEGIN")
            try:
                version = c.execute("SELECT version FROM control_version").fetchone()[0]
                orgs = [_org(r) for r in c.execute(f"SELECT {_ORG_COLS} FROM orgs")]
                keys = [
                    _key(r) for r in c.execute(f"SELECT {_KEY_COLS} FROM org_keys WHERE revoked_at IS NULL")
                ]
            finally:
                c.execute("COMMIT")
            return ControlData(version=version, orgs=orgs, keys=keys)

        base = await self._run(_load)
        return msgspec.structs.replace(base, **await self.control_extras())

    async def _change(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a control-plane change and bump the version in one transaction."""

        def _tx(c: sqlite3.Connection) -> T:
            c.execute("BEGIN IMMEDIATE")
            try:
                out = fn(c)
                c.execute("UPDATE control_version SET version = version + 1")
                c.execute("COMMIT")
                return out
            except BaseException:
                c.execute("ROLLBACK")
                raise

        return await self._run(_tx)

    async def _fetch(self, query: str, args: tuple[Any, ...]) -> list[Any]:
        q = query.replace("%s", "?")
        return await self._run(lambda c: c.execute(q, args).fetchall())

    async def _mutate(self, ops: list[tuple[str, tuple[Any, ...]]], missing: str | None = None) -> None:
        def _ops(c: sqlite3.Connection) -> None:
            for i, (query, args) in enumerate(ops):
                try:
                    cur = c.execute(query.replace("%s", "?"), args)
                except sqlite3.IntegrityError as e:
                    raise Conflict(f"conflicts with existing data ({e})") from None
                if missing and cur.rowcount == 0 and (i == 0 or "UPDATE" in query):
                    raise NotFound(missing)

        await self._change(_ops)

    async def _exec(self, ops: list[tuple[str, tuple[Any, ...]]]) -> list[int]:
        def _ops(c: sqlite3.Connection) -> list[int]:
            c.execute("BEGIN IMMEDIATE")
            try:
                counts = [c.execute(q.replace("%s", "?"), args).rowcount for q, args in ops]
                c.execute("COMMIT")
                return counts
            except BaseException:
                c.execute("ROLLBACK")
                raise

        return await self._run(_ops)

    async def _exec_many(self, query: str, rows: list[tuple[Any, ...]]) -> None:
        def _many(c: sqlite3.Connection) -> None:
            c.execute("BEGIN IMMEDIATE")
            try:
                c.executemany(query.replace("%s", "?"), rows)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

        await self._run(_many)

    async def create_org(self, name: str) -> OrgEntry:
        org = OrgEntry(id="org_" + uuid.uuid4().hex[:16], name=name, created_at=time.time())

        def _create(c: sqlite3.Connection) -> OrgEntry:
            try:
                c.execute(
                    "INSERT INTO orgs (id, name, created_at) VALUES (?, ?, ?)",
                    (org.id, org.name, org.created_at),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"an org named {name!r} already exists") from None
            return org

        return await self._change(_create)

    async def get_org(self, name_or_id: str) -> OrgEntry:
        row = await self._run(
            lambda c: c.execute(
                f"SELECT {_ORG_COLS} FROM orgs WHERE id = ? OR name = ?", (name_or_id, name_or_id)
            ).fetchone()
        )
        if row is None:
            raise NotFound(f"no org named {name_or_id!r}")
        return _org(row)

    async def list_orgs(self) -> list[OrgEntry]:
        rows = await self._run(
            lambda c: c.execute(f"SELECT {_ORG_COLS} FROM orgs ORDER BY created_at").fetchall()
        )
        return [_org(r) for r in rows]

    async def set_org_disabled(self, org_id: str, disabled: bool) -> None:
        def _set(c: sqlite3.Connection) -> None:
            if c.execute("UPDATE orgs SET disabled = ? WHERE id = ?", (int(disabled), org_id)).rowcount == 0:
                raise NotFound(f"no org {org_id!r}")

        await self._change(_set)

    async def set_org_azure(self, org_id: str, endpoint: str | None, api_version: str | None) -> None:
        def _set(c: sqlite3.Connection) -> None:
            cur = c.execute(
                "UPDATE orgs SET azure_endpoint = ?, azure_api_version = ? WHERE id = ?",
                (endpoint, api_version, org_id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"no org {org_id!r}")

        await self._change(_set)

    async def create_key(self, org_id: str) -> tuple[str, KeyEntry]:
        def _create(c: sqlite3.Connection) -> tuple[str, KeyEntry]:
            for _ in range(5):
                key, prefix, digest = new_key()
                entry = KeyEntry(
                    id="key_" + uuid.uuid4().hex[:16],
                    org_id=org_id,
                    prefix=prefix,
                    key_hash=digest,
                    created_at=time.time(),
                )
                try:
                    c.execute(
                        f"INSERT INTO org_keys ({_KEY_COLS}) VALUES (?, ?, ?, ?, ?, NULL)",
                        (entry.id, org_id, prefix, digest, entry.created_at),
                    )
                    return key, entry
                except sqlite3.IntegrityError as e:
                    if "FOREIGN KEY" in str(e):
                        raise NotFound(f"no org {org_id!r}") from None
            raise Conflict("could not generate a unique key prefix")

        return await self._change(_create)

    async def list_keys(self, org_id: str) -> list[KeyEntry]:
        rows = await self._run(
            lambda c: c.execute(
                f"SELECT {_KEY_COLS} FROM org_keys WHERE org_id = ? ORDER BY created_at", (org_id,)
            ).fetchall()
        )
        return [_key(r) for r in rows]

    async def revoke_key(self, org_id: str, prefix: str) -> None:
        def _revoke(c: sqlite3.Connection) -> None:
            cur = c.execute(
                "UPDATE org_keys SET revoked_at = ? WHERE org_id = ? AND prefix = ? AND revoked_at IS NULL",
                (time.time(), org_id, prefix),
            )
            if cur.rowcount == 0:
                raise NotFound(f"no active key with prefix {prefix!r} in this org")

        await self._change(_revoke)

    async def query_requests(
        self, f: LogFilter, cursor: str | None = None, limit: int = 100
    ) -> tuple[list[Record], str | None]:
        where, args = filter_sql(f, cursor, param="?", ts="?", row_compare=False)
        rows = await self._run(
            lambda c: c.execute(
                f"{_SELECT} WHERE {where} ORDER BY ts DESC, id DESC LIMIT ?", (*args, limit + 1)
            ).fetchall()
        )
        records = [Record(**dict(zip(RECORD_FIELDS, r, strict=True))) for r in rows[:limit]]
        nxt = encode_cursor(records[-1].ts, records[-1].id) if len(rows) > limit else None
        return records, nxt

    async def export_requests(self, f: LogFilter) -> AsyncIterator[list[Record]]:
        # Keyset pages rather than one open cursor: the store's single thread
        # stays free for the writer between pages, and memory stays flat.
        cursor: str | None = None
        while True:
            page, cursor = await self.query_requests(f, cursor, 2000)
            if page:
                yield page
            if cursor is None:
                return

    async def apply_retention(self, days: int) -> int:
        cutoff = time.time() - days * 86400

        def _delete(c: sqlite3.Connection) -> int:
            return c.execute("DELETE FROM requests WHERE ts < ?", (cutoff,)).rowcount

        return await self._run(_delete)

    async def maintain(self) -> None:
        return None


def _split(sql: str) -> list[str]:
    """Statements of a migration file (they contain no semicolons in strings)."""
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
