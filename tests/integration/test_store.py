"""The store contract, run against both backends: embedded SQLite and a real
PostgreSQL server started for the test session."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from devtools.services import Postgres
from lectr.errors import Conflict, NotFound
from lectr.store.base import Store, hash_key
from lectr.store.migration_files import migrations
from lectr.store.postgres import PostgresStore
from lectr.store.sqlite import SQLiteStore
from lectr.types import LogFilter, Record


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "lectr.db")
    else:
        pg: Postgres = request.getfixturevalue("postgres")
        yield pg.new_database("t")


def make_store(backend: str) -> Store:
    return PostgresStore(backend) if backend.startswith("postgresql://") else SQLiteStore(Path(backend))


@pytest.fixture
async def store(backend: str) -> AsyncIterator[Store]:
    s = make_store(backend)
    await s.migrate()
    yield s
    await s.close()


def rec(org: str, ts: float, **kw: object) -> Record:
    base: dict[str, object] = {
        "id": uuid.uuid4().hex,
        "ts": ts,
        "org_id": org,
        "endpoint": "/v1/chat/completions",
        "provider": "openai",
        "model_requested": "gpt-4o-mini",
        "model_actual": "gpt-4o-mini",
        "status_code": 200,
        "latency_ms": 12.5,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cached_tokens": 0,
        "token_source": "provider",
        "cost_usd": 0.0000045,
        "feature": "chat",
    }
    base.update(kw)
    return Record(**base)  # type: ignore[arg-type]


async def test_migrations_are_idempotent_and_concurrent(backend: str) -> None:
    stores = [make_store(backend) for _ in range(3)]
    results = await asyncio.gather(*(s.migrate() for s in stores))
    # Exactly one starter applied the migrations; the others found them done.
    assert sorted(len(r) for r in results) == [0, 0, len(results[0] or results[1] or results[2])]
    shipped = migrations("postgres" if backend.startswith("postgresql") else "sqlite")
    assert sorted(v for r in results for v in r) == [v for v, _ in shipped]
    assert await stores[0].migrate() == []
    for s in stores:
        await s.close()


async def test_orgs_and_keys(store: Store) -> None:
    v0 = await store.control_version()
    org = await store.create_org("acme")
    with pytest.raises(Conflict):
        await store.create_org("acme")
    key, entry = await store.create_key(org.id)
    assert key.startswith("lc_key_") and len(key) == 7 + 43
    assert entry.key_hash == hash_key(key) and key[7:15] == entry.prefix
    assert await store.control_version() > v0
    data = await store.load_control()
    assert [o.name for o in data.orgs] == ["acme"]
    assert [k.prefix for k in data.keys] == [entry.prefix]
    await store.revoke_key(org.id, entry.prefix)
    assert (await store.load_control()).keys == []
    with pytest.raises(NotFound):
        await store.revoke_key(org.id, entry.prefix)
    await store.set_org_disabled(org.id, True)
    await store.set_org_azure(org.id, "https://x.openai.azure.com", "2024-10-21")
    got = await store.get_org("acme")
    assert got.disabled and got.azure_api_version == "2024-10-21"
    with pytest.raises(NotFound):
        await store.get_org("nope")
    with pytest.raises(NotFound):
        await store.create_key("org_missing")


async def test_records_are_written_once_even_when_retried(store: Store) -> None:
    now = time.time()
    batch = [rec("o1", now - i) for i in range(50)]
    await store.write_records(batch)
    await store.write_records(batch[:20])  # a retried batch adds nothing
    assert await store.count_records("o1") == 50
    page, _ = await store.query_requests(LogFilter(org_id="o1"), limit=1)
    # Every field round-trips (PostgreSQL keeps timestamps to the microsecond).
    assert page[0].ts == pytest.approx(batch[0].ts, abs=1e-6)
    assert msgspec.structs.replace(page[0], ts=batch[0].ts) == batch[0]


async def test_log_filters_and_cursor_pages(store: Store) -> None:
    now = time.time()
    rows = [
        rec("o", now - 10, feature='a,b "q"\nnew', task="classification"),
        rec("o", now - 20, model_actual="gpt-4o", rule_id="r1"),
        rec(
            "o",
            now - 30,
            provider="anthropic",
            model_requested="claude-3-5-haiku",
            model_actual="claude-3-5-haiku",
        ),
        rec("o", now - 40, status_code=500, error_category="server_error", error_source="provider"),
        rec("o", now - 50, status_code=499, error_category="client_closed"),
        rec("other", now - 5),
    ]
    await store.write_records(rows)

    async def ids(**kw: object) -> list[str]:
        page, _ = await store.query_requests(LogFilter(org_id="o", **kw))  # type: ignore[arg-type]
        return [r.id for r in page]

    assert await ids() == [r.id for r in rows[:5]]
    assert await ids(feature='a,b "q"\nnew') == [rows[0].id]
    assert await ids(task="classification") == [rows[0].id]
    assert await ids(model="gpt-4o") == [rows[1].id]
    assert await ids(model="claude-3-5-haiku", provider="anthropic") == [rows[2].id]
    assert await ids(rule="r1") == [rows[1].id]
    assert await ids(status="5xx") == [rows[3].id]
    assert await ids(status="499") == [rows[4].id]
    assert await ids(status="error") == [rows[3].id, rows[4].id]
    assert await ids(status="2xx") == [r.id for r in rows[:3]]
    assert await ids(since=now - 35, until=now - 15) == [rows[1].id, rows[2].id]

    seen, cursor = [], None
    while True:
        page, cursor = await store.query_requests(LogFilter(org_id="o"), cursor, limit=2)
        seen += [r.id for r in page]
        if cursor is None:
            break
    assert seen == [r.id for r in rows[:5]]
    batches = [b async for b in store.export_requests(LogFilter(org_id="o"))]
    assert [r.id for b in batches for r in b] == [r.id for r in rows[:5]]


async def test_same_timestamp_pages_do_not_skip(store: Store) -> None:
    ts = time.time()
    rows = [rec("o", ts) for _ in range(7)]
    await store.write_records(rows)
    seen, cursor = [], None
    while True:
        page, cursor = await store.query_requests(LogFilter(org_id="o"), cursor, limit=3)
        seen += [r.id for r in page]
        if cursor is None:
            break
    assert sorted(seen) == sorted(r.id for r in rows)


async def test_retention_removes_old_records(store: Store) -> None:
    now = time.time()
    await store.write_records([rec("o", now - 40 * 86400), rec("o", now - 3 * 86400), rec("o", now)])
    await store.apply_retention(30)
    assert await store.count_records("o") == 2


async def test_rules_and_fallbacks(store: Store) -> None:
    from lectr.types import FallbackChain, Rule, Target

    org = await store.create_org("rules")
    v0 = await store.control_version()
    r1 = await store.create_rule(
        Rule(
            id="", org_id=org.id, name="cheap", priority=10, match_feature="chat", target_model="gpt-4o-mini"
        )
    )
    r2 = await store.create_rule(
        Rule(
            id="",
            org_id=org.id,
            name="claude",
            priority=20,
            match_task="reasoning",
            target_provider="anthropic",
            target_model="claude-sonnet-4",
            split_percent=25,
        )
    )
    with pytest.raises(Conflict):
        await store.create_rule(Rule(id="", org_id=org.id, name="cheap", priority=30, target_model="x"))
    assert await store.control_version() > v0
    assert [r.name for r in await store.list_rules(org.id)] == ["cheap", "claude"]
    await store.reorder_rules(org.id, [r2.id, r1.id])
    assert [r.name for r in await store.list_rules(org.id)] == ["claude", "cheap"]
    await store.update_rule(msgspec.structs.replace(r1, enabled=False, target_model="gpt-4.1-nano"))
    got = {r.name: r for r in (await store.load_control()).rules}
    assert got["cheap"].enabled is False and got["cheap"].target_model == "gpt-4.1-nano"
    assert got["claude"].split_percent == 25 and got["claude"].match_task == "reasoning"
    await store.delete_rule(org.id, r1.id)
    with pytest.raises(NotFound):
        await store.delete_rule(org.id, r1.id)

    chain = FallbackChain(
        org_id=org.id,
        targets=(Target("anthropic", "claude-3-5-haiku"), Target("groq", "llama-3.1-8b-instant")),
    )
    await store.set_fallback(chain)
    await store.set_fallback(msgspec.structs.replace(chain, scope="chat", on_status=(500,)))
    chains = {c.scope: c for c in (await store.load_control()).fallbacks}
    assert chains["*"].targets == chain.targets and chains["*"].on_status == (429, 500, 502, 503, 504)
    assert chains["chat"].on_status == (500,)
    await store.delete_fallback(org.id, "chat")
    assert [c.scope for c in await store.list_fallbacks(org.id)] == ["*"]
