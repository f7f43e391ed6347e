"""The admin API's OpenAPI 3.1 document, built from the route table and the
msgspec structs the handlers use."""

from __future__ import annotations

import functools
import re
from typing import Any

import msgspec

from lectr import __version__
from lectr.admin.routes import ROUTES
from lectr.admin.schemas import (
    ApplyIn,
    BudgetIn,
    FallbackIn,
    KeyOut,
    LimitIn,
    LogPage,
    NewKey,
    OrgCreate,
    OrgCreated,
    OrgOut,
    OrgPatch,
    ReorderIn,
    RuleIn,
    TargetIn,
)
from lectr.gateway.breaker import ProviderHealth
from lectr.insights.service import AnomalyFeed, Overview, Recommendation
from lectr.types import Anomaly, Budget, FallbackChain, LatencyTarget, RateLimit, Rule

_BODIES: dict[str, type[Any]] = {
    "create_org": OrgCreate,
    "patch_org": OrgPatch,
    "create_rule": RuleIn,
    "update_rule": RuleIn,
    "reorder_rules": ReorderIn,
    "set_fallback": FallbackIn,
    "set_budget": BudgetIn,
    "set_limit": LimitIn,
    "set_target": TargetIn,
    "apply_recommendation": ApplyIn,
}
_RESPONSES: dict[str, tuple[int, type[Any] | None, str]] = {
    "list_orgs": (200, None, "{data: [Org]}"),
    "create_org": (201, OrgCreated, "the org and its first key (shown once)"),
    "get_org": (200, OrgOut, "the org"),
    "patch_org": (200, OrgOut, "the updated org"),
    "list_keys": (200, None, "{data: [Key]} (prefixes only)"),
    "create_key": (201, NewKey, "a new key (shown once)"),
    "rotate_key": (201, NewKey, "the replacement key; the old one stops working at once"),
    "revoke_key": (200, None, "{revoked: prefix}"),
    "requests": (200, LogPage, "one page of the request log, newest first"),
    "requests_csv": (200, None, "the whole filtered log as RFC 4180 CSV, streamed"),
    "list_rules": (200, None, "{data: [Rule]} in evaluation order"),
    "create_rule": (201, Rule, "the new rule"),
    "update_rule": (200, Rule, "the updated rule (null clears a field)"),
    "delete_rule": (200, None, "{deleted: id}"),
    "reorder_rules": (200, None, "{data: [Rule]} in the new order"),
    "list_fallbacks": (200, None, "{data: [FallbackChain]}"),
    "set_fallback": (200, FallbackChain, "the chain for a feature, or '*' for the org default"),
    "delete_fallback": (200, None, "{deleted: scope}"),
    "provider_health": (200, None, "{data: [ProviderHealth]} as seen by this instance"),
    "policy_state": (200, None, "spend, remaining budget, limit usage, latency status and recent alerts"),
    "list_budgets": (200, None, "{data: [Budget]}"),
    "set_budget": (200, Budget, "the budget for a feature (or '*') and period (day, month)"),
    "delete_budget": (200, None, "{deleted}"),
    "list_limits": (200, None, "{data: [RateLimit]}"),
    "set_limit": (200, RateLimit, "the rate limits for a feature (or '*')"),
    "delete_limit": (200, None, "{deleted}"),
    "list_targets": (200, None, "{data: [LatencyTarget]}"),
    "set_target": (200, LatencyTarget, "the p95 latency target for a feature (or '*')"),
    "delete_target": (200, None, "{deleted}"),
    "overview": (200, Overview, "traffic over since..until (default the last 24 h), from rollups"),
    "anomalies": (200, AnomalyFeed, "the anomaly feed (all=1: history, dismissed included)"),
    "dismiss_anomaly": (200, Anomaly, "the dismissed anomaly (no more alerts; out of baselines)"),
    "recommendations": (200, None, "{data: [Recommendation]} from the last `days` (default 7) of traffic"),
    "apply_recommendation": (201, Rule, "the routing rule that applies the recommendation"),
}
_INSIGHTS_PARAMS = {
    "overview": [
        ("since", "Unix seconds or ISO 8601 (default: until - 24 h); aligned to the minute"),
        ("until", "Unix seconds or ISO 8601 (default: now), exclusive"),
    ],
    "anomalies": [("all", "1: every anomaly, dismissed and old ones included")],
    "recommendations": [("days", "traffic lookback in days (default 7)")],
    "apply_recommendation": [("days", "the lookback the recommendation was listed with (default 7)")],
}
_LOG_PARAMS = [
    ("since", "Unix seconds or ISO 8601 (inclusive)"),
    ("until", "Unix seconds or ISO 8601 (exclusive)"),
    ("feature", "exact feature tag"),
    ("task", "exact task type"),
    ("model", "requested or actual model"),
    ("provider", "provider name"),
    ("status", "2xx, 3xx, 4xx, 5xx, 499 or error"),
    ("rule", "id of the routing rule applied"),
]


@functools.cache
def document() -> bytes:
    _, components = msgspec.json.schema_components(
        [
            OrgOut,
            KeyOut,
            NewKey,
            OrgCreate,
            OrgCreated,
            OrgPatch,
            LogPage,
            Rule,
            RuleIn,
            ReorderIn,
            FallbackChain,
            FallbackIn,
            ProviderHealth,
            Overview,
            AnomalyFeed,
            Anomaly,
            Recommendation,
            ApplyIn,
        ],
        ref_template="#/components/schemas/{name}",
    )
    paths: dict[str, dict[str, Any]] = {}
    for method, pattern, _, name, admin_only, _ in ROUTES:
        status, model, desc = _RESPONSES[name]
        op: dict[str, Any] = {
            "operationId": name,
            "security": [{"adminToken": []}] if admin_only else [{"adminToken": []}, {"orgKey": []}],
            "parameters": [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in re.findall(r"\{(\w+)\}", pattern)
            ],
            "responses": {
                str(status): {"description": desc}
                | (
                    {
                        "content": {
                            "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
                        }
                    }
                    if model
                    else {}
                ),
                "default": {"description": "error in the OpenAI shape {error: {message, type, code}}"},
            },
        }
        if name in ("requests", "requests_csv"):
            op["parameters"] += [
                {"name": n, "in": "query", "required": False, "schema": {"type": "string"}, "description": d}
                for n, d in _LOG_PARAMS
            ]
            if name == "requests":
                op["parameters"] += [
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                ]
        op["parameters"] += [
            {"name": n, "in": "query", "required": False, "schema": {"type": "string"}, "description": d}
            for n, d in _INSIGHTS_PARAMS.get(name, [])
        ]
        if name in _BODIES:
            ref = f"#/components/schemas/{_BODIES[name].__name__}"
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"$ref": ref}}}}
        paths.setdefault(pattern, {})[method.lower()] = op
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "Lectr admin API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer", "description": "LECTR_ADMIN_TOKEN"},
                "orgKey": {"type": "apiKey", "in": "header", "name": "X-Lectr-Key"},
            },
        },
    }
    return msgspec.json.encode(doc)
