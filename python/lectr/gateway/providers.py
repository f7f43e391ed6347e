"""The provider registry (a table, not branches): detection by model prefix,
the `X-Lectr-Provider` override, upstream URLs and auth styles. No I/O."""

from __future__ import annotations

from urllib.parse import quote

import msgspec

from lectr.config import Settings
from lectr.errors import AzureConfigMissing, InvalidProvider, InvalidRequest
from lectr.types import OrgEntry


class Provider(msgspec.Struct, frozen=True):
    """One provider: how to recognise its models and how to call it."""

    name: str
    prefixes: tuple[str, ...]
    auth_style: str  # "bearer", "x-api-key" or "api-key" (see rust_core/src/headers.rs)
    global_endpoint: bool  # one base URL in settings.providers; Azure's is per org


REGISTRY: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider(
            "openai",
            ("gpt-", "o1", "o3", "o4", "chatgpt-", "text-embedding-", "davinci", "babbage"),
            "bearer",
            True,
        ),
        Provider("anthropic", ("claude-",), "x-api-key", True),
        Provider("groq", ("llama-", "mixtral-", "gemma", "qwen", "deepseek-r1-distill"), "bearer", True),
        Provider("gemini", ("gemini-",), "bearer", True),
        Provider("azure", (), "api-key", False),
    )
}
VALID_NAMES = ", ".join(REGISTRY)
DEFAULT_PROVIDER = "openai"

# Longest prefix first, so a more specific prefix always wins.
_PREFIXES: tuple[tuple[str, str], ...] = tuple(
    sorted(((pfx, p.name) for p in REGISTRY.values() for pfx in p.prefixes), key=lambda t: -len(t[0]))
)


def detect(model: str | None, override: str | None) -> tuple[Provider, bool]:
    """The provider for a request and whether it was a guess (`provider_unknown`).

    An `X-Lectr-Provider` value wins; an unknown one is a 400 that names the
    valid values. Without one, the model's prefix decides; an unrecognised
    model goes to OpenAI and is flagged unknown.
    """
    if override:
        p = REGISTRY.get(override.strip().lower())
        if p is None:
            raise InvalidProvider(f"unknown X-Lectr-Provider {override[:64]!r}; valid values: {VALID_NAMES}")
        return p, False
    if model:
        m = model.lower()
        for pfx, name in _PREFIXES:
            if m.startswith(pfx):
                return REGISTRY[name], False
    return REGISTRY[DEFAULT_PROVIDER], True


def upstream_url(provider: Provider, path: str, model: str | None, settings: Settings, org: OrgEntry) -> str:
    """The URL to call for `path` (e.g. `/chat/completions`) on `provider`."""
    base = settings.providers.base_url(provider.name)
    if base is not None:
        return base.rstrip("/") + path
    if not org.azure_endpoint or not org.azure_api_version:
        raise AzureConfigMissing(
            "this org has no Azure endpoint and api-version configured; "
            "set them with `lectr orgs azure ORG --endpoint URL --api-version VERSION`"
        )
    endpoint = org.azure_endpoint.rstrip("/")
    version = quote(org.azure_api_version, safe="")
    if path == "/models":
        return f"{endpoint}/openai/models?api-version={version}"
    if path == "/responses" or path.startswith("/responses/"):
        # Azure's v1 API: the deployment is the body's `model`, no api-version.
        return f"{endpoint}/openai/v1{path}"
    if not model:
        raise InvalidRequest("Azure requests need a model (the deployment name)")
    if model in (".", "..") or not model.strip():
        # Percent-encoding leaves dot segments alone, and every HTTP stack on
        # the way resolves them: `..` would address another path of the
        # endpoint, not a deployment.
        raise InvalidRequest(f"invalid Azure deployment name {model[:100]!r}")
    return f"{endpoint}/openai/deployments/{quote(model, safe='')}{path}?api-version={version}"
