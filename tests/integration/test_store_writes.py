"""The record writer's store path on both backends: client-controlled strings
stored exactly, every batch size, repeated and replayed ids counted once in
the rollups, SQLite batches in a handful of statements, and PostgreSQL
deduplicating rows that an earlier version of the writer stored."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import psycopg
import pytest

from devtools.services import Postgres
from lectr.store.base import Store
from lectr.store.postgres import PostgresStore
from lectr.store.rollups import SUM_COLS, rollup_rows
from lectr.store.sqlite import SQLiteStore
from lectr.types import RECORD_FIELDS, LogFilter, Record
from tests.integration.test_store import backend, rec, store  # noqa: F401 - fixtures

# Everything COPY's text format escapes or could mistake for something else,
# and UTF-8 beyond ASCII.
NASTY = [
    "tab\there",
    "line\nbreak",
    "carriage\rreturn",
    "back\\slash",
    "\\N",
    "x\\N",
    "\\.",
    "\\",
    "trailing\\",
    "None",
    "null",
    "",
    " ",
    'quote"s, commas',
    "ünïcødé ✓ 𝄞 中文",
    "\t\n\r\\\\N\\t",
    "\x01\x1f\x7f",
]


async def test_client_strings_are_stored_exactly(store: Store) -> None:  # noqa: F811
    now = time.time()
    records = [
        rec(
            "o",
            now - i,
            feature=s,
            task=s,
            model_requested=s,
            model_actual=s[::-1],
            rule_id=s,
            fallback_used=s,
            error_category=s,
            endpoint="/v1/" + s,
        )
        for i, s in enumerate(NASTY)
    ]
    await store.write_records(records)
    page, _ = await store.query_requests(LogFilter(org_id="o"), limit=100)
    assert len(page) == len(records)
    for got, want in zip(page, records, strict=True):
        assert got.ts == pytest.approx(want.ts, abs=1e-6)
        assert msgspec.structs.replace(got, ts=want.ts) == want
    # The filters match the exact strings too.
    for s in NASTY:
        page, _ = await store.query_requests(LogFilter(org_id="o", feature=s))
        assert [r.feature for r in page] == [s]


async def test_a_nul_does_not_stall_the_batch(store: Store) -> None:  # noqa: F811
    """PostgreSQL text cannot hold NUL: it is stored as U+FFFD (SQLite keeps
    it); either way the batch is stored instead of failing on every retry."""
    now = time.time()
    records = [rec("o", now, model_requested="gpt\x00-4o"), rec("o", now - 1)]
    await store.write_records(records)
    page, _ = await store.query_requests(LogFilter(org_id="o"))
    assert len(page) == 2
    assert page[0].model_requested in ("gpt\x00-4o", "gpt\ufffd-4o")
    assert await rollup_totals(store, "o") == expected_totals(records)


async def rollup_totals(s: Store, org: str) -> dict[str, list[float]]:
    """Per rollup table, the sum of every sum column for the org."""
    out = {}
    for table in ("rollup_minute", "rollup_hour", "rollup_day"):
        rows = await s._fetch(  # type: ignore[attr-defined]
            f"SELECT {', '.join(f'sum({c})' for c in SUM_COLS)} FROM {table} WHERE org_id = %s", (org,)
        )
        out[table] = [float(v or 0) for v in rows[0]]
    return out


def expected_totals(records: list[Record]) -> dict[str, list[float]]:
    out = {}
    for table, rows in rollup_rows(records).items():
        width = len(SUM_COLS)
        out[table] = [float(sum(r[-width + i] for r in rows)) for i in range(width)]
    return out


def assert_totals(got: dict[str, list[float]], want: dict[str, list[float]]) -> None:
    for table, sums in want.items():
        assert got[table] == pytest.approx(sums, rel=1e-9), table


async def test_every_batch_size_and_replays_count_once(store: Store) -> None:  # noqa: F811
    now = time.time()
    sizes = [1, 2, 3, 7, 255, 256, 257, 1000, 1025, 1500]
    records = [
        rec("o", now - 3600 + i * 0.5, feature=f"f{i % 7}", latency_ms=0.5 + (i % 300) * 37.3)
        for i in range(sum(sizes))
    ]
    start = 0
    for n in sizes:
        await store.write_records(records[start : start + n])
        start += n
    assert await store.count_records("o") == len(records)
    want = expected_totals(records)
    assert_totals(await rollup_totals(store, "o"), want)

    # A replayed batch, one half stored and half new, and one that repeats
    # its own ids: every record is stored and rolled up once.
    await store.write_records(records[:300])
    more = [rec("o", now - 10 + i * 0.01, feature="g") for i in range(600)]
    await store.write_records(records[-300:] + more[:300])
    await store.write_records(more[300:] + more[300:] + more[:10])
    assert await store.count_records("o") == len(records) + len(more)
    assert_totals(await rollup_totals(store, "o"), expected_totals(records + more))


async def test_sqlite_writes_a_batch_in_a_few_statements(tmp_path: Path) -> None:
    """Not one statement per row: the sqlite3 module releases the GIL around
    every statement step, and a busy event loop makes each re-acquire wait."""
    s = SQLiteStore(tmp_path / "lectr.db")
    await s.migrate()
    statements: list[str] = []
    await s._run(lambda c: c.set_trace_callback(statements.append))
    now = time.time()
    await s.write_records([rec("o", now - i * 0.01, feature=f"f{i % 30}") for i in range(1000)])
    await s._run(lambda c: c.set_trace_callback(None))
    assert await s.count_records("o") == 1000
    # BEGIN, the rows (256 at a time), rollups (16 rows at a time), COMMIT.
    assert len(statements) <= 2 + 4 + 3 * 4, [q[:60] for q in statements]
    await s.close()


@pytest.fixture
def pg_url(postgres: Postgres) -> str:
    return postgres.new_database("w")


async def test_postgres_dedupes_rows_stored_by_earlier_writers(pg_url: str) -> None:
    """Earlier versions sent timestamps as datetimes: a batch they stored and
    that is replayed now must match their (ts, id) keys exactly."""
    s = PostgresStore(pg_url)
    await s.migrate()
    now = time.time()
    # Sub-microsecond fractions close to .5, where a different rounding shows.
    records = [rec("o", now - i * 1.0000005 - 0.0000004999) for i in range(200)]
    with (
        psycopg.connect(pg_url) as c,
        c.cursor().copy(f"COPY requests ({', '.join(RECORD_FIELDS)}) FROM STDIN") as copy,
    ):
        for r in records[:100]:
            row = list(msgspec.structs.astuple(r))
            row[RECORD_FIELDS.index("ts")] = datetime.fromtimestamp(r.ts, UTC)
            copy.write_row(row)
    await s.write_records(records)
    assert await s.count_records("o") == 200
    # Only the 100 the earlier writer had not stored were rolled up now.
    assert_totals(await rollup_totals(s, "o"), expected_totals(records[100:]))
    await s.close()
