"""Record writes into SQLite: request rows and their rollup deltas by
multi-row statements, in one transaction, each record counted once."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from typing import Any

import msgspec

from lectr.store.rollups import KEY_COLS, SUM_COLS, rollup_rows, sqlite_upserts
from lectr.types import RECORD_FIELDS, Record

_INSERT = f"INSERT OR IGNORE INTO requests ({', '.join(RECORD_FIELDS)})"
# Which of some ids are stored, as one JSON array (one row: one step).
_HELD = "SELECT json_group_array(id) FROM requests WHERE id IN (SELECT value FROM json_each(?))"
_UPSERTS = dict(sqlite_upserts())
_KEYS = len(KEY_COLS)
_ZEROS = tuple(0.0 if c in ("cost_usd", "latency_ms_sum") else 0 for c in SUM_COLS)
_astuple = msgspec.structs.astuple
_ids = msgspec.json.Encoder().encode
_id_set = msgspec.json.Decoder(set[str]).decode


@functools.lru_cache(maxsize=64)
def _values_sql(head: str, width: int, rows: int, tail: str) -> str:
    """`head`, a VALUES list of `rows` rows of `width` placeholders, `tail`."""
    one = f"({', '.join('?' * width)})"
    return f"{head} VALUES {', '.join([one] * rows)}{tail}"


def _many(
    c: sqlite3.Connection,
    head: str,
    rows: list[tuple[Any, ...]],
    filler: tuple[Any, ...],
    most: int,
    tail: str = "",
) -> int:
    """Run `head VALUES (...), (...) tail` over the rows in as few statements
    as possible, at most `most` rows (a power of two) each; the number of
    rows changed.

    Multi-row statements rather than `executemany`: the sqlite3 module lets
    go of the GIL around every step, i.e. per row, and while the event loop
    thread is busy each re-acquire can wait out the 5 ms switch interval.
    The last statement is filled up to a power of two with `filler`, a row
    that changes nothing, so that a handful of statements serves every batch
    size and stays in the statement cache. (Prepared statements cost memory,
    about 1 MiB for 256 request rows: hence the callers' caps.)"""
    if not rows:
        return 0
    width = len(rows[0])
    # Stay within the bound-parameter limit whatever the build's is.
    while most > 1 and most * width > c.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER):
        most //= 2
    changed = 0
    for start in range(0, len(rows), most):
        piece = rows[start : start + most]
        size = 1 << (len(piece) - 1).bit_length()
        params = [v for row in piece for v in row]
        params += filler * (size - len(piece))
        changed += c.execute(_values_sql(head, width, size, tail), params).rowcount
    return changed


def _insert(c: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> int:
    """INSERT OR IGNORE request rows; how many were new. (Filled up with the
    last row again: ignored, its id is taken.)"""
    return _many(c, _INSERT, rows, rows[-1] if rows else (), 256)


def _add_rollups(c: sqlite3.Connection, sums: dict[str, list[tuple[Any, ...]]]) -> None:
    """Add rollup deltas (`rollup_rows`), one statement per table. (Filled up
    with zero deltas to the last row's key.)"""
    for table, rows in sums.items():
        if rows:
            head, tail = _UPSERTS[table]
            _many(c, head, rows, (*rows[-1][:_KEYS], *_ZEROS), 16, tail)


def batch_write(records: list[Record]) -> Callable[[sqlite3.Connection], None]:
    """The storing of `records` as the store's thread runs it: SQL only."""
    # The Python work happens here, on the caller's thread (the event loop).
    # Python on the store's thread would hold the GIL against the loop for up
    # to the 5 ms switch interval at a time (measured: the loop stalled ~5 ms
    # per flush, the gateway's p99 at 1 connection went from 0.7 to 3 ms);
    # SQLite's steps run with the GIL released.
    rows = [_astuple(r) for r in records]
    sums = rollup_rows(records)

    def _write(c: sqlite3.Connection) -> None:
        c.execute("BEGIN IMMEDIATE")
        try:
            fresh = sums
            if _insert(c, rows) != len(rows):
                # Some were not stored (a retried or replayed batch, a
                # repeated id): again, noting which ids were new, so
                # that the rollups count each record once.
                c.execute("ROLLBACK")
                c.execute("BEGIN IMMEDIATE")
                ids = _ids([r.id for r in records])
                held = _id_set(c.execute(_HELD, (ids,)).fetchone()[0])
                _insert(c, rows)
                new = _id_set(c.execute(_HELD, (ids,)).fetchone()[0]) - held
                fresh = rollup_rows({r.id: r for r in reversed(records) if r.id in new}.values())
            _add_rollups(c, fresh)
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise

    return _write
