"""Console benchmark on a throwaway PostgreSQL: the render time of every
console page (through a real `lectr serve`, signed in as the admin) for one
org with N stored request records over 30 days (the goal: < 150 ms at p95
on 10 M); the records are bulk-loaded and rolled up as in benchmarks/insights.py.
Then the gateway's own latency (sequential chat completions to the mock
provider) with no console open, with one overview polling as the page does
(every 5 s), and with five sessions polling every second, in alternating
rounds: open consoles must not move it.

Run: `PYTHONPATH=. python -m benchmarks.console [--rows 10000000] [--runs 20]
[--requests 10000] [--rounds 2]`. Loopback only; everything it starts it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg

from benchmarks.insights import ORG, backfill, bulk_load, counts
from devtools.harness import ROOT, Mock, stop, wait_http
from devtools.ports import free_port
from devtools.services import Postgres
from lectr.store.postgres import PostgresStore

TOKEN = "console-bench-admin-token"
PAGES = (
    "?range=1h",
    "?range=24h",
    "?range=30d",
    "/overview/live?range=24h",  # one render per 4 s: after the warm-up GET, cache hits
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


# (label, sessions, seconds between one session's polls)
POLLING = (("no console", 0, 0.0), ("1 overview, 5 s poll", 1, 5.0), ("5 overviews, 1 s poll", 5, 1.0))


def pct(times: list[float], q: float) -> float:
    return sorted(times)[max(0, int(q * len(times)) - 1)]


def gateway_latency(base: str, key: str, n: int, sessions: int, every: float) -> list[float]:
    """`n` sequential chat completions through the gateway, in ms, while
    `sessions` signed-in consoles fetch the overview's live fragment."""
    stop_polls = threading.Event()
    polls = [0]

    def poll(c: httpx.Client) -> None:
        try:
            while True:  # at least one poll, then one per period until the leg ends
                assert c.get(f"/console/overview/live?org={ORG}&range=24h").status_code == 200
                polls[0] += 1
                if stop_polls.wait(every):
                    return
        finally:
            c.close()

    clients = [signed_in(base) for _ in range(sessions)]
    threads = [threading.Thread(target=poll, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"X-Lectr-Key": key, "Authorization": "Bearer sk-bench", "X-Lectr-Feature": "bench"}
    times = []
    with httpx.Client(base_url=base, timeout=30) as c:
        for _ in range(n):
            t = time.perf_counter()
            r = c.post("/v1/chat/completions", json=body, headers=headers)
            times.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200, r.text
    stop_polls.set()
    for t in threads:
        t.join()
    assert polls[0] >= sessions
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--requests", type=int, default=10_000, help="per latency leg")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--database-url", help="a database to use instead of a throwaway one: loaded once, reused after"
    )
    a = ap.parse_args()
    pg = None if a.database_url else Postgres()
    scratch = tempfile.TemporaryDirectory(prefix="lectr-console-bench-")
    mock = Mock(Path(scratch.name))
    proc = None
    try:
        url = a.database_url or pg.new_database("console_bench") if pg else a.database_url

        async def migrate() -> None:
            s = PostgresStore(url)
            await s.migrate()
            await s.close()

        asyncio.run(migrate())
        with psycopg.connect(url, autocommit=True) as c:
            loaded = c.execute("SELECT 1 FROM orgs WHERE id = %s", (ORG,)).fetchone() is not None
            if not loaded:
                c.execute(
                    "INSERT INTO orgs (id, name, created_at) VALUES (%s, 'bench', %s)", (ORG, time.time())
                )
        if not loaded:
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
            "LECTR_OPENAI_BASE_URL": mock.url + "/v1",
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
        print("load average before the pages:", *(f"{x:.2f}" for x in os.getloadavg()), flush=True)
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
            p95 = pct(times, 0.95)
            worst = max(worst, p95)
            print(
                f"{page:<50} median {statistics.median(times):6.1f} ms  p95 {p95:6.1f} ms  "
                f"({len(r.content):,} B)",
                flush=True,
            )
        print(f"slowest page p95: {worst:.1f} ms over {a.rows:,} records", flush=True)
        admin = {"Authorization": f"Bearer {TOKEN}"}
        key = httpx.post(f"{base}/admin/orgs/{ORG}/keys", headers=admin, timeout=30).json()["key"]
        gateway_latency(base, key, 200, 0, 0.0)  # warm
        print("load average before the latency legs:", *(f"{x:.2f}" for x in os.getloadavg()), flush=True)
        for rnd in range(a.rounds):
            for label, sessions, every in POLLING:
                times = gateway_latency(base, key, a.requests, sessions, every)
                print(
                    f"round {rnd + 1} {label:<22} gateway p50 {statistics.median(times):.3f} ms  "
                    f"p95 {pct(times, 0.95):.3f} ms  p99 {pct(times, 0.99):.3f} ms",
                    flush=True,
                )
        log.unlink(missing_ok=True)
    finally:
        if proc is not None:
            stop(proc)
        mock.stop()
        if pg is not None:
            pg.destroy()
        scratch.cleanup()


if __name__ == "__main__":
    main()
