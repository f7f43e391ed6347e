"""Metrics and dashboards end to end: two-worker gateway, mock provider, real Prometheus, the store."""

from __future__ import annotations

import glob
import json
import math
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from devtools.harness import Gateway, Mock
from devtools.ports import free_port
from devtools.services import Prometheus
from grafana import generate

PROVIDER_KEY = "sk-test-provider-key-0123456789"
# Grafana's variables as the test evaluates them: "All" for every template
# variable, windows wide enough for a 1 s scrape interval and a short test.
SUBSTITUTIONS = {
    "__rate_interval": "1m",
    "__range": "5m",
    "org": ".*",
    "feature": ".*",
    "provider": ".*",
    "model": ".*",
}
METRIC_NAME = re.compile(r"\blectr_[a-z0-9_]+")
LABEL_VALUES = re.compile(r"^label_values\((?P<match>.+),\s*(?P<label>\w+)\)$")


# --- helpers ------------------------------------------------------------------


def substitute(expr: str) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        assert name in SUBSTITUTIONS, f"unknown variable ${name} in {expr}"
        return SUBSTITUTIONS[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((generate.DASHBOARDS).glob("*.json"))}


def targets() -> Iterator[tuple[str, str, str]]:
    """(dashboard, panel title, expr) for every query of every panel."""
    for name, d in dashboards().items():
        for panel in generate.panels(d):
            for t in panel["targets"]:
                yield name, panel["title"], t["expr"]


def query_variables() -> Iterator[tuple[str, str, str]]:
    for name, d in dashboards().items():
        for v in d["templating"]["list"]:
            if v["type"] == "query":
                yield name, v["name"], v["query"]


def scrape(gw: Gateway) -> str:
    r = httpx.get(f"{gw.url}/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


Samples = list[tuple[str, dict[str, str], float]]


def samples(text: str) -> Samples:
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def total(ss: Samples, name: str, **labels: str) -> float:
    return sum(v for n, lab, v in ss if n == name and all(lab.get(k) == x for k, x in labels.items()))


def by(ss: Samples, name: str, *keys: str) -> Counter[tuple[str, ...]]:
    out: Counter[tuple[str, ...]] = Counter()
    for n, lab, v in ss:
        if n == name and v:
            out[tuple(lab[k] for k in keys)] += round(v)
    return out


def rows(gw: Gateway) -> list[dict[str, Any]]:
    conn = sqlite3.connect(gw.data_dir / "lectr.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM requests")]
    finally:
        conn.close()


def contained(a: Any, b: Any) -> bool:
    """Whether `b` holds everything `a` does (b may have more dict keys)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and all(k in b and contained(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(contained, a, b))
    return bool(a == b)


def per_worker_requests(mp_dir: Path) -> dict[str, float]:
    """lectr_requests_total as each worker process wrote it to its own file."""
    out = {}
    for f in glob.glob(str(mp_dir / "counter_*.db")):
        pid = Path(f).stem.split("_")[1]
        out[pid] = sum(
            s.value
            for fam in MultiProcessCollector.merge([f])
            if fam.name == "lectr_requests"
            for s in fam.samples
        )
    return out


# --- traffic ------------------------------------------------------------------


def _post(gw: Gateway, key: str | None, body: Any, path: str = "/v1/chat/completions", **h: str) -> int:
    headers = {"Authorization": f"Bearer {PROVIDER_KEY}", **h}
    if key:
        headers["X-Lectr-Key"] = key
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    # A new connection per request, so the kernel spreads them over the workers.
    return httpx.post(gw.url + path, content=data, headers=headers, timeout=30).status_code


def _stream(gw: Gateway, key: str, body: dict[str, Any], **h: str) -> None:
    headers = {"Authorization": f"Bearer {PROVIDER_KEY}", "X-Lectr-Key": key, **h}
    body = {**body, "stream": True}
    try:
        with httpx.stream(
            "POST", gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=30
        ) as r:
            r.read()
    except httpx.RemoteProtocolError:
        pass  # the interrupted stream ends without its terminating chunk


def chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}]}


def send_mix(gw: Gateway, acme: str, globex: str) -> int:
    """Features, tasks, providers, errors and streams; returns how many
    requests reach a record (authentication rejections do not)."""
    f = "X-Lectr-Feature"
    t = "X-Lectr-Task"
    codes = [
        _post(gw, acme, chat("gpt-4o-mini"), **{f: "search", t: "classification"}),
        _post(gw, acme, chat("gpt-4o-mini"), **{f: "search", t: "classification"}),
        _post(gw, acme, chat("llama-3.1-8b-instant"), **{f: "summarise", t: "summarisation"}),
        _post(gw, acme, chat("gemini-2.0-flash")),  # untagged, no task
        _post(gw, acme, chat("gpt-4.1-mini"), **{f: "extract", t: "my-own-task"}),
        _post(
            gw,
            acme,
            {"model": "text-embedding-3-small", "input": ["a", "b"]},
            "/v1/embeddings",
            **{f: "search"},
        ),
        _post(gw, acme, chat("acme-custom-1"), **{f: "search"}),  # unknown model: unpriced
        _post(gw, acme, chat("gpt-4o-mini"), **{f: "search", "x-mock-status": "500"}),
        _post(gw, acme, chat("gpt-4o-mini"), **{f: "chat", "x-mock-status": "429"}),
        _post(gw, acme, chat("gpt-4o-mini"), **{f: "chat", "x-mock-status": "400"}),
        _post(gw, acme, {"messages": []}, **{f: "chat"}),  # no model: the gateway's 400
        _post(gw, globex, chat("gpt-4o-mini"), **{f: "search", t: "extraction"}),
        _post(gw, globex, chat("gpt-4o-mini"), **{f: "search", "X-Lectr-Provider": "azure"}),  # refused
        _post(gw, globex, chat("gpt-4o-mini"), **{f: "failover", "X-Lectr-Provider": "azure"}),  # fallback
    ]
    assert codes == [200, 200, 200, 200, 200, 200, 200, 500, 429, 400, 400, 200, 502, 200], codes
    assert httpx.get(gw.url + "/v1/models", headers={"X-Lectr-Key": acme}).status_code == 200
    _stream(gw, acme, chat("gpt-4o-mini"), **{f: "chat", t: "generation", "x-mock-chunks": "40"})
    _stream(
        gw,
        acme,
        {**chat("claude-3-5-haiku"), "stream_options": {"include_usage": True}},
        **{f: "chat", t: "generation", "x-mock-cached": "4"},
    )
    _stream(gw, acme, chat("gpt-4o-mini"), **{f: "chat", "x-mock-no-usage": "1"})  # estimated
    _stream(gw, acme, chat("gpt-4o-mini"), **{f: "chat", "x-mock-reset-after": "2"})  # interrupted
    # Refused before an org is known: counted as authentication rejections only.
    assert _post(gw, None, chat("gpt-4o-mini")) == 401
    assert _post(gw, "lc_key_" + "x" * 43, chat("gpt-4o-mini")) == 401
    return len(codes) + 1 + 4


def wait_consistent(gw: Gateway, prom: Prometheus, expected: int, timeout: float = 20.0) -> None:
    """Until the store, /metrics and Prometheus all hold `expected` requests."""
    deadline = time.monotonic() + timeout
    while True:
        stored = len(rows(gw))
        exported = total(samples(scrape(gw)), "lectr_requests_total")
        if stored == expected and exported == expected:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"expected {expected} requests; store has {stored}, /metrics {exported}")
        time.sleep(0.1)
    prom.wait_for("sum(lectr_requests_total)", lambda v: v == expected, timeout=timeout)


# --- the stack under test -------------------------------------------------------


@dataclass
class Stack:
    gw: Gateway
    prom: Prometheus
    mp_dir: Path
    requests: int


@pytest.fixture(scope="module")
def stack(tmp_root: Path, mock: Mock) -> Iterator[Stack]:
    mp_dir = tmp_root / "metrics-multiproc"
    gw = Gateway(tmp_root, mock, LECTR_WORKERS="2", PROMETHEUS_MULTIPROC_DIR=str(mp_dir))
    acme = gw.create_org("acme-metrics")
    globex = gw.create_org("globex-metrics")
    # Azure for globex points at a port nobody listens on: a network failure.
    gw.cli(
        "orgs",
        "azure",
        "globex-metrics",
        "--endpoint",
        f"http://127.0.0.1:{free_port()}",
        "--api-version",
        "2024-10-21",
    )
    # A rule sends summaries to a cheaper model; globex fails over from Azure to OpenAI.
    gw.cli(
        "rules",
        "add",
        "acme-metrics",
        "cheaper-summaries",
        "--when-feature",
        "summarise",
        "--provider",
        "openai",
        "--model",
        "gpt-4.1-nano",
    )
    gw.cli("fallbacks", "set", "globex-metrics", "--feature", "failover", "openai/gpt-4o-mini")
    gw.start()
    prom: Prometheus | None = None
    try:
        prom = Prometheus(tmp_root, [f"127.0.0.1:{gw.port}"])
        prom.wait_for('up{job="lectr"}', lambda v: v == 1)
        # Two rounds: the first creates every series, the second moves them,
        # so rates over the window are real increases, not first sightings.
        n = send_mix(gw, acme, globex)
        wait_consistent(gw, prom, n)
        n += send_mix(gw, acme, globex)
        # Both workers must have served some of it for the multi-worker checks.
        deadline = time.monotonic() + 15
        while sum(1 for v in per_worker_requests(mp_dir).values() if v) < 2:
            assert time.monotonic() < deadline, "the second worker never got a request"
            assert _post(gw, acme, chat("gpt-4o-mini"), **{"X-Lectr-Feature": "search"}) == 200
            n += 1
        wait_consistent(gw, prom, n)
        yield Stack(gw, prom, mp_dir, n)
    finally:
        if prom is not None:
            prom.stop()
        gw.stop()


# --- dashboards against Prometheus ----------------------------------------------


@pytest.mark.prometheus
def test_every_panel_query_returns_data(stack: Stack) -> None:
    evaluated = 0
    for dashboard, title, expr in targets():
        result = stack.prom.query(substitute(expr))  # raises on a parse error
        assert result, f"{dashboard} / {title}: no data for {expr}"
        values = [float(r["value"][1]) for r in result]
        assert any(math.isfinite(v) for v in values), f"{dashboard} / {title}: {values}"
        evaluated += 1
    assert evaluated >= 40
    # A few panels whose value the traffic fixes.
    assert (stack.prom.scalar(substitute(_expr("overview", "Requests / min"))) or 0) > 0
    assert (stack.prom.scalar(substitute(_expr("overview", "Cost / hour"))) or 0) > 0
    assert 0 < (stack.prom.scalar(substitute(_expr("overview", "Error rate"))) or 0) < 1
    assert 0 < (stack.prom.scalar(substitute(_expr("features", "Untagged share"))) or 0) < 1
    assert 0 < (stack.prom.scalar(substitute(_expr("overview", "Routed by rules"))) or 0) < 1
    assert (stack.prom.scalar(substitute(_expr("overview", "Fallbacks taken"))) or 0) > 0
    health = {
        r["metric"]["provider"]: float(r["value"][1])
        for r in stack.prom.query(substitute(_expr("providers", "Provider execution", "D")))
    }
    assert health["azure"] == 0  # every call refused
    assert health["anthropic"] == 1  # every call answered
    assert 0 < health["openai"] < 1  # 500s, 429s and a broken stream among successes


def _expr(dashboard: str, title: str, ref: str = "A") -> str:
    for panel in generate.panels(dashboards()[dashboard]):
        if panel["title"] == title:
            return str(next(t["expr"] for t in panel["targets"] if t["refId"] == ref))
    raise KeyError(title)


@pytest.mark.prometheus
def test_template_variables_have_values(stack: Stack) -> None:
    seen = set()
    for dashboard, name, query in query_variables():
        m = LABEL_VALUES.match(query)
        assert m, f"{dashboard}: ${name} is not a label_values() query: {query}"
        values = stack.prom.api(f"label/{m['label']}/values", **{"match[]": substitute(m["match"])})
        assert values, f"{dashboard}: ${name} has no values"
        seen.add(name)
    assert seen == {"org", "feature", "provider", "model"}


@pytest.mark.prometheus
def test_dashboard_metrics_exist_and_every_export_is_panelled(stack: Stack) -> None:
    families = list(text_string_to_metric_families(scrape(stack.gw)))
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    exported = {f.name + s: f.name for f in families for s in suffixes[f.type]}
    used = set()
    for _, _, expr in targets():
        used.update(METRIC_NAME.findall(expr))
    for _, _, query in query_variables():
        used.update(METRIC_NAME.findall(query))
    missing = used - exported.keys()
    assert not missing, f"dashboards name metrics /metrics does not export: {missing}"
    panelled = {exported[n] for n in used}
    unpanelled = {f.name for f in families if f.name.startswith("lectr_")} - panelled
    listed = {n.removesuffix("_total") for n in generate.UNPANELLED}
    assert unpanelled <= listed, f"exported but on no panel and not listed as unpanelled: {unpanelled}"
    assert all(f.name.startswith("lectr_") for f in families)


# --- /metrics against the store ---------------------------------------------------


@pytest.mark.prometheus
def test_counters_agree_with_the_store(stack: Stack) -> None:
    ss = samples(scrape(stack.gw))
    recs = rows(stack.gw)
    assert len(recs) == stack.requests == total(ss, "lectr_requests_total")
    assert stack.prom.scalar("sum(lectr_requests_total)") == len(recs)
    assert by(ss, "lectr_requests_total", "org", "feature", "status_class") == Counter(
        (r["org_id"], r["feature"], f"{r['status_code'] // 100}xx") for r in recs
    )
    assert by(ss, "lectr_requests_total", "provider", "model", "model_requested") == Counter(
        (r["provider"], r["model_actual"] or "none", r["model_requested"] or "none") for r in recs
    )
    known = {"classification", "summarisation", "extraction", "generation", "reasoning"}
    assert by(ss, "lectr_requests_total", "task") == Counter(
        ("none" if r["task"] is None else r["task"] if r["task"] in known else "other",) for r in recs
    )
    for kind, column in (
        ("prompt", "prompt_tokens"),
        ("completion", "completion_tokens"),
        ("cached", "cached_tokens"),
    ):
        assert total(ss, "lectr_tokens_total", kind=kind) == sum(r[column] or 0 for r in recs), kind
    assert total(ss, "lectr_tokens_total", source="estimated") > 0
    priced = [r["cost_usd"] for r in recs if r["cost_usd"] is not None]
    assert priced and math.isclose(total(ss, "lectr_cost_usd_total"), sum(priced), rel_tol=1e-9)
    assert (
        total(ss, "lectr_unpriced_requests_total")
        == sum(1 for r in recs if r["cost_usd"] is None and r["prompt_tokens"] is not None)
        > 0
    )
    assert by(ss, "lectr_errors_total", "category", "source") == Counter(
        (r["error_category"], r["error_source"]) for r in recs if r["error_category"]
    )
    assert by(ss, "lectr_request_duration_seconds_count", "org") == Counter((r["org_id"],) for r in recs)
    assert by(ss, "lectr_rule_hits_total", "rule") == Counter((r["rule_id"],) for r in recs if r["rule_id"])
    assert by(ss, "lectr_fallbacks_total", "provider") == Counter(
        (r["provider"],) for r in recs if r["fallback_used"]
    )
    assert any(r["model_requested"] != r["model_actual"] for r in recs if r["rule_id"])
    assert total(ss, "lectr_auth_rejections_total") == 4  # two per round
    assert total(ss, "lectr_rejections_total") == 0  # no policy yet: series exist at zero
    assert {lab["reason"] for n, lab, _ in ss if n == "lectr_rejections_total"} == {
        "rate_limit_exceeded",
        "budget_exceeded",
        "concurrent_streams_exceeded",
    }


@pytest.mark.prometheus
def test_counters_add_up_across_workers(stack: Stack) -> None:
    # Each worker wrote its own share; whichever worker answers shows them all.
    shares = per_worker_requests(stack.mp_dir)
    assert sum(1 for v in shares.values() if v) == 2
    assert sum(shares.values()) == stack.requests
    for _ in range(10):
        ss = samples(scrape(stack.gw))
        assert total(ss, "lectr_requests_total") == stack.requests
        assert total(ss, "lectr_inflight_requests") == 0
        assert total(ss, "lectr_inflight_streams") == 0
    # The writer counters of the worker not answering arrive with its next sync.
    deadline = time.monotonic() + 10
    while total(samples(scrape(stack.gw)), "lectr_writer_records_total", outcome="written") != stack.requests:
        assert time.monotonic() < deadline, "writer counters never added up"
        time.sleep(0.1)
    ss = samples(scrape(stack.gw))
    assert total(ss, "lectr_writer_records_total", outcome="queued") == stack.requests
    assert total(ss, "lectr_writer_records_total", outcome="dropped") == 0
    assert total(ss, "lectr_writer_queue_depth") == 0


# --- cardinality --------------------------------------------------------------------


def test_label_cap_bounds_feature_and_model_values(tmp_root: Path, mock: Mock) -> None:
    gw = Gateway(tmp_root, mock, LECTR_METRICS_LABEL_CAP="2")
    key = gw.create_org("capped")
    gw.start()
    try:
        for feature, model in (
            ("cap-a", "gpt-4o-mini"),
            ("cap-b", "gpt-4.1"),
            ("cap-c", "gpt-4.1-mini"),
            ("cap-d", "gpt-4o-mini"),
        ):
            assert _post(gw, key, chat(model), **{"X-Lectr-Feature": feature, "X-Lectr-Task": "odd"}) == 200
        assert _post(gw, key, chat("gpt-4.1")) == 200  # untagged is never capped
        deadline = time.monotonic() + 10
        while len(rows(gw)) < 5 or total(samples(scrape(gw)), "lectr_requests_total") < 5:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        text = scrape(gw)
        ss = samples(text)
        labels = [lab for n, lab, _ in ss if n == "lectr_requests_total"]
        assert {lab["feature"] for lab in labels} == {"cap-a", "cap-b", "other", "untagged"}
        assert {lab["model"] for lab in labels} == {"gpt-4o-mini", "gpt-4.1", "other"}
        assert {lab["task"] for lab in labels} == {"other", "none"}
        assert total(ss, "lectr_requests_total", feature="other") == 2
        # The store keeps the exact strings; no label ever holds the org key.
        assert {r["feature"] for r in rows(gw)} == {"cap-a", "cap-b", "cap-c", "cap-d", "untagged"}
        assert key not in text and key[7:15] not in text
    finally:
        gw.stop()


# --- dashboards as files --------------------------------------------------------------


def test_dashboards_are_generated_and_well_formed() -> None:
    assert generate.stale() == [], "run `python -m grafana.generate` and commit the result"
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard as DashboardModel

    register_default_plugins()
    uids = set()
    for name, d in dashboards().items():
        # Grafana's own schema types read the file back without loss (they
        # may only add their defaults, e.g. empty `custom` field options).
        again = json.loads(JSONEncoder(sort_keys=True).encode(DashboardModel.from_json(d)))
        assert contained(d, again), name
        uids.add(d["uid"])
        variables = {v["name"]: v for v in d["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        assert "org" in variables
        occupied: set[tuple[int, int]] = set()
        for p in d["panels"]:
            g = p["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24, (name, p["title"])
            cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not cells & occupied, f"{name}: {p['title']} overlaps another panel"
            occupied |= cells
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids))
        for p in generate.panels(d):
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert "?" in p["description"], f"{p['title']}: the description is the panel's question"
            refs = [t["refId"] for t in p["targets"]]
            assert p["targets"] and len(refs) == len(set(refs)), p["title"]
            for t in p["targets"]:
                for var in re.findall(r"\$(\w+)", t["expr"]):
                    assert var in variables or var.startswith("__"), (p["title"], var)
    assert len(uids) == 4
    assert set(dashboards()) == {"overview", "features", "providers", "gateway"}


def test_provisioning_files_load_the_dashboards() -> None:
    root = generate.HERE / "provisioning"
    (ds,) = yaml.safe_load((root / "datasources" / "lectr.yaml").read_text())["datasources"]
    assert ds["type"] == "prometheus" and ds["access"] == "proxy" and ds["url"].startswith("http")
    (provider,) = yaml.safe_load((root / "dashboards" / "lectr.yaml").read_text())["providers"]
    assert provider["type"] == "file"
    readme = generate.README.read_text()
    # The README says where to mount what the provider file points at.
    assert provider["options"]["path"] in readme
    assert "/etc/grafana/provisioning" in readme
    for name, d in dashboards().items():
        assert f"dashboards/{name}.json" in readme
        for p in generate.panels(d):
            assert f"| {p['title']} |" in readme
