"""Lectr with every feature on: `lectr serve` with one worker, an org key
(auth), ten routing rules loaded (nine that never match the bench traffic and,
evaluated last, one that rewrites its model), capture to the embedded SQLite
store, Prometheus metrics. `start(..., rules=, matching_rule=, database_url=,
redis_url=, rate_limit=)` builds the variants (PostgreSQL capture, 0 or 100
rules, a rate limit checked in Redis).

The interpreter running the benchmarks is the one serving Lectr, so run them
from a virtualenv with a release build (`make bench` makes one)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import httpx

from benchmarks.targets import FEATURE, MODEL_FIXED, PROVIDER_KEY, Env, Running
from devtools.harness import Gateway

NAME = "lectr"
DESCRIPTION = "Lectr, 1 worker: auth, 10 routing rules, SQLite capture, metrics"
ADMIN_TOKEN = "bench-admin-token"  # a throwaway token on loopback


def _admin(gw: Gateway, method: str, path: str, body: Any = None) -> Any:
    r = httpx.request(
        method,
        f"{gw.url}/admin{path}",
        json=body,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=30,
    )
    if r.status_code >= 300:
        raise RuntimeError(f"admin {method} {path}: {r.status_code} {r.text}")
    return r.json()


def _captured(gw: Gateway, org: str) -> Any:
    def usage(feature: str, expect: int) -> dict[str, Any]:
        """Streamed records of `feature` and how many carry the provider's usage."""
        deadline = time.monotonic() + 10
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = _admin(gw, "GET", f"/orgs/{org}/requests?feature={feature}&limit=1000")["data"]
            if len(rows) >= expect:
                break
            time.sleep(0.2)
        ok = [
            r
            for r in rows
            if r["token_source"] == "provider" and r["completion_tokens"] and r["status_code"] == 200
        ]
        return {"records": len(rows), "with_usage": len(ok), "expected": expect}

    return usage


def start(
    env: Env,
    *,
    name: str = NAME,
    rules: int = 10,
    matching_rule: bool = True,
    database_url: str | None = None,
    redis_url: str | None = None,
    rate_limit: bool = False,
    settings: dict[str, str] | None = None,
    cleanup: Any = None,
) -> Running:
    # The defaults, not the test harness's faster intervals.
    extra = {"LECTR_WRITER_FLUSH_INTERVAL": "0.2", "LECTR_CONTROL_REFRESH_INTERVAL": "0.5"}
    if database_url:
        extra["LECTR_DATABASE_URL"] = database_url
    if redis_url:
        extra["LECTR_REDIS_URL"] = redis_url
    gw = Gateway(
        env.tmp,
        SimpleNamespace(url=env.fixed.url),  # type: ignore[arg-type]
        LECTR_GROQ_BASE_URL=f"{env.stream.url}/v1",
        LECTR_ADMIN_TOKEN=ADMIN_TOKEN,
        LECTR_LOG_LEVEL="warning",
        LECTR_WORKERS="1",
        **extra | (settings or {}),
    )
    gw.start()
    try:
        key = _admin(gw, "POST", "/orgs", {"name": "bench"})["key"]
        n_plain = rules - 1 if matching_rule and rules else rules
        for i in range(n_plain):
            _admin(
                gw,
                "POST",
                "/orgs/bench/rules",
                {"name": f"other-{i}", "match_feature": f"feature-{i}", "target_model": "gpt-4o-mini"},
            )
        if matching_rule and rules:
            # Last in priority order: every other rule is checked first.
            _admin(
                gw,
                "POST",
                "/orgs/bench/rules",
                {
                    "name": "bench-cheaper",
                    "match_feature": FEATURE,
                    "match_model": MODEL_FIXED,
                    "target_model": "gpt-4o-mini",
                },
            )
        if rate_limit:
            # Never reached, but checked (and counted) on every request.
            _admin(gw, "PUT", "/orgs/bench/limits/*", {"requests_per_min": 1_000_000_000})
    except Exception:
        gw.stop()
        raise
    assert gw.proc is not None

    def stop() -> None:
        gw.stop()
        if cleanup is not None:
            cleanup()

    store = "PostgreSQL" if database_url else "SQLite"
    return Running(
        name=name,
        url_fixed=f"{gw.url}/v1/chat/completions",
        url_stream=f"{gw.url}/v1/chat/completions",
        pid=gw.proc.pid,
        command=f"lectr serve --port {gw.port} --workers 1  (LECTR_LOG_LEVEL=warning, {store} capture)",
        stop=stop,
        headers={"Authorization": f"Bearer {PROVIDER_KEY}", "X-Lectr-Key": key},
        usage=_captured(gw, "bench"),
        notes=f"{rules} rules{' (1 matching)' if matching_rule and rules else ''}, {store}"
        + (", rate limit in Redis" if rate_limit and redis_url else ""),
    )
