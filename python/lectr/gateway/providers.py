"""The provider registry (a table, not branches): model prefixes, auth
styles and which protocols each answers, compiled with the settings' base
URLs into the Rust core's `Catalog`, which detects providers and builds
upstream URLs. No I/O."""

from __future__ import annotations

import msgspec

from lectr import _core, errors
from lectr.config import Settings
from lectr.gateway import protocols


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


def catalog(settings: Settings | None) -> _core.Catalog:
    """The registry compiled with `settings`' base URLs (without settings:
    for detection only; every URL is then Azure's per-org form)."""
    rows = [
        (
            p.name,
            list(p.prefixes),
            p.auth_style,
            settings.providers.base_url(p.name) if settings is not None and p.global_endpoint else None,
        )
        for p in REGISTRY.values()
    ]
    served = {proto: sorted(names) for proto, names in protocols.SERVED_BY.items()}
    return _core.Catalog(rows, served, dict(protocols.DEFAULT_PROVIDER), DEFAULT_PROVIDER)


_DETECTION = catalog(None)


def detect(model: str | None, override: str | None) -> tuple[Provider, bool]:
    """The provider for a request and whether it was a guess (`provider_unknown`).

    An `X-Lectr-Provider` value wins; an unknown one is a 400 that names the
    valid values. Without one, the model's prefix decides; an unrecognised
    model goes to OpenAI and is flagged unknown.
    """
    try:
        name, unknown = _DETECTION.detect(model, override)
    except _core.Refused as e:
        raise errors.refused(e) from None
    return REGISTRY[name], unknown
