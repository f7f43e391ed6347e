"""The price table: USD per 1M input, cached-input, cache-write and output tokens per model,
shipped as data (`data/prices.json`) and overridable by the operator."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import msgspec


class Price(msgspec.Struct, frozen=True):
    """USD per 1M tokens."""

    input: float
    output: float
    cached_input: float | None = None
    # Prompt tokens written to the cache (Anthropic bills them above input).
    cache_write: float | None = None


class _PriceFile(msgspec.Struct):
    models: dict[str, Price]


# Dated snapshots (`-2024-08-06`, `-20241022`) and `-latest` aliases are
# priced as their base model.
_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


class PriceTable:
    """Looks up a model's price and turns token counts into a cost."""

    def __init__(self, prices: dict[str, Price]) -> None:
        self._prices = prices
        self._memo: dict[str, Price | None] = {}

    @classmethod
    def load(cls, override_file: str | None = None) -> PriceTable:
        """The shipped table, with `override_file` (same JSON shape) on top."""
        shipped = resources.files("lectr").joinpath("data/prices.json").read_bytes()
        prices = msgspec.json.decode(shipped, type=_PriceFile).models
        if override_file:
            raw = Path(override_file).read_bytes()
            try:
                prices.update(msgspec.json.decode(raw, type=_PriceFile).models)
            except (msgspec.ValidationError, json.JSONDecodeError, msgspec.DecodeError) as e:
                raise ValueError(f"prices file {override_file!r} is invalid: {e}") from None
        return cls(prices)

    def price(self, model: str | None) -> Price | None:
        """The price of `model`, or None when it is unknown."""
        if not model:
            return None
        try:
            return self._memo[model]
        except KeyError:
            pass
        name = model.lower()
        p = self._prices.get(name)
        if p is None:
            p = self._prices.get(_SUFFIX.sub("", name))
        if len(self._memo) < 10_000:
            self._memo[model] = p
        return p

    def cost(
        self,
        model: str | None,
        prompt: int | None,
        completion: int | None,
        cached: int | None,
        cache_write: int | None = None,
    ) -> float | None:
        """USD for the given usage, or None (unpriced) for an unknown model or
        when no token counts are known. Never a silent zero. `cached` and
        `cache_write` are parts of `prompt`; each class is priced at its own
        rate (the input price where the table has none for it)."""
        p = self.price(model)
        if p is None or (prompt is None and completion is None):
            return None
        cached = min(cached or 0, prompt or 0)
        written = min(cache_write or 0, (prompt or 0) - cached)
        fresh = (prompt or 0) - cached - written
        cached_rate = p.cached_input if p.cached_input is not None else p.input
        write_rate = p.cache_write if p.cache_write is not None else p.input
        total = fresh * p.input + cached * cached_rate + written * write_rate + (completion or 0) * p.output
        return total / 1_000_000
