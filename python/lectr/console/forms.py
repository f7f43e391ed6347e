"""Reading the console's form fields into the values `control.manage` takes;
a field that does not parse is an `InvalidRequest` naming it."""

from __future__ import annotations

import math
from typing import Any

from lectr.control.manage import RULE_FIELDS
from lectr.errors import InvalidRequest
from lectr.types import Target

# The rule form's fields: the rule's own, but `enabled` (a button of its own).
RULE_FORM = sorted(RULE_FIELDS - {"enabled"})


def number(form: dict[str, str], name: str) -> float | None:
    v = form.get(name, "").strip()
    if not v:
        return None
    try:
        out = float(v)
    except ValueError:
        raise InvalidRequest(f"{name} must be a number") from None
    if not math.isfinite(out):
        raise InvalidRequest(f"{name} must be a number")
    return out


def whole(form: dict[str, str], name: str) -> int | None:
    v = form.get(name, "").strip()
    if not v:
        return None
    try:
        return int(v)
    except ValueError:
        raise InvalidRequest(f"{name} must be a whole number") from None


def text(form: dict[str, str], name: str) -> str | None:
    v = form.get(name, "").strip()
    return v or None


def field_of(message: str, fields: tuple[str, ...]) -> str | None:
    """The form field an error message is about (messages name their field)."""
    for f in sorted(fields, key=len, reverse=True):
        if f in message:
            return f
    return None


def rule_changes(form: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {f: text(form, f) for f in RULE_FORM if f not in ("priority", "split_percent")}
    out["name"] = form.get("name", "").strip()
    out["priority"] = whole(form, "priority")
    split = whole(form, "split_percent")
    out["split_percent"] = 100 if split is None else split
    out["enabled"] = form.get("enabled") == "on"
    return out


def fallback_steps(form: dict[str, str]) -> tuple[list[Target], list[int] | None]:
    """The fallback form's path (`provider:model`, by commas or lines) and statuses."""
    targets = []
    for raw_part in form.get("targets", "").replace("\n", ",").split(","):
        part = raw_part.strip()
        if not part:
            continue
        provider, sep, model = part.partition(":")
        if not sep:
            raise InvalidRequest(f"targets: write each step as provider:model, got {part[:60]!r}")
        targets.append(Target(provider.strip(), model.strip()))
    statuses = None
    raw = form.get("on_status", "").strip()
    if raw:
        try:
            statuses = [int(s) for s in raw.replace(" ", ",").split(",") if s]
        except ValueError:
            raise InvalidRequest("on_status holds HTTP error statuses (400-599)") from None
    return targets, statuses
