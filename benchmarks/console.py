"""Console benchmark on a throwaway PostgreSQL: the render time of every
console page (through a real `lectr serve`, signed in as the admin) for one
org with N stored request records over 30 days (the goal: < 150 ms at p95
on 10 M); the records are bulk-loaded and rolled up as in benchmarks/insights.py.

Run: `PYTHONPATH=. python -m benchmarks.console [--rows 10000000] [--runs 20]`.
Loopback only; everything it starts it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time

import httpx
import psycopg

from benchmarks.insights import ORG, backfill, bulk_load, counts
from devtools.harness import ROOT, stop, wait_http
from devtools.ports import free_port
from devtools.services import Postgres
from lectr.store.postgres import PostgresStore

TOKEN = "console-bench-admin-token"
PAGES = (
    "?range=1h",
    "?range=24h",
    "?range=30d",
    "/overview/live?range=24h",
    "/features?range=30d",
    "/models?range=30d",
    "/requests?range=24h",
    "/requests?range=30d&feature=feature-7&status=5xx",
    "/rules",
    "/limits",
    "/fallbacks",
    "/anomalies",
    "/recommendations",
    "/keys",
)


def signed_in(url: str) -> httpx.Client:
    c = httpx.Client(base_url=url, timeout=30)
    page = c.get("/console/signin")
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert m is not None
    r = c.post("/console/signin", data={"csrf": m.group(1), "token": TOKEN, "next": "/console"})
    assert r.status_code == 303, r.text
    return c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=20)
    a = ap.parse_args()
    pg = Postgres()
    proc = None
    try:
        url = pg.new_database("console_bench")

        async def migrate() -> None:
            s = PostgresStore(url)
            await s.migrate()
            await s.close()

        asyncio.run(migrate())
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("INSERT INTO orgs (id, name, created_at) VALUES (%s, 'bench', %s)", (ORG, time.time()))
        print(f"bulk load of {a.rows:,} records: {bulk_load(url, a.rows):.1f} s", flush=True)
        print(f"rollup backfill: {backfill(url):.1f} s", flush=True)
        print("rows:", counts(url), flush=True)
        port = free_port()
        log = ROOT / ".console-bench.log"
        env = {
            **os.environ,
            "LECTR_DATABASE_URL": url,
            "LECTR_ADMIN_TOKEN": TOKEN,
            "LECTR_LOG_LEVEL": "warning",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "lectr", "serve", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz", proc, log)
        c = signed_in(base)
        worst = 0.0
        for page in PAGES:
            path = f"/console{page}{'&' if '?' in page else '?'}org={ORG}"
            assert c.get(path).status_code == 200, path  # warm
            times = []
            for _ in range(a.runs):
                t = time.perf_counter()
                r = c.get(path)
                times.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200
            p95 = sorted(times)[max(0, int(0.95 * len(times)) - 1)]
            worst = max(worst, p95)
            print(
                f"{page:<50} median {statistics.median(times):6.1f} ms  p95 {p95:6.1f} ms  "
                f"({len(r.content):,} B)",
                flush=True,
            )
        print(f"slowest page p95: {worst:.1f} ms over {a.rows:,} records", flush=True)
        log.unlink(missing_ok=True)
    finally:
        if proc is not None:
            stop(proc)
        pg.destroy()


if __name__ == "__main__":
    main()
