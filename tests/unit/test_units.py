"""Pure decisions: config precedence and masking, provider detection, pricing,
the core's request parsing and the error shape."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from lectr import _core, errors
from lectr.config import ConfigError, load, masked
from lectr.gateway import protocols, providers
from lectr.gateway.pricing import PriceTable
from lectr.types import OrgEntry


def test_config_precedence_defaults_file_env_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k in [k for k in __import__("os").environ if k.startswith("LECTR_")]:
        monkeypatch.delenv(k)
    assert load().port == 8080
    cfg = tmp_path / "lectr.toml"
    cfg.write_text('port = 9001\nhost = "0.0.0.0"\nworkers = 2\n')
    s = load(str(cfg))
    assert (s.port, s.host, s.workers) == (9001, "0.0.0.0", 2)
    monkeypatch.setenv("LECTR_PORT", "9002")
    assert load(str(cfg)).port == 9002
    assert load(str(cfg), {"port": 9003}).port == 9003
    monkeypatch.setenv("LECTR_CONFIG", str(cfg))
    assert load().host == "0.0.0.0"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LECTR_PORT": "0"}, "port"),
        ({"LECTR_PORT": "eighty"}, "port"),
        ({"LECTR_OPENAI_BASE_URL": "ftp://x"}, r"providers\.openai\.base_url \(LECTR_OPENAI_BASE_URL\)"),
        ({"LECTR_WRITER__BATCH_SIZE": "0"}, r"writer\.batch_size"),
        ({"LECTR_BREAKER__COOLDOWN": "soon"}, r"breaker\.cooldown"),
        ({"LECTR_DATABASE_URL": "mysql://x"}, "database_url"),
    ],
)
def test_config_errors_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=message):
        load()


def test_config_sections_from_toml_and_env_with_flat_aliases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k in [k for k in __import__("os").environ if k.startswith("LECTR_")]:
        monkeypatch.delenv(k)
    cfg = tmp_path / "lectr.toml"
    cfg.write_text(
        'groq_base_url = "http://127.0.0.1:8/openai/v1"\n'
        '[providers.openai]\nbase_url = "http://127.0.0.1:9/v1"\n'
        "[writer]\nbatch_size = 50\n[policy]\nfail_open = false\n"
    )
    s = load(str(cfg))
    assert s.providers.openai.base_url == "http://127.0.0.1:9/v1"
    assert s.providers.base_url("groq") == "http://127.0.0.1:8/openai/v1"  # flat TOML key
    assert (s.writer.batch_size, s.writer.queue_size, s.policy.fail_open) == (50, 100_000, False)
    assert s.providers.base_url("azure") is None  # per org
    # The environment overrides the file, in either shape.
    monkeypatch.setenv("LECTR_WRITER__BATCH_SIZE", "70")
    monkeypatch.setenv("LECTR_OPENAI_BASE_URL", "http://127.0.0.1:7/v1")
    monkeypatch.setenv("LECTR_POLICY__FAIL_OPEN", "true")
    s = load(str(cfg))
    assert (s.writer.batch_size, s.providers.openai.base_url, s.policy.fail_open) == (
        70,
        "http://127.0.0.1:7/v1",
        True,
    )
    # The handover to workers keeps the sections.
    assert msgspec.json.decode(msgspec.json.encode(s), type=type(s)) == s
    # Both shapes of one setting in one source must agree.
    monkeypatch.setenv("LECTR_PROVIDERS__OPENAI__BASE_URL", "http://127.0.0.1:6/v1")
    with pytest.raises(ConfigError, match="LECTR_PROVIDERS__OPENAI__BASE_URL and LECTR_OPENAI_BASE_URL"):
        load()
    monkeypatch.setenv("LECTR_PROVIDERS__OPENAI__BASE_URL", "http://127.0.0.1:7/v1")
    assert load().providers.openai.base_url == "http://127.0.0.1:7/v1"
    cfg.write_text('openai_base_url = "http://a/v1"\n[providers.openai]\nbase_url = "http://b/v1"\n')
    with pytest.raises(ConfigError, match=r"both openai_base_url and providers\.openai\.base_url"):
        load(str(cfg))
    cfg.write_text("[writer]\nbatch = 5\n")
    with pytest.raises(ConfigError, match="batch"):
        load(str(cfg))
    cfg.write_text("providers = 5\n")
    with pytest.raises(ConfigError, match="providers"):
        load(str(cfg))


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LECTR_ADMIN_TOKEN", "admin-s3cret")
    monkeypatch.setenv("LECTR_REDIS_URL", "redis://user:redis-s3cret@localhost:6379/0")
    monkeypatch.setenv("LECTR_ANTHROPIC_API_KEY", "sk-ant-s3cret")
    monkeypatch.setenv("LECTR_PROVIDERS__AZURE__API_KEY", "azure-s3cret")
    s = load()
    assert s.providers.api_key("anthropic") == "sk-ant-s3cret"
    for text in (repr(s), str(s), json.dumps(masked(s)), repr(s.providers), repr(s.providers.azure)):
        assert "admin-s3cret" not in text and "redis-s3cret" not in text
        assert "sk-ant-s3cret" not in text and "azure-s3cret" not in text
    assert masked(s)["providers"]["anthropic"]["api_key"] == "***"
    assert masked(s)["redis_url"] == "redis://user:***@localhost:6379/0"


def test_unknown_config_key_is_rejected(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="prot"):
        load(str(cfg))


@pytest.mark.parametrize(
    ("model", "override", "name", "unknown"),
    [
        ("gpt-4o", None, "openai", False),
        ("o3-mini", None, "openai", False),
        ("text-embedding-3-small", None, "openai", False),
        ("claude-sonnet-4-5", None, "anthropic", False),
        ("gemma2-9b-it", None, "groq", False),
        ("qwen-qwq-32b", None, "groq", False),
        ("deepseek-r1-distill-llama-70b", None, "groq", False),
        ("gemini-2.5-pro", None, "gemini", False),
        ("mistral-large", None, "openai", True),
        (None, None, "openai", True),
        ("mistral-large", " GROQ ", "groq", False),
    ],
)
def test_detection_table(model: str | None, override: str | None, name: str, unknown: bool) -> None:
    p, u = providers.detect(model, override)
    assert (p.name, u) == (name, unknown)


def azure_url(org: OrgEntry, protocol: str, path: str, model: str | None) -> str:
    """The URL the plan sends an Azure request of `org` to."""
    from lectr.config import Settings
    from lectr.control.snapshot import compile_router

    router = compile_router([org], [], {}, [])
    body = None if model is None else msgspec.json.encode({"model": model})
    p = router.plan(
        providers.catalog(Settings()), org.id, protocol, path, "/v1" + path, "f", None, "azure", body, "", 0.5
    )
    return p.prepare(p.hops()[0])[0]


def test_azure_url() -> None:
    org = OrgEntry(
        id="o", name="o", azure_endpoint="https://res.openai.azure.com/", azure_api_version="2024-10-21"
    )
    url = azure_url(org, "chat", "/chat/completions", "my deploy")
    assert (
        url
        == "https://res.openai.azure.com/openai/deployments/my%20deploy/chat/completions?api-version=2024-10-21"
    )
    with pytest.raises(_core.Refused) as e:
        azure_url(OrgEntry("o", "o"), "chat", "/chat/completions", "m")
    assert isinstance(errors.refused(e.value), errors.AzureConfigMissing)


def test_pricing_arithmetic_and_unknown_models(tmp_path: Path) -> None:
    t = PriceTable.load()
    # gpt-4o: 2.50 input, 1.25 cached input, 10.00 output per 1M tokens.
    assert t.cost("gpt-4o", 1000, 500, 200) == pytest.approx((800 * 2.5 + 200 * 1.25 + 500 * 10) / 1e6)
    assert t.cost("gpt-4o-2024-08-06", 1000, 0, 0) == pytest.approx(1000 * 2.5 / 1e6)
    assert t.cost("claude-3-5-haiku-20241022", 1_000_000, 0, 0) == pytest.approx(0.80)
    # gpt-4 has no cached price: cached tokens bill at the input price.
    assert t.cost("gpt-4", 100, 0, 50) == pytest.approx(100 * 30 / 1e6)
    assert t.cost("no-such-model", 1000, 10, 0) is None
    assert t.cost("gpt-4o", None, None, None) is None
    override = tmp_path / "p.json"
    override.write_text(json.dumps({"models": {"my-model": {"input": 1.0, "output": 2.0}}}))
    assert PriceTable.load(str(override)).cost("my-model", 1_000_000, 1_000_000, 0) == pytest.approx(3.0)


def test_pricing_prices_each_token_class_at_its_own_rate() -> None:
    t = PriceTable.load()
    # claude-sonnet-4: 3.00 input, 0.30 cache read, 3.75 cache write, 15.00 output.
    # prompt 425 = 25 fresh + 300 read + 100 written.
    assert t.cost("claude-sonnet-4", 425, 15, 300, 100) == pytest.approx(
        (25 * 3.0 + 300 * 0.3 + 100 * 3.75 + 15 * 15.0) / 1e6
    )
    # No cache-write price (OpenAI): written tokens bill at the input price.
    assert t.cost("gpt-4o", 1000, 0, 200, 300) == pytest.approx((800 * 2.5 + 200 * 1.25) / 1e6)
    # Parts never exceed the whole.
    assert t.cost("claude-sonnet-4", 10, 0, 8, 100) == pytest.approx((8 * 0.3 + 2 * 3.75) / 1e6)
    for model in ("claude-opus-4-5", "o3-pro", "gpt-5-codex", "codex-mini-latest", "computer-use-preview"):
        assert t.price(model) is not None, model
    assert t.cost("claude-unknown-9", 10, 10, 0, 5) is None


def test_azure_responses_path_and_protocol_routes() -> None:
    org = OrgEntry("o", "o", azure_endpoint="https://r.openai.azure.com/", azure_api_version="2024-10-21")
    assert azure_url(org, "responses", "/responses", "dep") == (
        "https://r.openai.azure.com/openai/v1/responses"
    )
    assert azure_url(org, "responses", "/responses/resp_1/cancel", None) == (
        "https://r.openai.azure.com/openai/v1/responses/resp_1/cancel"
    )
    assert protocols.stored_response_route("/v1/responses/resp_1") == ("/responses/resp_1", ("GET", "DELETE"))
    assert protocols.stored_response_route("/v1/responses/resp_1/input_items") == (
        "/responses/resp_1/input_items",
        ("GET",),
    )
    for bad in ("/v1/responses/a.b", "/v1/responses/x/y", "/v1/responses/x/cancel/z", "/v1/responses/"):
        assert protocols.stored_response_route(bad) is None, bad
    serves = protocols.SERVED_BY
    assert "anthropic" in serves["messages"] and "openai" not in serves["messages"]
    assert "azure" in serves["responses"] and "groq" not in serves["responses"]
    assert "chat" not in serves  # every provider answers chat completions
    err = errors.RateLimited("slow down", 1000)
    assert json.loads(protocols.error_body("messages", err)) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
    }
    assert json.loads(protocols.error_body("responses", err))["error"]["code"] == "rate_limit_exceeded"


def test_core_plan_peeks_and_rewrites() -> None:
    from lectr.config import Settings
    from lectr.control import compile_rules
    from lectr.control.snapshot import compile_router
    from lectr.types import Rule

    mini = Rule(id="r", org_id="o", name="r", priority=1, match_feature="cheap", target_model="gpt-4o-mini")
    router = compile_router([OrgEntry("o", "o")], [], {"o": compile_rules([mini])}, [])
    catalog = providers.catalog(Settings())

    def plan(body: bytes, feature: str = "cheap") -> _core.Plan:
        args = ("o", "chat", "/chat/completions", "/v1/chat/completions", feature, None, None)
        return router.plan(catalog, *args, body, "", 0.5)

    body = b'{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"\\"model\\":\\"x\\""}]}'
    p = plan(body)
    assert (p.model, p.stream, p.inject_usage, p.rule_id) == ("gpt-4o", True, True, "r")
    (hop,) = p.hops()
    assert json.loads(p.prepare(hop)[1]) == {
        **json.loads(body),
        "model": "gpt-4o-mini",
        "stream_options": {"include_usage": True},
    }
    plain = b'{"model":"gpt-4o","messages":[]}'
    other = plan(plain, "other")
    assert other.prepare(other.hops()[0])[1] is plain  # nothing to change: the client's own bytes
    with pytest.raises(_core.Refused, match="JSON"):
        plan(b"{nope")


def test_error_shape() -> None:
    e = errors.InvalidProvider("bad")
    assert msgspec.json.decode(e.body()) == {
        "error": {
            "message": "bad",
            "type": "invalid_request_error",
            "code": "invalid_provider",
            "param": None,
        }
    }
    assert (e.status, e.source) == (400, "proxy")
    assert isinstance(errors.from_core(_core.UpstreamTimeout("first_byte"), "openai"), errors.ProviderTimeout)
    assert isinstance(errors.from_core(_core.UpstreamConnectError("x"), "openai"), errors.ProviderUnreachable)


def test_csv_rows_quote_and_neutralise() -> None:
    import csv
    import io

    from lectr.observe import export
    from lectr.types import Record

    r = Record(
        id="i",
        ts=0.0,
        org_id="o",
        endpoint="/v1/x",
        provider="openai",
        status_code=200,
        latency_ms=1.0,
        feature='=cmd|" /C calc"!A0\nline2',
        task="-x",
        model_requested="a,b",
    )
    text = export.header() + export.rows([r])
    assert text.count("\r\n") == 2  # the newline inside a field is quoted, not a row break
    header, row = list(csv.reader(io.StringIO(text, newline="")))
    assert row[header.index("feature")] == '\'=cmd|" /C calc"!A0\nline2'
    assert row[header.index("task")] == "'-x"
    assert row[header.index("model_requested")] == "a,b"
    assert row[header.index("time_utc")] == "1970-01-01T00:00:00.000Z"


def test_record_ids_are_time_ordered_and_unique() -> None:
    from lectr.gateway.exchange import record_id

    ids = [record_id(1_700_000_000.0 + i / 1000) for i in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    # Different milliseconds sort by time; one millisecond's ids are still distinct.
    assert ids == sorted(ids)
    same = {record_id(1_700_000_000.0) for _ in range(1000)}
    assert len(same) == 1000
