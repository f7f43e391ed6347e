"""The embedded SQLite store: one file, WAL mode, every call run on one
dedicated thread so the event loop never blocks on disk; records go in
through `sqlite_writes`."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from lectr.errors import NotFound
from lectr.store.anomalies import AnomalyRows
from lectr.store.detector_state import DetectorState
from lectr.store.migration_files import migrations
from lectr.store.primitives import Duplicate, MissingReference, Op
from lectr.store.request_log import RequestLog
from lectr.store.rollup_queries import RollupQueries
from lectr.store.shared import SharedSQL
from lectr.store.sqlite_writes import batch_write
from lectr.types import LogFilter, Record

T = TypeVar("T")


class SQLiteStore(SharedSQL, RequestLog, RollupQueries, DetectorState, AnomalyRows):
    """Store backed by an SQLite file (safe across processes: WAL + busy timeout)."""

    notifications = None  # other processes' changes are found by polling
    _row_compare = False

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
                for version, sql in migrations("sqlite"):
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

    async def _snapshot(self, queries: list[Op]) -> list[list[Any]]:
        def _read(c: sqlite3.Connection) -> list[list[Any]]:
            c.execute("BEGIN")
            try:
                return [c.execute(q.replace("%s", "?"), args).fetchall() for q, args in queries]
            finally:
                c.execute("COMMIT")

        return await self._run(_read)

    async def _mutate(self, ops: list[Op], missing: str | None = None) -> None:
        def _ops(c: sqlite3.Connection) -> None:
            for i, (query, args) in enumerate(ops):
                try:
                    cur = c.execute(query.replace("%s", "?"), args)
                except sqlite3.IntegrityError as e:
                    kind = MissingReference if "FOREIGN KEY" in str(e) else Duplicate
                    raise kind(f"conflicts with existing data ({e})") from None
                if missing and cur.rowcount == 0 and (i == 0 or "UPDATE" in query):
                    raise NotFound(missing)

        await self._change(_ops)

    async def _exec(self, ops: list[Op]) -> list[int]:
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
