"""The PostgreSQL store (psycopg 3, async pool): a day-partitioned request
log, advisory-locked migrations, server-side cursors for exports; records go
in through `postgres_writes`."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import msgspec
import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from lectr.errors import Conflict, NotFound
from lectr.store.anomalies import AnomalyRows
from lectr.store.base import encode_cursor, filter_sql, new_key
from lectr.store.detector_state import DetectorState
from lectr.store.postgres_writes import RecordWriter
from lectr.store.rollup_queries import RollupQueries
from lectr.store.shared import SharedSQL
from lectr.types import RECORD_FIELDS, ControlData, KeyEntry, LogFilter, OrgEntry, Record

_COLS = ", ".join(RECORD_FIELDS)
_TS = RECORD_FIELDS.index("ts")
_ORG_COLS = "id, name, disabled, azure_endpoint, azure_api_version, created_at"
_KEY_COLS = "id, org_id, prefix, key_hash, created_at, revoked_at"
_SELECT = "SELECT {} FROM requests".format(
    ", ".join("extract(epoch FROM ts)::double precision" if f == "ts" else f for f in RECORD_FIELDS)
)
MIGRATION_LOCK = 0x1EC7_0001  # pg_advisory_xact_lock key for migrations
PARTITIONS_AHEAD = 7


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("lectr").joinpath("store/migrations/postgres")
    out = []
    for entry in folder.iterdir():
        m = re.match(r"(\d+)_.*\.sql$", entry.name)
        if m:
            out.append((int(m.group(1)), entry.read_text()))
    return sorted(out)


def _org(r: Any) -> OrgEntry:
    return OrgEntry(
        id=r[0], name=r[1], disabled=r[2], azure_endpoint=r[3], azure_api_version=r[4], created_at=r[5]
    )


def _key(r: Any) -> KeyEntry:
    return KeyEntry(id=r[0], org_id=r[1], prefix=r[2], key_hash=bytes(r[3]), created_at=r[4], revoked_at=r[5])


def _record(r: Any) -> Record:
    return Record(**dict(zip(RECORD_FIELDS, r, strict=True)))


def partition_name(day: datetime) -> str:
    return f"requests_{day:%Y%m%d}"


class PostgresStore(SharedSQL, RollupQueries, DetectorState, AnomalyRows):
    _ts_param = "to_timestamp(%s)"
    """Store backed by PostgreSQL; safe for many gateway instances at once."""

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
            for version, text in _migrations():
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

    async def control_version(self) -> int:
        pool = await self._open()
        async with pool.connection() as c:
            row = await (await c.execute("SELECT version FROM control_version")).fetchone()
        return int(row[0]) if row else 0

    async def load_control(self) -> ControlData:
        pool = await self._open()
        async with pool.connection() as c, c.transaction():
            await c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            version = (await (await c.execute("SELECT version FROM control_version")).fetchone() or (0,))[0]
            orgs = [_org(r) for r in await (await c.execute(f"SELECT {_ORG_COLS} FROM orgs")).fetchall()]
            keys = [
                _key(r)
                for r in await (
                    await c.execute(f"SELECT {_KEY_COLS} FROM org_keys WHERE revoked_at IS NULL")
                ).fetchall()
            ]
        base = ControlData(version=int(version), orgs=orgs, keys=keys)
        return msgspec.structs.replace(base, **await self.control_extras())

    async def _change(self, statement: str, args: tuple[Any, ...], missing: str | None = None) -> None:
        pool = await self._open()
        async with pool.connection() as c, c.transaction():
            cur = await c.execute(statement, args)
            if missing and cur.rowcount == 0:
                raise NotFound(missing)
            await c.execute("UPDATE control_version SET version = version + 1")

    async def _fetch(self, query: str, args: tuple[Any, ...]) -> list[Any]:
        pool = await self._open()
        async with pool.connection() as c:
            return await (await c.execute(query, args)).fetchall()

    async def _mutate(self, ops: list[tuple[str, tuple[Any, ...]]], missing: str | None = None) -> None:
        pool = await self._open()
        try:
            async with pool.connection() as c, c.transaction():
                for i, (query, args) in enumerate(ops):
                    cur = await c.execute(query, args)
                    if missing and cur.rowcount == 0 and (i == 0 or query.startswith("UPDATE")):
                        raise NotFound(missing)
                await c.execute("UPDATE control_version SET version = version + 1")
        except psycopg.errors.IntegrityError as e:
            raise Conflict(f"conflicts with existing data ({e.diag.message_primary})") from None

    async def _exec(self, ops: list[tuple[str, tuple[Any, ...]]]) -> list[int]:
        pool = await self._open()
        async with pool.connection() as c, c.transaction():
            return [(await c.execute(q, args)).rowcount for q, args in ops]

    async def _exec_many(self, query: str, rows: list[tuple[Any, ...]]) -> None:
        pool = await self._open()
        async with pool.connection() as c, c.transaction(), c.cursor() as cur:
            await cur.executemany(query, rows)

    async def create_org(self, name: str) -> OrgEntry:
        org = OrgEntry(id="org_" + uuid.uuid4().hex[:16], name=name, created_at=time.time())
        try:
            await self._change(
                "INSERT INTO orgs (id, name, created_at) VALUES (%s, %s, %s)", (org.id, name, org.created_at)
            )
        except psycopg.errors.UniqueViolation:
            raise Conflict(f"an org named {name!r} already exists") from None
        return org

    async def get_org(self, name_or_id: str) -> OrgEntry:
        pool = await self._open()
        async with pool.connection() as c:
            row = await (
                await c.execute(
                    f"SELECT {_ORG_COLS} FROM orgs WHERE id = %s OR name = %s", (name_or_id, name_or_id)
                )
            ).fetchone()
        if row is None:
            raise NotFound(f"no org named {name_or_id!r}")
        return _org(row)

    async def list_orgs(self) -> list[OrgEntry]:
        pool = await self._open()
        async with pool.connection() as c:
            rows = await (await c.execute(f"SELECT {_ORG_COLS} FROM orgs ORDER BY created_at")).fetchall()
        return [_org(r) for r in rows]

    async def set_org_disabled(self, org_id: str, disabled: bool) -> None:
        await self._change(
            "UPDATE orgs SET disabled = %s WHERE id = %s", (disabled, org_id), f"no org {org_id!r}"
        )

    async def set_org_azure(self, org_id: str, endpoint: str | None, api_version: str | None) -> None:
        await self._change(
            "UPDATE orgs SET azure_endpoint = %s, azure_api_version = %s WHERE id = %s",
            (endpoint, api_version, org_id),
            f"no org {org_id!r}",
        )

    async def create_key(self, org_id: str) -> tuple[str, KeyEntry]:
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
                await self._change(
                    f"INSERT INTO org_keys ({_KEY_COLS}) VALUES (%s, %s, %s, %s, %s, NULL)",
                    (entry.id, org_id, prefix, digest, entry.created_at),
                )
                return key, entry
            except psycopg.errors.ForeignKeyViolation:
                raise NotFound(f"no org {org_id!r}") from None
            except psycopg.errors.UniqueViolation:
                continue
        raise Conflict("could not generate a unique key prefix")

    async def list_keys(self, org_id: str) -> list[KeyEntry]:
        pool = await self._open()
        async with pool.connection() as c:
            rows = await (
                await c.execute(
                    f"SELECT {_KEY_COLS} FROM org_keys WHERE org_id = %s ORDER BY created_at", (org_id,)
                )
            ).fetchall()
        return [_key(r) for r in rows]

    async def revoke_key(self, org_id: str, prefix: str) -> None:
        await self._change(
            "UPDATE org_keys SET revoked_at = %s WHERE org_id = %s AND prefix = %s AND revoked_at IS NULL",
            (time.time(), org_id, prefix),
            f"no active key with prefix {prefix!r} in this org",
        )

    async def query_requests(
        self, f: LogFilter, cursor: str | None = None, limit: int = 100
    ) -> tuple[list[Record], str | None]:
        where, args = filter_sql(f, cursor, ts="to_timestamp(%s)")
        pool = await self._open()
        async with pool.connection() as c:
            rows = await (
                await c.execute(
                    f"{_SELECT} WHERE {where} ORDER BY ts DESC, id DESC LIMIT %s", [*args, limit + 1]
                )
            ).fetchall()
        records = [_record(r) for r in rows[:limit]]
        nxt = encode_cursor(records[-1].ts, records[-1].id) if len(rows) > limit else None
        return records, nxt

    async def export_requests(self, f: LogFilter) -> AsyncIterator[list[Record]]:
        where, args = filter_sql(f, None, ts="to_timestamp(%s)")
        pool = await self._open()
        # A named (server-side) cursor streams rows; memory stays flat.
        async with pool.connection() as c, c.transaction(), c.cursor(name="lectr_export") as cur:
            await cur.execute(f"{_SELECT} WHERE {where} ORDER BY ts DESC, id DESC", args)
            while rows := await cur.fetchmany(2000):
                yield [_record(r) for r in rows]

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
