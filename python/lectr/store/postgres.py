"""The PostgreSQL store (psycopg 3, async pool): a day-partitioned request
log, advisory-locked migrations, server-side cursors for exports; records go
in through `postgres_writes`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from lectr.errors import Conflict, NotFound
from lectr.store.anomalies import AnomalyRows
from lectr.store.base import filter_sql
from lectr.store.detector_state import DetectorState
from lectr.store.migration_files import migrations
from lectr.store.postgres_writes import RecordWriter
from lectr.store.primitives import Duplicate, MissingReference, Op
from lectr.store.request_log import RequestLog, record_of, record_select
from lectr.store.rollup_queries import RollupQueries
from lectr.store.shared import SharedSQL
from lectr.types import LogFilter, Record

MIGRATION_LOCK = 0x1EC7_0001  # pg_advisory_xact_lock key for migrations
PARTITIONS_AHEAD = 7


def partition_name(day: datetime) -> str:
    return f"requests_{day:%Y%m%d}"


class PostgresStore(SharedSQL, RequestLog, RollupQueries, DetectorState, AnomalyRows):
    """Store backed by PostgreSQL; safe for many gateway instances at once."""

    _ts_param = "to_timestamp(%s)"
    _select = record_select("extract(epoch FROM ts)::double precision")

    def __init__(self, url: str, min_size: int = 1, max_size: int = 8) -> None:
        self._url = url
        # check= validates a pooled connection before use, so a restarted
        # server costs one failed batch, not a pool of dead connections.
        self._pool = AsyncConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            open=False,
            timeout=5,
            # No JIT: every query here is short, and compiling the wide
            # rollup aggregates takes longer than running them.
            kwargs={"autocommit": True, "connect_timeout": 3, "options": "-c jit=off"},
            check=AsyncConnectionPool.check_connection,
        )
        self._opened = False
        self._records = RecordWriter(url)

    async def notifications(self) -> AsyncIterator[None]:
        """One item per control change (NOTIFY lectr_control), on a dedicated
        connection; ends with an error when that connection is lost."""
        conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True, connect_timeout=3)
        async with conn:
            await conn.execute("LISTEN lectr_control")
            async for _ in conn.notifies():
                yield None

    async def _open(self) -> AsyncConnectionPool:
        if not self._opened:
            await self._pool.open(wait=False)
            self._opened = True
        return self._pool

    async def close(self) -> None:
        await self._records.close()
        if self._opened:
            await self._pool.close()

    async def ping(self) -> None:
        pool = await self._open()
        async with pool.connection(timeout=2) as c:
            await c.execute("SELECT 1")

    async def migrate(self) -> list[int]:
        pool = await self._open()
        async with pool.connection() as c, c.transaction():
            # Instances starting together serialise here; each migration runs once.
            await c.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await c.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version integer PRIMARY KEY, applied_at double precision NOT NULL)"
            )
            done = {r[0] for r in await (await c.execute("SELECT version FROM schema_migrations")).fetchall()}
            applied = []
            for version, text in migrations("postgres"):
                if version in done:
                    continue
                await c.execute(text.encode())
                await c.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (version, time.time()))
                applied.append(version)
        await self.maintain()
        return applied

    async def maintain(self) -> None:
        """Create the daily partitions for today and the days ahead."""
        pool = await self._open()
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        async with pool.connection() as c:
            for i in range(-1, PARTITIONS_AHEAD + 1):
                day = today + timedelta(days=i)
                name = partition_name(day)
                exists = await (await c.execute("SELECT to_regclass(%s)", (name,))).fetchone()
                if exists and exists[0]:
                    continue
                try:
                    async with c.transaction():
                        await c.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                        await c.execute(
                            sql.SQL(
                                "CREATE TABLE IF NOT EXISTS {} PARTITION OF requests "
                                "FOR VALUES FROM ({}) TO ({})"
                            ).format(
                                sql.Identifier(name), sql.Literal(day), sql.Literal(day + timedelta(days=1))
                            )
                        )
                except psycopg.errors.CheckViolation:
                    # Rows for that day already sit in the default partition
                    # (written while no partition existed); they stay there.
                    continue

    async def write_records(self, records: list[Record]) -> None:
        await self._records.write(records)

    async def _fetch(self, query: str, args: tuple[Any, ...]) -> list[Any]:
        pool = await self._open()
        async with pool.connection() as c:
            return await (await c.execute(query, args)).fetchall()

    async def _snapshot(self, queries: list[Op]) -> list[list[Any]]:
        pool = await self._open()
        async with pool.connection() as c, c.transaction():
            await c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            return [await (await c.execute(q, args)).fetchall() for q, args in queries]

    async def _mutate(self, ops: list[Op], missing: str | None = None) -> None:
        pool = await self._open()
        try:
            async with pool.connection() as c, c.transaction():
                for i, (query, args) in enumerate(ops):
                    cur = await c.execute(query, args)
                    if missing and cur.rowcount == 0 and (i == 0 or query.startswith("UPDATE")):
                        raise NotFound(missing)
                await c.execute("UPDATE control_version SET version = version + 1")
        except psycopg.errors.IntegrityError as e:
            message = f"conflicts with existing data ({e.diag.message_primary})"
            if isinstance(e, psycopg.errors.UniqueViolation):
                raise Duplicate(message) from None
            if isinstance(e, psycopg.errors.ForeignKeyViolation):
                raise MissingReference(message) from None
            raise Conflict(message) from None

    async def _exec(self, ops: list[Op]) -> list[int]:
        pool = await self._open()
        async with pool.connection() as c, c.transaction():
            return [(await c.execute(q, args)).rowcount for q, args in ops]

    async def _exec_many(self, query: str, rows: list[tuple[Any, ...]]) -> None:
        pool = await self._open()
        async with pool.connection() as c, c.transaction(), c.cursor() as cur:
            await cur.executemany(query, rows)

    async def export_requests(self, f: LogFilter) -> AsyncIterator[list[Record]]:
        where, args = filter_sql(f, None, ts=self._ts_param)
        pool = await self._open()
        # A named (server-side) cursor streams rows; memory stays flat.
        async with pool.connection() as c, c.transaction(), c.cursor(name="lectr_export") as cur:
            await cur.execute(f"{self._select} WHERE {where} ORDER BY ts DESC, id DESC", args)
            while rows := await cur.fetchmany(2000):
                yield [record_of(r) for r in rows]

    async def apply_retention(self, days: int) -> int:
        """Drop whole day partitions past retention, and delete old rows that
        sit in the default partition."""
        cutoff = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days)
        pool = await self._open()
        dropped = 0
        async with pool.connection() as c:
            parts = await (
                await c.execute(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'requests'::regclass AND c.relname ~ '^requests_[0-9]{8}$'"
                )
            ).fetchall()
            for (name,) in parts:
                day = datetime.strptime(name[len("requests_") :], "%Y%m%d").replace(tzinfo=UTC)
                if day + timedelta(days=1) <= cutoff:
                    await c.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
                    dropped += 1
            await c.execute("DELETE FROM requests_default WHERE ts < %s", (cutoff,))
        return dropped
