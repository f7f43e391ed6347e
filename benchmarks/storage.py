"""Storage benchmarks on a throwaway PostgreSQL: writer ingest rate, log query
latency on 10 M rows (with the plan), and gateway RSS while exporting 1 M rows
as CSV.

Run: `PYTHONPATH=. python -m benchmarks.storage [--rows 10000000] [--ingest 300000]`;
`--only ingest` measures just the ingest (`write_records` in batches of
`--batch`, then the gateway's `RecordWriter` with its default batch size).
Loopback only; everything it starts it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg

from devtools.harness import Gateway, Mock
from devtools.services import Postgres
from lectr.capture.writer import RecordWriter
from lectr.config import WriterSettings
from lectr.store.base import Store
from lectr.store.postgres import PostgresStore
from lectr.types import LogFilter, Record


def synthetic(n: int, org: str) -> list[Record]:
    now = time.time()
    return [
        Record(
            id=uuid.uuid4().hex,
            ts=now - i * 0.001,
            org_id=org,
            endpoint="/v1/chat/completions",
            provider="openai",
            model_requested="gpt-4o-mini",
            model_actual="gpt-4o-mini",
            status_code=200,
            streaming=i % 3 == 0,
            latency_ms=120.5,
            ttfb_ms=40.2,
            prompt_tokens=300,
            completion_tokens=120,
            cached_tokens=0,
            token_source="provider",
            cost_usd=0.000117,
            feature=f"feature-{i % 20}",
            task="generation",
        )
        for i in range(n)
    ]


async def ingest(url: str, n: int, batch: int) -> float:
    store = PostgresStore(url)
    await store.migrate()
    records = synthetic(n, "org_ingest")
    start = time.perf_counter()
    for i in range(0, n, batch):
        await store.write_records(records[i : i + batch])
    elapsed = time.perf_counter() - start
    await store.close()
    return n / elapsed


async def ingest_writer(
    store: Store, n: int, batch: int | None = None, spill_dir: Path | None = None
) -> float:
    """Records per second through the gateway's own capture pipeline
    (`RecordWriter`, default batch size) into `store`: `n` records queued at
    once, timed until the last one is written."""
    import tempfile

    await store.migrate()
    org = await store.create_org(f"ingest-{uuid.uuid4().hex[:8]}")
    records = synthetic(n, org.id)
    writer = RecordWriter(
        store,
        queue_size=n + 1,
        batch_size=batch or WriterSettings().batch_size,
        interval=0.2,
        spill_dir=spill_dir or Path(tempfile.mkdtemp(prefix="lectr-spill-")),
    )
    task = asyncio.ensure_future(writer.run())
    start = time.perf_counter()
    for r in records:
        writer.submit(r)
    while writer.stats.written < n:
        if task.done():
            task.result()
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - start
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await store.close()
    return n / elapsed


def bulk_load(url: str, rows: int) -> float:
    """10 M rows over the last 30 days in the day partitions, 20 features, 50 orgs."""
    start = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(
            """INSERT INTO requests (id, ts, org_id, endpoint, provider, provider_unknown,
                   model_requested, model_actual, status_code, streaming, latency_ms, ttfb_ms,
                   prompt_tokens, completion_tokens, cached_tokens, token_source, cost_usd, feature, task)
               SELECT md5(g::text), now() - (g %% 2592000) * interval '1 second', 'org_' || (g %% 50),
                   '/v1/chat/completions', 'openai', false, 'gpt-4o-mini', 'gpt-4o-mini',
                   CASE WHEN g %% 50 = 0 THEN 500 ELSE 200 END, g %% 3 = 0, 100 + g %% 400, 30, 300, 120, 0,
                   'provider', 0.000117, 'feature-' || (g %% 20), 'generation'
               FROM generate_series(1, %s) g""",
            (rows,),
        )
        c.execute("ANALYZE requests")
    return time.perf_counter() - start


async def query(url: str, runs: int = 20) -> tuple[float, float, str]:
    store = PostgresStore(url)
    f = LogFilter(org_id="org_7", feature="feature-7", since=time.time() - 7 * 86400)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        page, _ = await store.query_requests(f, None, 100)
        times.append((time.perf_counter() - t) * 1000)
    assert len(page) == 100
    await store.close()
    with psycopg.connect(url) as c:
        plan = "\n".join(
            r[0]
            for r in c.execute(
                "EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM requests WHERE org_id = 'org_7' "
                "AND feature = 'feature-7' AND ts >= now() - interval '7 days' "
                "ORDER BY ts DESC, id DESC LIMIT 101"
            )
        )
    return statistics.median(times), max(times), plan


def rss_kb(pid: int) -> int:
    total = 0
    for child in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{child}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []
    return kids + [g for k in kids for g in _children(k)]


def export_rss(url: str, org_rows: int) -> tuple[int, int, int, float]:
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="lectr-bench-"))
    mock = Mock(tmp)
    gw = Gateway(tmp, mock, LECTR_DATABASE_URL=url, LECTR_ADMIN_TOKEN="bench", LECTR_LOG_LEVEL="warning")
    gw.cli("orgs", "create", "exporter")
    org_id = gw.cli("orgs", "list").splitlines()[1].split()[0]
    with psycopg.connect(url, autocommit=True) as c:
        # Five of the 50 synthetic orgs make one org of ~1 M rows (at 10 M).
        c.execute(
            "UPDATE requests SET org_id = %s WHERE org_id IN ('org_1', 'org_2', 'org_3', 'org_4', 'org_5')",
            (org_id,),
        )
        n = c.execute("SELECT count(*) FROM requests WHERE org_id = %s", (org_id,)).fetchone()[0]  # type: ignore[index]
    gw.start()
    assert gw.proc is not None
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(rss_kb(gw.proc.pid))  # type: ignore[union-attr]
            time.sleep(0.25)

    before = rss_kb(gw.proc.pid)
    t = threading.Thread(target=sample)
    t.start()
    start = time.perf_counter()
    lines = 0
    with httpx.stream(
        "GET",
        f"{gw.url}/admin/orgs/exporter/requests.csv",
        headers={"Authorization": "Bearer bench"},
        timeout=600,
    ) as r:
        for chunk in r.iter_bytes():
            lines += chunk.count(b"\r\n")
    elapsed = time.perf_counter() - start
    stop.set()
    t.join()
    gw.stop()
    mock.stop()
    assert lines - 1 == n, (lines, n)
    return n, before, max(samples), elapsed


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--ingest", type=int, default=300_000)
    p.add_argument("--batch", type=int, default=5_000)
    p.add_argument("--only", choices=["ingest"], help="run just this part")
    a = p.parse_args()
    pg = Postgres()
    try:
        rate = asyncio.run(ingest(pg.url, a.ingest, a.batch))
        print(f"ingest: {a.ingest} records in batches of {a.batch}: {rate:,.0f} records/s", flush=True)
        if a.only == "ingest":
            rate = asyncio.run(ingest_writer(PostgresStore(pg.url), a.ingest))
            print(f"ingest: {a.ingest} records through RecordWriter (batch 1000): {rate:,.0f} records/s")
            return
        load_s = bulk_load(pg.url, a.rows)
        print(f"bulk load: {a.rows:,} rows in {load_s:.0f}s", flush=True)
        med, worst, plan = asyncio.run(query(pg.url))
        print(
            f"log query (org + feature + last 7 days, 100 rows) on {a.rows:,} rows: "
            f"median {med:.2f} ms, max {worst:.2f} ms\n{plan}",
            flush=True,
        )
        n, before, peak, secs = export_rss(pg.url, a.rows)
        print(
            f"CSV export of {n:,} rows through the admin API: {secs:.1f}s, "
            f"gateway RSS {before / 1024:.0f} MiB before, {peak / 1024:.0f} MiB peak",
            flush=True,
        )
    finally:
        pg.destroy()


if __name__ == "__main__":
    main()
