"""Insights on both stores (embedded SQLite and a real PostgreSQL): overview
figures against the raw records, the anomaly detector on synthetic history
with a controllable clock (webhooks received by a real local HTTP server),
and the admin API and CLI of a running gateway fed by real traffic."""

from __future__ import annotations

import asyncio
import json
import math
import random
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.harness import Gateway, Mock, running
from devtools.ports import free_port
from devtools.services import Postgres
from lectr.gateway.pricing import PriceTable
from lectr.gateway.upstream import Upstream
from lectr.insights.anomalies import GRACE, WINDOW, Detector, webhook
from lectr.insights.histogram import HIST_BUCKETS, latency_bucket, percentile
from lectr.insights.recommendations import DowngradeMap
from lectr.insights.service import Insights
from lectr.store.base import Store
from lectr.store.postgres import PostgresStore
from lectr.store.sqlite import SQLiteStore
from lectr.types import Anomaly, LogFilter, Record
from tests.integration.test_admin import TOKEN, api
from tests.integration.test_proxy import CHAT, error_of, post
from tests.integration.test_store import backend, store  # noqa: F401 - fixtures

PRICES = PriceTable.load()


def insights(s: Store, now: float | None = None) -> Insights:
    return Insights(s, PRICES, DowngradeMap.load(), 0.2, clock=(lambda: now) if now else time.time)


# --- overview against raw records --------------------------------------------


def traffic(rng: random.Random, start: float, end: float, n: int) -> list[Record]:
    out = []
    for i in range(n):
        model = rng.choice(["gpt-4o", "gpt-4o-mini", "claude-3-5-haiku", "my-model"])
        routed = rng.random() < 0.2
        status = rng.choice([200] * 12 + [429, 500, 499])
        prompt = rng.randint(1, 3000)
        out.append(
            Record(
                id=f"r{i}-{uuid.uuid4().hex[:8]}",
                ts=rng.uniform(start, end),
                org_id="org_ov",
                endpoint="/v1/chat/completions",
                provider="anthropic" if model.startswith("claude") else "openai",
                model_requested="gpt-4o" if routed else model,
                model_actual=model,
                rule_id=rng.choice(["rule_a", "rule_b"])
                if routed
                else rng.choice([None] * 9 + ["budget:*:day"]),
                status_code=status,
                error_category={429: "rate_limited", 500: "server_error", 499: "client_closed"}.get(status),
                error_source={429: "provider", 500: "provider", 499: "client"}.get(status),
                latency_ms=rng.lognormvariate(6, 1.0),
                prompt_tokens=prompt,
                completion_tokens=rng.randint(0, 500),
                cached_tokens=rng.choice([0, 0, prompt // 2]),
                cost_usd=None if model == "my-model" else rng.uniform(0, 0.01),
                feature=rng.choice(["chat", "search", "untagged", "summary"]),
                task=rng.choice([None, "classification", "reasoning", "made-up"]),
            )
        )
    return out


def raw_figures(records: list[Record]) -> dict[str, Any]:
    n = len(records)
    lat = [r.latency_ms for r in records]
    hist = [0] * HIST_BUCKETS
    for v in lat:
        hist[latency_bucket(v)] += 1
    return {
        "requests": n,
        "errors": sum(r.status_code >= 400 or r.error_category is not None for r in records),
        "cost": sum(r.cost_usd or 0 for r in records),
        "unpriced": sum(r.cost_usd is None for r in records),
        "prompt": sum(r.prompt_tokens or 0 for r in records),
        "completion": sum(r.completion_tokens or 0 for r in records),
        "cached": sum(r.cached_tokens or 0 for r in records),
        "avg": sum(lat) / n if n else None,
        "p95_exact": sorted(lat)[math.ceil(0.95 * n) - 1] if n else None,
        "p95_hist": percentile(hist),
    }


def assert_same(b: Any, raw: dict[str, Any]) -> None:
    """One overview row (totals or a breakdown) against the raw figures."""
    assert b.requests == raw["requests"]
    assert b.errors == raw["errors"]
    assert b.cost_usd == pytest.approx(raw["cost"], rel=1e-9, abs=1e-12)
    assert b.unpriced == raw["unpriced"]
    assert (b.prompt_tokens, b.completion_tokens, b.cached_tokens) == (
        raw["prompt"],
        raw["completion"],
        raw["cached"],
    )
    assert b.avg_latency_ms == pytest.approx(raw["avg"])
    # p95 from the stored histogram is exactly the raw records' histogram p95,
    # and lies in the same bucket as the exact nearest-rank p95.
    assert b.p95_latency_ms == pytest.approx(raw["p95_hist"])
    assert latency_bucket(b.p95_latency_ms) == latency_bucket(raw["p95_exact"])


async def all_records(s: Store, org: str) -> list[Record]:
    return [r async for page in s.export_requests(LogFilter(org_id="org_ov")) for r in page]


async def test_overview_equals_figures_from_raw_records(store: Store) -> None:  # noqa: F811
    now = time.time()
    rng = random.Random(5)
    records = traffic(rng, now - 50 * 3600, now - 60, 3000)
    await store.write_records(records[:1000])
    await store.write_records(records[:1000])  # a retried batch
    await store.write_records(records[500:2000])  # half already stored (the merge path)
    await store.write_records(records[2000:])
    await store.write_records(records[2500:2600])  # a replay
    stored = await all_records(store, "org_ov")
    assert len(stored) == 3000
    ins = insights(store, now)
    # The whole span (crossing at least one UTC day), an odd window with
    # minute, hour and day pieces, and ten minutes.
    lo = math.floor((now - 51 * 3600) / 60) * 60
    windows = [(lo, now), (lo + 3 * 3600 + 17 * 60, lo + 40 * 3600 + 43 * 60), (now - 7200, now - 6600)]
    for since, until in windows:
        ov = await ins.overview("org_ov", since, until)
        assert ov.since == since // 60 * 60 and ov.until == math.ceil(until / 60) * 60
        inside = [r for r in stored if ov.since <= r.ts < ov.until]
        raw = raw_figures(inside)
        assert_same(ov.totals, raw)
        minutes = (ov.until - ov.since) / 60
        assert ov.totals.req_per_min == pytest.approx(len(inside) / minutes)
        assert ov.totals.cost_per_hour == pytest.approx(raw["cost"] / (minutes / 60))
        assert ov.totals.error_rate == pytest.approx(raw["errors"] / len(inside))
        for rows, key in (
            (ov.by_feature, lambda r: r.feature),
            (ov.by_model, lambda r: r.model_actual),
            (ov.by_provider, lambda r: r.provider),
            (ov.by_task, lambda r: r.task),
        ):
            assert {b.key for b in rows} == {key(r) for r in inside}
            for b in rows:
                group = [r for r in inside if key(r) == b.key]
                assert_same(b, raw_figures(group))
                assert b.share == pytest.approx(len(group) / len(inside))
        for p in ov.providers:
            group = [r for r in inside if r.provider == p.provider]
            failed = sum(r.error_source in ("provider", "network") for r in group)
            assert p.requests == len(group)
            assert p.success_pct == pytest.approx(100 * (1 - failed / len(group)))
        routed = [r for r in inside if r.rule_id in ("rule_a", "rule_b")]
        assert ov.routed.requests == len(routed)
        assert ov.untagged.requests == sum(r.feature == "untagged" for r in inside)
        assert ov.untagged.prompt is not None  # about a quarter is untagged; threshold 20 %
    empty = await ins.overview("org_ov", now - 55 * 3600, now - 52 * 3600)
    assert empty.totals.requests == 0 and empty.totals.p95_latency_ms is None and empty.by_feature == []


async def test_upgrading_rolls_up_the_records_already_stored(store: Store) -> None:  # noqa: F811
    now = time.time()
    await store.write_records(traffic(random.Random(8), now - 30 * 3600, now, 2000))
    tables = ("rollup_minute", "rollup_hour", "rollup_day")

    async def dump() -> dict[str, list[Any]]:
        return {t: sorted(await store._fetch(f"SELECT * FROM {t}", ())) for t in tables}  # type: ignore[attr-defined]

    by_writer = await dump()
    # The database as it was before migration 0004: records, no insights.
    await store._exec(  # type: ignore[attr-defined]
        [
            *((f"DROP TABLE {t}", ()) for t in (*tables, "insight_windows", "anomalies", "insights_state")),
            ("DELETE FROM schema_migrations WHERE version = 4", ()),
        ]
    )
    assert await store.migrate() == [4]
    by_migration = await dump()
    for t in tables:
        assert len(by_migration[t]) == len(by_writer[t])
        for a, b in zip(by_migration[t], by_writer[t], strict=True):
            assert a == pytest.approx(b)  # the same rows; float sums up to rounding


# --- synthetic history for the detector --------------------------------------

T0 = 1_767_225_600  # 2026-01-01 00:00 UTC
LAST = 578  # the window with the injected deviations: 48 h 10 min of history
EARLY = 470  # 39 h of history: a cost spike here must not fire
BUSY = {
    "spend": "cost_spike",
    "slow": "latency_degradation",
    "flaky": "error_rate_spike",
    "surge": "traffic_high",
    "quiet": "traffic_low",
    "drift": "model_drift",
    "steady": None,
}
EXPECTED = {
    "spend": {"cost_spike"},
    "slow": {"latency_degradation"},
    "flaky": {"error_rate_spike"},
    "surge": {"traffic_high", "cost_spike"},  # more requests cost more
    "quiet": {"traffic_low"},
    "drift": {"model_drift"},
    "steady": set(),
}


def at(k: int) -> float:
    """A clock reading at which window k is the latest one evaluated."""
    return T0 + (k + 1) * WINDOW + GRACE + 1


def window(org: str, feature: str, k: int, rng: random.Random, mode: str) -> list[Record]:
    """One 5-minute window: `noise` (history), `typical` (a middle-of-the-road
    window), or the name of an injected deviation."""
    noise = mode == "noise"
    n = rng.randint(8, 14) if noise else {"surge": 60, "quiet": 0}.get(mode, 12)
    out = []
    for i in range(n):
        err = rng.random() < 0.02 if noise else (mode == "flaky" and i < 7)
        moved = rng.random() < 0.05 if noise else (mode == "drift" and i < 10)
        out.append(
            Record(
                id=f"{org}-{feature}-{k}-{i}",
                ts=T0 + k * WINDOW + (i + 0.5) * WINDOW / n,
                org_id=org,
                endpoint="/v1/chat/completions",
                provider="openai",
                model_requested="gpt-4o",
                model_actual="gpt-4o-mini" if moved else "gpt-4o",
                status_code=500 if err else 200,
                error_category="server_error" if err else None,
                error_source="provider" if err else None,
                latency_ms=400 * math.exp(rng.gauss(0, 0.3))
                if noise
                else (1600.0 if mode == "slow" else 400.0),
                prompt_tokens=100,
                completion_tokens=10,
                cost_usd=0.001 * rng.uniform(0.8, 1.2) if noise else (0.005 if mode == "spend" else 0.001),
                feature=feature,
            )
        )
    return out


def history() -> list[Record]:
    rng = random.Random(42)
    out: list[Record] = []
    scopes = [("org_busy", f) for f in BUSY] + [("org_calm", "a"), ("org_calm", "b")]
    for k in range(LAST + 2):
        for org, feature in scopes:
            mode = "noise"
            if k == EARLY and feature == "spend":
                mode = "spend"
            elif k == LAST:
                mode = feature if BUSY.get(feature) else "typical"
            elif k == LAST + 1:
                mode = "spend" if feature == "spend" else "typical"
            out += window(org, feature, k, rng, mode)
    return out


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def seeded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[], Store]]:
    """The history written once per backend; each test gets its own copy."""
    records = history()

    async def load(s: Store) -> None:
        await s.migrate()
        for i in range(0, len(records), 5000):
            await s.write_records(records[i : i + 5000])
        await s.close()

    if request.param == "sqlite":
        folder = tmp_path_factory.mktemp("history")
        asyncio.run(load(SQLiteStore(folder / "template.db")))
        copies = iter(range(1000))

        def sqlite_copy() -> Store:
            path = folder / f"copy-{next(copies)}.db"
            shutil.copy(folder / "template.db", path)
            return SQLiteStore(path)

        yield sqlite_copy
        return
    pg: Postgres = request.getfixturevalue("postgres")
    template_url = pg.new_database("tpl")
    asyncio.run(load(PostgresStore(template_url)))
    template = template_url.rsplit("/", 1)[1]

    def pg_copy() -> Store:
        return PostgresStore(pg.new_database("h", template=template))

    yield pg_copy


@pytest.fixture
async def hstore(seeded: Callable[[], Store]) -> AsyncIterator[Store]:
    s = seeded()
    yield s
    await s.close()


class Hooks(BaseHTTPRequestHandler):
    """Records every POST; answers 500 to the first `fail` of them."""

    received: list[tuple[int, dict[str, Any]]] = []
    fail = 0

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        status = 500 if Hooks.fail > 0 else 200
        Hooks.fail -= 1
        Hooks.received.append((status, body))
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hooks() -> Iterator[str]:
    Hooks.received, Hooks.fail = [], 0
    srv = ThreadingHTTPServer(("127.0.0.1", free_port()), Hooks)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/anomalies"
    srv.shutdown()
    srv.server_close()


def by_feature(found: list[Anomaly], org: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for a in found:
        if a.org_id == org and a.feature is not None:
            out.setdefault(a.feature, set()).add(a.type)
    return out


async def test_nothing_fires_before_48_hours_of_history(hstore: Store) -> None:
    det = Detector(hstore)
    assert await det.tick(at(EARLY)) == []
    assert await hstore.list_anomalies() == []
    feed = await insights(hstore, at(EARLY)).anomalies("org_busy")
    assert feed.status == "building_baseline"
    assert feed.hours_left == pytest.approx(48 - (at(EARLY) - T0) / 3600, abs=0.1)
    assert {f.feature for f in feed.building_features} == set(BUSY)


async def test_each_type_fires_on_its_injection_and_noise_does_not(hstore: Store) -> None:
    det = Detector(hstore)
    opened = await det.tick(at(LAST))
    assert by_feature(opened, "org_busy") == {f: t for f, t in EXPECTED.items() if t}
    assert [a for a in opened if a.org_id == "org_calm"] == []
    for a in opened:
        assert (a.window_start, a.window_end) == (T0 + LAST * WINDOW, T0 + (LAST + 1) * WINDOW)
        assert a.detected_at == at(LAST) and a.state == "active" and a.ongoing
        assert abs(a.deviation) > 2 and a.sigma > 0
        assert a.deviation == pytest.approx((a.observed - a.baseline) / a.sigma)
    spend = next(a for a in opened if a.feature == "spend")
    assert spend.observed == pytest.approx(0.06) and spend.baseline == pytest.approx(0.011, rel=0.05)
    quiet = next(a for a in opened if a.feature == "quiet")
    assert quiet.observed == 0 and quiet.baseline == pytest.approx(11, rel=0.05)
    feed = await insights(hstore, at(LAST)).anomalies("org_busy")
    assert feed.status == "active" and feed.hours_left == 0
    assert {a.id for a in feed.data} == {a.id for a in opened if a.org_id == "org_busy"}
    assert await det.tick(at(LAST) + 30) == []  # same window: nothing new

    # The next window: the cost spike goes on (same anomaly, longer), the rest
    # is back to normal (resolved, and still in the feed).
    assert await det.tick(at(LAST + 1)) == []
    after = {a.id: a for a in await hstore.list_anomalies("org_busy")}
    assert after[spend.id].ongoing and after[spend.id].window_end == T0 + (LAST + 2) * WINDOW
    assert after[spend.id].detected_at == spend.detected_at
    assert after[quiet.id].state == "resolved" and not after[quiet.id].ongoing
    assert after[quiet.id].resolved_at == at(LAST + 1)
    assert len(after) == len([a for a in opened if a.org_id == "org_busy"])


async def test_dismissal_stops_alerts_and_leaves_baselines(hstore: Store, hooks: str) -> None:
    det = Detector(hstore, webhook(Upstream(), hooks))
    opened = await det.tick(at(LAST))
    spend = next(a for a in opened if a.feature == "spend")
    assert sorted(b["anomaly"]["id"] for _, b in Hooks.received) == sorted(a.id for a in opened)
    nxt = T0 + (LAST + 1) * WINDOW
    (before,) = [s for s in await hstore.baseline_sums(nxt - 7 * 86400, nxt, 10) if s.feature == "spend"]

    ins = insights(hstore, at(LAST))
    dismissed = await ins.dismiss("org_busy", spend.id)
    assert dismissed.state == "dismissed" and dismissed.dismissed_at == at(LAST)
    with pytest.raises(Exception, match="no anomaly"):
        await ins.dismiss("org_calm", spend.id)  # another org's id
    # The dismissed window leaves the next evaluation's baseline.
    (without,) = [s for s in await hstore.baseline_sums(nxt - 7 * 86400, nxt, 10) if s.feature == "spend"]
    assert without.n == before.n - 1
    assert without.cost == pytest.approx(before.cost - 0.06)
    assert without.cost_sq == pytest.approx(before.cost_sq - 0.06**2)

    # The spike goes on: no new anomaly, no new alert, the dismissed one grows
    # (and so does what the baseline leaves out); it stays off the feed.
    sent = len(Hooks.received)
    assert await det.tick(at(LAST + 1)) == []
    assert len(Hooks.received) == sent
    still = {a.id: a for a in await hstore.list_anomalies("org_busy")}[spend.id]
    assert still.state == "dismissed" and still.ongoing and still.window_end == T0 + (LAST + 2) * WINDOW
    assert spend.id not in {a.id for a in (await ins.anomalies("org_busy")).data}
    assert spend.id in {a.id for a in (await ins.anomalies("org_busy", history=True)).data}
    ranges = await hstore.dismissed_ranges(T0)
    assert ranges == [("org_busy", "spend", T0 + LAST * WINDOW, T0 + (LAST + 2) * WINDOW)]


async def test_one_webhook_per_anomaly_across_instances_and_retries(
    hstore: Store, seeded: Callable[[], Store], hooks: str
) -> None:
    Hooks.fail = 1  # the first delivery gets a 500 and is retried
    other = hstore
    if isinstance(hstore, SQLiteStore):
        other = SQLiteStore(hstore.path)  # a second process on the same file
    elif isinstance(hstore, PostgresStore):
        other = PostgresStore(hstore._url)  # a second instance
    a = Detector(hstore, webhook(Upstream(), hooks))
    b = Detector(other, webhook(Upstream(), hooks))
    got = await asyncio.gather(a.tick(at(LAST)), b.tick(at(LAST)))
    assert sorted(len(x) for x in got)[0] == 0  # one leader did the work
    opened = got[0] or got[1]
    assert len(opened) >= 7
    ok = [body["anomaly"]["id"] for status, body in Hooks.received if status == 200]
    assert len(ok) == len(opened) - 1 and len(Hooks.received) == len(opened)
    # The failed one is retried after its backoff, by whichever instance.
    assert await b.deliver(at(LAST) + 1) == 0  # not due yet
    assert await b.deliver(at(LAST) + 6) == 1
    # An instance that takes over after the leader stalled, and evaluates the
    # same window again, raises nothing new and sends nothing again.
    await hstore._exec([("UPDATE insights_state SET last_window = %s", (T0 + (LAST - 1) * WINDOW,))])  # type: ignore[attr-defined]
    assert await b.tick(at(LAST) + 120) == []
    assert await a.tick(at(LAST + 1)) == [] and await b.tick(at(LAST + 1)) == []
    delivered = [body["anomaly"]["id"] for status, body in Hooks.received if status == 200]
    assert sorted(delivered) == sorted(x.id for x in opened)  # each exactly once
    stored = await hstore.list_anomalies()
    assert sorted(x.id for x in stored) == sorted(x.id for x in opened)
    assert all(x.alert_state == "sent" for x in stored)
    assert [x.alert_attempts for x in stored].count(2) == 1
    first = next(body for _, body in Hooks.received)
    assert first["event"] == "anomaly.detected"
    assert {"type", "feature", "baseline", "observed", "sigma", "deviation", "severity"} <= set(
        first["anomaly"]
    )
    if other is not hstore:
        await other.close()


# --- through a running gateway -----------------------------------------------


@pytest.fixture(scope="module")
def insights_gw(tmp_root: Path, mock: Mock) -> Iterator[Gateway]:
    with running(tmp_root, mock, LECTR_ADMIN_TOKEN=TOKEN) as gw:
        gw.start()
        yield gw


def test_overview_recommendations_and_feed_over_the_api_and_cli(insights_gw: Gateway, mock: Mock) -> None:
    gw = insights_gw
    key = api(gw, "POST", "/admin/orgs", json={"name": "ins"}).json()["key"]
    other = api(gw, "POST", "/admin/orgs", json={"name": "ins-other"}).json()["key"]
    deadline = time.monotonic() + 5
    while post(gw, key, CHAT, **{"X-Lectr-Feature": "probe"}).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "is this spam?"}]}
    with ThreadPoolExecutor(8) as pool:
        codes = list(
            pool.map(
                lambda i: (
                    post(
                        gw, key, body, **{"X-Lectr-Feature": "classifier", "X-Lectr-Task": "classification"}
                    ).status_code
                ),
                range(120),
            )
        )
    assert codes == [200] * 120
    post(gw, key, body)  # untagged
    org_id = api(gw, "GET", "/admin/orgs/ins").json()["id"]
    gw.records(expect=122, org_id=org_id)

    ov = api(gw, "GET", "/admin/orgs/ins/overview").json()
    assert ov["totals"]["requests"] == 122
    assert {b["key"]: b["requests"] for b in ov["by_feature"]} == {
        "classifier": 120,
        "probe": 1,
        "untagged": 1,
    }
    assert ov["by_model"][0]["key"] == "gpt-4o" and ov["providers"][0]["provider"] == "openai"
    assert ov["untagged"]["prompt"] is None  # 1 in 122
    # The org's own key reads its own overview, not another org's.
    own = httpx.get(f"{gw.url}/admin/orgs/ins/overview", headers={"X-Lectr-Key": key}, timeout=10)
    assert own.status_code == 200 and own.json()["totals"]["requests"] == 122
    r = httpx.get(f"{gw.url}/admin/orgs/ins/overview", headers={"X-Lectr-Key": other}, timeout=10)
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"
    for bad in ("yesterday", "nan", "inf", "-inf", "1e308", "-1e308", "NaN"):
        for param in ("since", "until"):
            r = api(gw, "GET", f"/admin/orgs/ins/overview?{param}={bad}")
            assert r.status_code == 400 and error_of(r)["code"] == "invalid_request", (param, bad)
            assert param in error_of(r)["message"]
            r = api(gw, "GET", f"/admin/orgs/ins/requests?{param}={bad}")
            assert r.status_code == 400 and error_of(r)["code"] == "invalid_request", (param, bad)
    for bad in ("nan", "inf", "1e308"):
        r = api(gw, "GET", f"/admin/orgs/ins/recommendations?days={bad}")
        assert r.status_code == 400 and error_of(r)["code"] == "invalid_request", bad

    recs = api(gw, "GET", "/admin/orgs/ins/recommendations").json()["data"]
    assert [(x["feature"], x["model"], x["target_model"], x["confidence"]) for x in recs] == [
        ("classifier", "gpt-4o", "gpt-4o-mini", "high")
    ]
    rec = recs[0]
    assert rec["monthly_savings_usd"] > 0 and rec["requests"] == 120
    r = httpx.post(f"{gw.url}/admin/orgs/ins/recommendations/{rec['id']}/apply", headers={"X-Lectr-Key": key})
    assert r.status_code == 403  # applying is for the admin
    r = api(gw, "POST", f"/admin/orgs/ins/recommendations/{rec['id']}/apply", json={"split_percent": 0})
    assert r.status_code == 400
    r = api(gw, "POST", "/admin/orgs/ins/recommendations/rec_nope/apply", json={})
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"
    r = api(gw, "POST", f"/admin/orgs/ins/recommendations/{rec['id']}/apply", json={})
    assert r.status_code == 201
    rule = r.json()
    assert (rule["match_feature"], rule["match_model"], rule["match_task"], rule["target_model"]) == (
        "classifier",
        "gpt-4o",
        "classification",
        "gpt-4o-mini",
    )
    # The rule takes effect at once: the provider now sees the cheaper model.
    mock.clear()
    post(gw, key, body, **{"X-Lectr-Feature": "classifier", "X-Lectr-Task": "classification"})
    assert json.loads(mock.requests()[-1]["body"])["model"] == "gpt-4o-mini"
    again = api(gw, "GET", "/admin/orgs/ins/recommendations").json()["data"]
    assert again[0]["applied_rule_id"] == rule["id"]
    assert api(gw, "POST", f"/admin/orgs/ins/recommendations/{rec['id']}/apply", json={}).status_code == 409

    feed = api(gw, "GET", "/admin/orgs/ins/anomalies").json()
    assert feed["status"] == "building_baseline" and 47 < feed["hours_left"] <= 48
    assert feed["data"] == []
    # An anomaly in the feed (the detector itself is tested above), dismissed.
    anomaly = Anomaly(
        id="an_test",
        org_id=org_id,
        feature="classifier",
        type="cost_spike",
        metric="cost_usd",
        baseline=0.01,
        sigma=0.002,
        observed=0.05,
        deviation=20.0,
        severity="high",
        window_start=int(time.time()) // 300 * 300,
        window_end=int(time.time()) // 300 * 300 + 300,
        detected_at=time.time(),
        state="active",
        ongoing=True,
    )

    async def put() -> None:
        s = SQLiteStore(gw.data_dir / "lectr.db")
        assert await s.open_anomaly(anomaly, None)
        await s.close()

    asyncio.run(put())
    feed = api(gw, "GET", "/admin/orgs/ins/anomalies").json()
    assert [a["id"] for a in feed["data"]] == ["an_test"] and feed["data"][0]["type"] == "cost_spike"
    out = gw.cli("anomalies", "list", "ins")
    assert "an_test" in out and "cost_spike" in out and "building baseline" in out
    r = httpx.post(f"{gw.url}/admin/orgs/ins/anomalies/an_test/dismiss", headers={"X-Lectr-Key": key})
    assert r.status_code == 403
    assert api(gw, "POST", "/admin/orgs/ins/anomalies/an_nope/dismiss").status_code == 404
    r = api(gw, "POST", "/admin/orgs/ins/anomalies/an_test/dismiss")
    assert r.status_code == 200 and r.json()["state"] == "dismissed"
    assert api(gw, "GET", "/admin/orgs/ins/anomalies").json()["data"] == []
    assert [a["id"] for a in api(gw, "GET", "/admin/orgs/ins/anomalies?all=1").json()["data"]] == ["an_test"]

    out = gw.cli("overview", "ins")
    assert "req/min" in out and "classifier" in out and "gpt-4o" in out
    out = gw.cli("recommendations", "list", "ins")
    assert rec["id"] in out and rule["id"] in out
    out = gw.cli("anomalies", "list", "ins", "--all")
    assert "dismissed" in out
    with sqlite3.connect(gw.data_dir / "lectr.db") as c:
        assert c.execute("SELECT count(*) FROM routing_rules WHERE id = ?", (rule["id"],)).fetchone()[0] == 1

    doc = api(gw, "GET", "/admin/openapi.json", token=None).json()
    for path in (
        "/admin/orgs/{org}/overview",
        "/admin/orgs/{org}/anomalies",
        "/admin/orgs/{org}/anomalies/{anomaly}/dismiss",
        "/admin/orgs/{org}/recommendations",
        "/admin/orgs/{org}/recommendations/{rec}/apply",
    ):
        assert path in doc["paths"]
    assert "Overview" in doc["components"]["schemas"]
