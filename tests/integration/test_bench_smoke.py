"""The benchmark harness, end to end, for a few seconds per scenario
(`python -m benchmarks --smoke`): every target starts and answers, every
figure, table and plot is produced, everything started is stopped. It asserts
no timing — the figures of a smoke run on a busy test machine mean nothing.

It installs what is missing (wrk and nginx with apt-get, LiteLLM into
~/.cache/lectr/bench-venv-litellm: about 1.5 minutes the first time; later
runs take about 2 minutes in all)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.figures import PLOTS
from devtools.harness import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis, pytest.mark.nginx]

TARGETS = ("direct", "granian-static", "granian-proxy", "nginx", "lectr", "lectr-pg", "litellm")
NO_STREAM = ("granian-static",)  # answers the fixed body itself: nothing to relay
VARIANTS = ("lectr-0-rules", "lectr-100-rules", "lectr-redis-limit")


@pytest.mark.timeout(900)
def test_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out), "--no-readme"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = proc.communicate(timeout=860)
    except subprocess.TimeoutExpired:
        proc.terminate()  # the runner stops what it started on SIGTERM
        _, stderr = proc.communicate(timeout=30)
        pytest.fail(f"the smoke run did not finish:\n{stderr[-5000:]}")
    assert proc.returncode == 0, stderr[-5000:]
    res = json.loads((out / "results.json").read_text())
    assert res["failures"] == {}
    for key in ("cpu", "cores", "kernel", "loadavg_before", "loadavg_after"):
        assert key in res["machine"]
    for key in ("python", "lectr", "nginx", "wrk", "litellm"):
        assert res["versions"][key]

    for name in TARGETS:
        t = res["targets"][name]
        answered = {"non_stream": 200} if name in NO_STREAM else {"non_stream": 200, "stream": 200}
        assert t["answered"] == answered, name
        for c in ("1", "4"):
            run = t["latency"][c]
            assert run["requests"] > 0, (name, c)
            assert run["non2xx"] == 0, (name, c)
            assert run["cpu_us_per_req"] is not None, (name, c)
        for c in ("32", "64"):
            run = t["throughput"][c]
            assert run["non2xx"] == 0, (name, c)
            assert run["rss_peak_mib"] > 0, (name, c)
        if name in NO_STREAM:
            assert "streaming" not in t, name
            continue
        s = t["streaming"]
        assert s["ok"] == s["streams"] > 0, name
        assert s["content_events"] == 20, name
        assert len(s["arrival_ms_by_chunk"]) == 20, name
        if name != "direct":
            assert "p50_c1" in t["added"], name
            assert "stream_first_token_ms" in t["added"], name

    for name in ("lectr", "lectr-pg"):
        above = res["targets"][name]["above_floor"]
        assert set(above) == {
            "p50_c1",
            "p99_c4",
            "cpu_us_per_req_c32",
            "stream_first_token_ms",
            "stream_chunk_us",
        }
        cap = res["targets"][name]["streaming"]["capture"]
        assert cap["expected"] > 0, name
        assert "with_usage" in cap, name
    # The agent-protocol streams (Responses, Messages) run direct and through Lectr.
    for name in ("direct", "lectr", "lectr-pg"):
        for proto in ("responses", "messages"):
            ps = res["targets"][name]["streaming"]["protocols"][proto]
            assert ps["ok"] == ps["streams"] > 0, (name, proto)
            assert ps["content_events"] == 20, (name, proto)
            if name != "direct":
                assert ps["capture"]["with_usage"] == ps["capture"]["expected"] > 0, (name, proto)
                assert f"{proto}_first_token_ms" in res["targets"][name]["added"], (name, proto)
    mem = res["targets"]["lectr"]["memory"]
    assert mem["requests"] > 0
    assert mem["samples"]
    assert mem["writer_after"]["written"] > 0
    for name in VARIANTS:
        assert res["extras"][name]["latency"]["1"]["requests"] > 0, name
        assert "p50_c1_vs_0_rules" in res["extras"][name]["added"], name
    assert res["ingest"]["sqlite_per_s"] > 0
    assert res["ingest"]["postgres_per_s"] > 0
    placements = res["ingest_latency"]["placements"]
    assert "shared" in placements  # and "isolated" on a machine with two cores or more
    for placement, s in placements.items():
        assert s["storage"]["written_per_s"] > 0, placement  # it wrote while serving
        assert s["none"]["written_per_s"] == 0, placement  # and the comparison did not
        assert s["storage"]["dropped"] == s["none"]["dropped"] == 0, placement
    assert len(res["goals"]) == 13

    table = (out / "results.md").read_text()
    for name in (*TARGETS, *VARIANTS):
        assert f"| {name} " in table, name
    for placement in placements:
        assert f"| {placement} | PostgreSQL |" in table
    assert "**Above granian's floor**" in table
    for png in PLOTS:
        data = (out / png).read_bytes()
        assert data.startswith(b"\x89PNG"), png
