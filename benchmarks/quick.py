"""Quick overhead check: wrk against the mock directly and through `lectr serve`,
non-streamed chat completions at 1 and 32 connections.

Run: `python -m benchmarks.quick [--seconds 10]` with `wrk` installed and the
`lectr` package installed in the running interpreter (a release build for
meaningful figures). Prints a Markdown table; loopback only, bounded in time.
The full suite (nginx, LiteLLM, streaming, CPU/RSS) is issue 5.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from devtools.harness import Gateway, Mock

LUA = """
wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
wrk.headers["X-Lectr-Feature"] = "bench"
wrk.headers["X-Lectr-Key"] = os.getenv("LECTR_KEY") or ""
"""


def _ms(v: str) -> float:
    num, unit = re.match(r"([\d.]+)(\w+)", v).groups()  # type: ignore[union-attr]
    return float(num) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, conns: int, seconds: int, script: Path, key: str) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        env={**os.environ, "LECTR_KEY": key},
        check=True,
    ).stdout
    lat = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        **{f"p{k}": _ms(v) for k, v in lat.items()},
        "errors": float(non2xx.group(1) if non2xx else 0),
    }


def _bulk_rules(gw: Gateway, n: int) -> None:
    """Insert `n` rules straight into the SQLite file (the CLI is one process
    per rule; this is a benchmark fixture, not a code path)."""
    import sqlite3
    import time as _t

    db = sqlite3.connect(gw.data_dir / "lectr.db")
    org = db.execute("SELECT id FROM orgs WHERE name = 'bench'").fetchone()[0]
    db.executemany(
        "INSERT INTO routing_rules (id, org_id, name, priority, enabled, match_feature, target_model, "
        "split_percent, created_at) VALUES (?, ?, ?, ?, 1, ?, 'gpt-4o-mini', 100, ?)",
        [(f"rule_b{i}", org, f"r{i}", (i + 1) * 10, f"feature-{i}", _t.time()) for i in range(n)],
    )
    db.execute("UPDATE control_version SET version = version + 1")
    db.commit()
    db.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument(
        "--rules", type=int, default=0, help="routing rules to load (none match the bench traffic)"
    )
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lectr-quick-"))
    script = tmp / "post.lua"
    script.write_text(LUA.replace("os.getenv", "os.getenv"))
    mock = Mock(tmp)
    gw = Gateway(tmp, mock, LECTR_LOG_LEVEL="warning")
    key = gw.create_org("bench")
    if a.rules:
        # Worst case for evaluation: every rule is checked and none matches.
        _bulk_rules(gw, a.rules)
    gw.start()
    rows = []
    try:
        for conns in (1, 32):
            d = wrk(f"{mock.url}/v1/chat/completions", conns, a.seconds, script, key)
            g = wrk(f"{gw.url}/v1/chat/completions", conns, a.seconds, script, key)
            rows.append((conns, d, g))
    finally:
        gw.stop()
        mock.stop()
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {a.seconds}s per run, mock = aiohttp, "
        f"{a.rules} routing rules loaded\n"
    )
    print("| conns | target | req/s | p50 ms | p90 ms | p99 ms | added p50 ms | non-2xx |")
    print("|---|---|---|---|---|---|---|---|")
    for conns, d, g in rows:
        for name, r in (("direct", d), ("lectr", g)):
            added = r["p50"] - d["p50"] if name == "lectr" else 0.0
            print(
                f"| {conns} | {name} | {r['rps']:.0f} | {r['p50']:.3f} | {r['p90']:.3f} | {r['p99']:.3f} "
                f"| {added:.3f} | {r['errors']:.0f} |"
            )


if __name__ == "__main__":
    main()
