"""Record writes into PostgreSQL: batches by binary COPY on a connection of
their own, with the rollup deltas of the records stored, in one transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg

from lectr.store.rollups import pg_payload, pg_upserts, rollup_rows
from lectr.types import RECORD_FIELDS, Record

_COLS = ", ".join(RECORD_FIELDS)
_TS = RECORD_FIELDS.index("ts")

# Records go in by binary COPY with the column types given up front, so that
# psycopg's C dumpers encode each row (half the client time per row of text
# COPY, and the server parses nothing). The timestamp is sent as its binary
# form, microseconds since 2000-01-01 as an int8, computed here rather than
# through a datetime per row.

_TYPES = {
    "ts": "int8",  # timestamptz on the wire: int8 microseconds since 2000-01-01
    "provider_unknown": "bool",
    "streaming": "bool",
    "status_code": "int2",
    "latency_ms": "float8",
    "ttfb_ms": "float8",
    "prompt_tokens": "int4",
    "completion_tokens": "int4",
    "cached_tokens": "int4",
    "cache_write_tokens": "int4",
    "reasoning_tokens": "int4",
    "cost_usd": "float8",
}
_COPY_TYPES = [_TYPES.get(f, "text") for f in RECORD_FIELDS]  # a field not listed is text
_COPY = f"COPY requests ({_COLS}) FROM STDIN (FORMAT BINARY)"
_COPY_STAGE = f"COPY requests_stage ({_COLS}) FROM STDIN (FORMAT BINARY)"
_PG_EPOCH = 946_684_800  # 2000-01-01 in Unix seconds
_EPOCH_2000 = datetime(2000, 1, 1, tzinfo=UTC)
_astuple = msgspec.structs.astuple


def pg_micros(ts: float) -> int:
    """A Unix time as PostgreSQL's timestamp: microseconds since 2000-01-01,
    rounded exactly as `datetime.fromtimestamp` rounds (half to even), so a
    record keeps the same (ts, id) key whichever way it was stored."""
    if not ts >= 0:
        return (datetime.fromtimestamp(ts, UTC) - _EPOCH_2000) // timedelta(microseconds=1)
    sec = int(ts)
    return (sec - _PG_EPOCH) * 1_000_000 + round((ts - sec) * 1e6)


def _copy_rows(records: Iterable[Record]) -> list[tuple[Any, ...]]:
    """The records as COPY rows (`_COPY_TYPES`)."""
    rows = []
    for r in records:
        t = _astuple(r)
        rows.append((*t[:_TS], pg_micros(t[_TS]), *t[_TS + 1 :]))
    return rows


def _storable(r: Record) -> Record:
    """The record with every string storable in PostgreSQL text: NUL (which
    text cannot hold) becomes U+FFFD, a lone surrogate (which UTF-8 cannot
    encode) "?". Such a record would otherwise fail its batch on every retry
    and stall the writer behind it."""
    changes = {
        f: v.replace("\0", "\ufffd").encode(errors="replace").decode()
        for f, v in msgspec.structs.asdict(r).items()
        if isinstance(v, str)
    }
    return msgspec.structs.replace(r, **changes)


_UPSERTS = dict(pg_upserts())


async def _add_rollups(c: psycopg.AsyncConnection[Any], rollups: dict[str, list[tuple[Any, ...]]]) -> None:
    """Add rollup deltas (`rollup_rows`): one statement per table, all in one
    round trip, rows in key order (so concurrent writers lock rows alike and
    cannot deadlock)."""
    async with c.pipeline():
        for table, rows in rollups.items():
            if rows:
                await c.execute(_UPSERTS[table], (pg_payload(rows),))


class RecordWriter:
    """Writes request records, each batch in one transaction, one batch at a time."""

    def __init__(self, url: str) -> None:
        self._url = url
        # Records go through a connection of their own, reconnected by the
        # next write after a failure: the pool's reconnect back-off (1, 2, 4,
        # 8 s) would leave the writer blind for seconds after the database
        # returns, and a shutdown drain has no seconds to spare.
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def write(self, records: list[Record]) -> None:
        if not records:
            return
        try:
            await self._write(records)
        except (psycopg.errors.CharacterNotInRepertoire, UnicodeEncodeError):
            # A string PostgreSQL cannot store (NUL, a lone surrogate).
            await self._write([_storable(r) for r in records])

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        c = self._conn
        if c is None or c.closed or c.broken:
            if c is not None:
                await c.close()
            self._conn = None
            c = self._conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=3, options="-c jit=off"
            )
        return c

    async def _write(self, records: list[Record]) -> None:
        async with self._lock:
            reused = self._conn is not None and not self._conn.closed
            try:
                await self._write_on(await self._connection(), records)
            except psycopg.OperationalError:
                # A connection idle across a server restart fails on first
                # use: retry once on a fresh one rather than fail the batch.
                if self._conn is not None:
                    await self._conn.close()
                    self._conn = None
                if not reused:
                    raise
                await self._write_on(await self._connection(), records)

    async def _write_on(self, c: psycopg.AsyncConnection[Any], records: list[Record]) -> None:
        rows = _copy_rows(records)
        try:
            # Fast path: COPY straight in. A batch that was already stored
            # (retried after an unacknowledged commit, or replayed from the
            # spill file) violates the primary key and takes the slow path.
            async with c.transaction():
                async with c.cursor().copy(_COPY) as copy:
                    copy.set_types(_COPY_TYPES)
                    for row in rows:
                        await copy.write_row(row)
                    # Summed while the server still indexes the last rows.
                    rollups = rollup_rows(records)
                await _add_rollups(c, rollups)
            return
        except psycopg.errors.UniqueViolation:
            pass
        async with c.transaction():
            await c.execute(
                "CREATE TEMP TABLE IF NOT EXISTS requests_stage "
                "(LIKE requests INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            async with c.cursor().copy(_COPY_STAGE) as copy:
                copy.set_types(_COPY_TYPES)
                for row in rows:
                    await copy.write_row(row)
            cur = await c.execute(
                f"INSERT INTO requests ({_COLS}) SELECT {_COLS} FROM requests_stage "
                "ON CONFLICT DO NOTHING RETURNING id"
            )
            # Rollups count only the records this statement stored.
            new_ids = {r[0] for r in await cur.fetchall()}
            fresh = {r.id: r for r in reversed(records) if r.id in new_ids}
            await _add_rollups(c, rollup_rows(fresh.values()))
