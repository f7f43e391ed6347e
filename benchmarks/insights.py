"""Insights benchmark on a throwaway PostgreSQL: the overview of one org with
10 M request records over 30 days, answered from rollups (the goal: < 200 ms),
next to the same figures scanned from the raw records; plus the one-time
rollup backfill of migration 0004, writer ingest with rollups, and a detector
tick.

Run: `PYTHONPATH=. python -m benchmarks.insights [--rows 10000000] [--runs 20]`.
Loopback only; everything it starts it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
import uuid
from importlib import resources

import psycopg

from devtools.services import Postgres
from lectr.gateway.pricing import PriceTable
from lectr.insights.anomalies import Detector
from lectr.insights.recommendations import DowngradeMap
from lectr.insights.service import Insights
from lectr.store.postgres import PostgresStore
from lectr.types import Record

ORG = "org_bench"


def bulk_load(url: str, rows: int) -> float:
    """`rows` records of one org spread over the last 30 days: 20 features,
    4 models, 3 tasks, 10 % routed, 2 % errors, latencies 50-3050 ms."""
    start = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(
            """INSERT INTO requests (id, ts, org_id, endpoint, provider, provider_unknown,
                   model_requested, model_actual, rule_id, status_code, error_category, error_source,
                   streaming, latency_ms, ttfb_ms, prompt_tokens, completion_tokens, cached_tokens,
                   token_source, cost_usd, feature, task)
               SELECT md5(g::text), now() - (g %% 2592000) * interval '1 second', %s,
                   '/v1/chat/completions', 'openai', false,
                   (ARRAY['gpt-4o', 'gpt-4o-mini', 'gpt-4.1', 'o3'])[1 + (g / 20) %% 4],
                   CASE WHEN g %% 10 = 0 THEN 'gpt-4o-mini'
                        ELSE (ARRAY['gpt-4o', 'gpt-4o-mini', 'gpt-4.1', 'o3'])[1 + (g / 20) %% 4] END,
                   CASE WHEN g %% 10 = 0 THEN 'rule_bench' END,
                   CASE WHEN g %% 50 = 0 THEN 500 ELSE 200 END,
                   CASE WHEN g %% 50 = 0 THEN 'server_error' END,
                   CASE WHEN g %% 50 = 0 THEN 'provider' END,
                   g %% 3 = 0, 50 + (g::bigint * 7919) %% 3000, 30, 300 + g %% 700, 20 + g %% 300, 0,
                   'provider', 0.000117 + (g %% 13) * 0.00001, 'feature-' || (g %% 20),
                   (ARRAY['classification', 'generation', 'reasoning'])[1 + (g / 80) %% 3]
               FROM generate_series(1, %s) g""",
            (ORG, rows),
        )
        c.execute("ANALYZE requests")
    return time.perf_counter() - start


def backfill(url: str) -> float:
    """Roll up the bulk-loaded records with migration 0004's own backfill SQL."""
    text = resources.files("lectr").joinpath("store/migrations/postgres/0004_insights.sql").read_text()
    sql = text[text.index("-- Records stored before this migration") :]
    start = time.perf_counter()
    with psycopg.connect(url) as c:  # one transaction, as the migration runs
        c.execute(sql.encode())
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("ANALYZE rollup_minute; ANALYZE rollup_hour; ANALYZE rollup_day")
    return time.perf_counter() - start


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as c:
        out = {}
        for t in ("requests", "rollup_minute", "rollup_hour", "rollup_day"):
            row = c.execute(f"SELECT count(*) FROM {t}").fetchone()
            out[t] = int(row[0]) if row else 0
        return out


async def overview_times(url: str, runs: int) -> dict[str, tuple[float, float, int, int]]:
    store = PostgresStore(url)
    ins = Insights(store, PriceTable.load(), DowngradeMap.load())
    out = {}
    for label, seconds in (("1 h", 3600), ("24 h", 86400), ("7 d", 7 * 86400), ("30 d", 30 * 86400)):
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            now = time.time()
            ov = await ins.overview(ORG, now - seconds, now)
            times.append((time.perf_counter() - t) * 1000)
        out[label] = (statistics.median(times), max(times), ov.totals.requests, len(ov.by_feature))
    await store.close()
    return out


def raw_scan(url: str) -> tuple[float, int]:
    """The 30-day totals and p95 straight from the records, for contrast."""
    with psycopg.connect(url) as c:
        t = time.perf_counter()
        row = c.execute(
            "SELECT count(*), sum(cost_usd), percentile_disc(0.95) WITHIN GROUP (ORDER BY latency_ms) "
            "FROM requests WHERE org_id = %s AND ts >= now() - interval '30 days'",
            (ORG,),
        ).fetchone()
        return (time.perf_counter() - t) * 1000, int(row[0]) if row else 0


def synthetic(n: int) -> list[Record]:
    """Writer batches as a busy instance sends them: 1000 records a second."""
    now = time.time()
    return [
        Record(
            id=uuid.uuid4().hex,
            ts=now - i * 0.001,
            org_id="org_ingest",
            endpoint="/v1/chat/completions",
            provider="openai",
            model_requested="gpt-4o-mini",
            model_actual="gpt-4o-mini",
            status_code=200,
            latency_ms=100 + i % 400,
            prompt_tokens=300,
            completion_tokens=120,
            cost_usd=0.000117,
            feature=f"feature-{i % 20}",
            task="generation",
        )
        for i in range(n)
    ]


async def ingest(url: str, n: int, batch: int = 1000) -> float:
    """Records per second through `write_records` (records and rollups)."""
    store = PostgresStore(url)
    records = synthetic(n)
    start = time.perf_counter()
    for i in range(0, n, batch):
        await store.write_records(records[i : i + batch])
    elapsed = time.perf_counter() - start
    await store.close()
    return n / elapsed


async def detector_ticks(url: str) -> tuple[float, float]:
    """The first tick (samples for 7 days) and a steady one (one new window)."""
    store = PostgresStore(url)
    det = Detector(store)
    now = time.time()
    t = time.perf_counter()
    await det.tick(now)
    first = time.perf_counter() - t
    t = time.perf_counter()
    await det.tick(now + 300)
    steady = time.perf_counter() - t
    await store.close()
    return first, steady


def main() -> None:
    logging.getLogger("lectr.insights").setLevel(logging.ERROR)  # synthetic data ends abruptly
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--ingest", type=int, default=200_000)
    a = ap.parse_args()
    pg = Postgres()
    try:
        with psycopg.connect(pg.dsn("postgres"), autocommit=True) as c:
            c.execute("CREATE DATABASE bench")
        url = pg.dsn("bench")

        async def migrate() -> None:
            s = PostgresStore(url)
            await s.migrate()
            await s.close()

        asyncio.run(migrate())
        print(f"bulk load of {a.rows:,} records: {bulk_load(url, a.rows):.1f} s", flush=True)
        print(f"rollup backfill (migration 0004 on existing records): {backfill(url):.1f} s", flush=True)
        print("rows:", counts(url), flush=True)
        for label, (median, worst, n, features) in asyncio.run(overview_times(url, a.runs)).items():
            print(
                f"overview {label:>5}: median {median:6.1f} ms, max {worst:6.1f} ms "
                f"({n:,} requests, {features} features)",
                flush=True,
            )
        ms, n = raw_scan(url)
        print(
            f"raw scan of the same 30 days (count, cost, exact p95): {ms:,.0f} ms over {n:,} records",
            flush=True,
        )
        first, steady = asyncio.run(detector_ticks(url))
        print(
            f"detector tick: first (7 days of samples) {first:.2f} s, steady {steady * 1000:.0f} ms",
            flush=True,
        )
        print(f"writer ingest with rollups: {asyncio.run(ingest(url, a.ingest)):,.0f} records/s", flush=True)
    finally:
        pg.destroy()


if __name__ == "__main__":
    main()
