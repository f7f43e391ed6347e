"""Admin API handlers: bearer admin token for everything, or an org key for
reading that org's own data. JSON in and out; errors in the OpenAI shape."""

from __future__ import annotations

import hmac
import re
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from lectr import auth, export
from lectr.admin.insights import InsightsRoutes, parse_time
from lectr.admin.policy import PolicyRoutes
from lectr.admin.routes import JSON, ROUTES, Principal, route
from lectr.admin.routes import encode as _encode
from lectr.config import Settings
from lectr.control import ControlPlane
from lectr.errors import (
    AdminAuthRequired,
    Conflict,
    Forbidden,
    InvalidRequest,
    LectrError,
    MethodNotAllowed,
    NotFound,
)
from lectr.health import Health
from lectr.policy import Policy
from lectr.providers import REGISTRY, VALID_NAMES
from lectr.store import STATUS_CLASSES, Store
from lectr.store import Conflict as StoreConflict
from lectr.store import Missing as StoreMissing
from lectr.types import (
    DEFAULT_FALLBACK_STATUSES,
    FallbackChain,
    KeyEntry,
    LogFilter,
    OrgEntry,
    Record,
    Rule,
    Target,
)
from lectr.webhooks import WebhookSender


class OrgOut(msgspec.Struct):
    """An org as the API shows it."""

    id: str
    name: str
    disabled: bool
    azure_endpoint: str | None
    azure_api_version: str | None
    created_at: float

    @classmethod
    def of(cls, o: OrgEntry) -> OrgOut:
        return cls(o.id, o.name, o.disabled, o.azure_endpoint, o.azure_api_version, o.created_at)


class KeyOut(msgspec.Struct):
    """A key as the API lists it: the prefix only, never the secret."""

    prefix: str
    display: str
    active: bool
    created_at: float
    revoked_at: float | None

    @classmethod
    def of(cls, k: KeyEntry) -> KeyOut:
        return cls(k.prefix, f"lc_key_{k.prefix}...", k.revoked_at is None, k.created_at, k.revoked_at)


class NewKey(msgspec.Struct):
    """A freshly created key; `key` is shown this once."""

    key: str
    prefix: str
    revoked: str | None = None


class OrgCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: str


class OrgCreated(msgspec.Struct):
    org: OrgOut
    key: str


class OrgPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    disabled: bool | None = None
    azure_endpoint: str | None = None
    azure_api_version: str | None = None


class RuleIn(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A rule as created or patched; unset fields keep their value on PATCH."""

    name: str | None = None
    priority: int | None = None
    enabled: bool | None = None
    match_feature: str | None = None
    match_task: str | None = None
    match_provider: str | None = None
    match_model: str | None = None
    target_provider: str | None = None
    target_model: str | None = None
    split_percent: int | None = None


class ReorderIn(msgspec.Struct, forbid_unknown_fields=True):
    order: list[str]  # rule ids or names, first = highest priority


class FallbackIn(msgspec.Struct, forbid_unknown_fields=True):
    targets: list[Target]
    on_status: list[int] = msgspec.field(default_factory=lambda: list(DEFAULT_FALLBACK_STATUSES))


def validate_rule(r: Rule) -> Rule:
    """Reject rules that cannot do anything sensible, with a clear reason."""
    if not r.name.strip() or len(r.name) > 100:
        raise InvalidRequest("a rule needs a name of 1-100 characters")
    for field in ("match_provider", "target_provider"):
        value = getattr(r, field)
        if value is not None and value not in REGISTRY:
            raise InvalidRequest(f"{field} {value!r} is not a provider; valid values: {VALID_NAMES}")
    if r.target_provider is None and r.target_model is None:
        raise InvalidRequest("a rule needs an action: target_provider and/or target_model")
    if not 1 <= r.split_percent <= 100:
        raise InvalidRequest("split_percent must be between 1 and 100")
    return r


def validate_chain(chain: FallbackChain) -> FallbackChain:
    if not chain.targets:
        raise InvalidRequest("a fallback chain needs at least one target")
    for t in chain.targets:
        if t.provider not in REGISTRY:
            raise InvalidRequest(f"{t.provider!r} is not a provider; valid values: {VALID_NAMES}")
        if not t.model:
            raise InvalidRequest("every fallback target needs a model")
    if any(not 400 <= s <= 599 for s in chain.on_status):
        raise InvalidRequest("on_status holds HTTP error statuses (400-599)")
    return chain


class LogPage(msgspec.Struct):
    data: list[Record]
    next_cursor: str | None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64]


def log_filter(org_id: str, q: dict[str, str]) -> LogFilter:
    """A LogFilter from query parameters (shared by the API and the CLI)."""
    status = q.get("status")
    if status is not None and status not in STATUS_CLASSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUS_CLASSES)}")
    return LogFilter(
        org_id=org_id,
        since=parse_time(q["since"], "since") if "since" in q else None,
        until=parse_time(q["until"], "until") if "until" in q else None,
        feature=q.get("feature"),
        task=q.get("task"),
        model=q.get("model"),
        provider=q.get("provider"),
        status=status,
        rule=q.get("rule"),
    )


class AdminAPI(PolicyRoutes, InsightsRoutes):
    """Routes /admin/... requests."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        control: ControlPlane,
        health: Health,
        policy: Policy,
        webhooks: WebhookSender,
    ) -> None:
        self._token = (settings.admin_token or "").encode()
        self._store = store
        self._control = control
        self._health = health
        self._policy = policy
        self._webhooks = webhooks

    async def handle(self, scope: Any, proto: Any) -> None:
        try:
            await self._dispatch(scope, proto)
        except LectrError as e:
            proto.response_bytes(e.status, JSON, e.body())

    async def _dispatch(self, scope: Any, proto: Any) -> None:
        path = scope.path.rstrip("/")
        if path == "/admin/openapi.json" and scope.method == "GET":
            from lectr.admin.openapi import document

            proto.response_bytes(200, JSON, document())
            return
        allowed = []
        for method, _, rx, name, admin_only in ROUTES:
            m = rx.match(path)
            if m is None:
                continue
            if method != scope.method:
                allowed.append(method)
                continue
            who = self._principal(scope)
            params = m.groupdict()
            if admin_only and not who.admin:
                raise Forbidden("this endpoint needs the admin token")
            if not who.admin:
                await self._own_org(who, params["org"])
            await getattr(self, name)(scope, proto, who, params)
            return
        if allowed:
            raise MethodNotAllowed(f"{path} accepts {', '.join(allowed)}")
        raise NotFound(f"no admin route for {scope.method} {path}")

    def _principal(self, scope: Any) -> Principal:
        authz: str = scope.headers.get("authorization") or ""
        if authz[:7].lower() == "bearer ":
            if not self._token:
                raise AdminAuthRequired("the admin API is disabled: set LECTR_ADMIN_TOKEN")
            if hmac.compare_digest(authz[7:].strip().encode(), self._token):
                return Principal(admin=True)
            raise AdminAuthRequired("invalid admin token")
        key = scope.headers.get("x-lectr-key")
        if key:
            org = auth.resolve(self._control.snapshot, key)
            return Principal(admin=False, org_id=org.id)
        raise AdminAuthRequired(
            "send Authorization: Bearer <admin token>, or X-Lectr-Key for your org's own data"
        )

    async def _own_org(self, who: Principal, ref: str) -> None:
        # Another org and no org answer alike: a 403 told an org key which
        # other orgs exist.
        try:
            org = await self._store.get_org(ref)
        except StoreMissing:
            org = None
        if org is None or org.id != who.org_id:
            raise NotFound(f"no org {ref[:200]!r} for this key")

    async def _org(self, ref: str) -> OrgEntry:
        try:
            return await self._store.get_org(ref)
        except StoreMissing as e:
            raise NotFound(str(e)) from None

    async def _body(self, proto: Any, typ: type[Any]) -> Any:
        raw = await proto()
        try:
            return msgspec.json.decode(raw or b"{}", type=typ)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            raise InvalidRequest(f"invalid request body: {e}") from None

    def _json(self, proto: Any, status: int, value: Any) -> None:
        proto.response_bytes(status, JSON, _encode(value))

    # --- orgs ---------------------------------------------------------------

    @route("GET", "/admin/orgs")
    async def list_orgs(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        self._json(proto, 200, {"data": [OrgOut.of(o) for o in await self._store.list_orgs()]})

    @route("POST", "/admin/orgs")
    async def create_org(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        body: OrgCreate = await self._body(proto, OrgCreate)
        if not body.name.strip() or len(body.name) > 200:
            raise InvalidRequest("name must be 1-200 characters")
        try:
            org = await self._store.create_org(body.name.strip())
        except StoreConflict as e:
            raise Conflict(str(e)) from None
        key, _ = await self._store.create_key(org.id)
        await self._changed()
        self._json(proto, 201, OrgCreated(OrgOut.of(org), key))

    @route("GET", "/admin/orgs/{org}", admin_only=False)
    async def get_org(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        self._json(proto, 200, OrgOut.of(await self._org(p["org"])))

    @route("PATCH", "/admin/orgs/{org}")
    async def patch_org(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        body: OrgPatch = await self._body(proto, OrgPatch)
        if body.disabled is not None:
            await self._store.set_org_disabled(org.id, body.disabled)
        if body.azure_endpoint is not None or body.azure_api_version is not None:
            await self._store.set_org_azure(
                org.id,
                body.azure_endpoint if body.azure_endpoint is not None else org.azure_endpoint,
                body.azure_api_version if body.azure_api_version is not None else org.azure_api_version,
            )
        await self._changed()
        self._json(proto, 200, OrgOut.of(await self._org(org.id)))

    # --- keys ---------------------------------------------------------------

    @route("GET", "/admin/orgs/{org}/keys")
    async def list_keys(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        self._json(proto, 200, {"data": [KeyOut.of(k) for k in await self._store.list_keys(org.id)]})

    @route("POST", "/admin/orgs/{org}/keys")
    async def create_key(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        key, entry = await self._store.create_key(org.id)
        await self._changed()
        self._json(proto, 201, NewKey(key, entry.prefix))

    @route("POST", "/admin/orgs/{org}/keys/{prefix}/rotate")
    async def rotate_key(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        await self._revoke(org.id, p["prefix"])
        key, entry = await self._store.create_key(org.id)
        await self._changed()
        self._json(proto, 201, NewKey(key, entry.prefix, revoked=p["prefix"]))

    @route("DELETE", "/admin/orgs/{org}/keys/{prefix}")
    async def revoke_key(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        await self._revoke(org.id, p["prefix"])
        await self._changed()
        self._json(proto, 200, {"revoked": p["prefix"]})

    async def _revoke(self, org_id: str, prefix: str) -> None:
        try:
            await self._store.revoke_key(org_id, prefix)
        except StoreMissing as e:
            raise NotFound(str(e)) from None

    # --- routing rules ------------------------------------------------------

    async def _changed(self) -> None:
        """Apply a change to this instance at once (others follow within 1 s)."""
        await self._control.refresh()

    async def _rule(self, org_id: str, ref: str) -> Rule:
        for r in await self._store.list_rules(org_id):
            if ref in (r.id, r.name):
                return r
        raise NotFound(f"no rule {ref!r}")

    @route("GET", "/admin/orgs/{org}/rules")
    async def list_rules(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        self._json(proto, 200, {"data": await self._store.list_rules(org.id)})

    @route("POST", "/admin/orgs/{org}/rules")
    async def create_rule(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        body: RuleIn = await self._body(proto, RuleIn)
        existing = await self._store.list_rules(org.id)
        fields = {k: v for k, v in msgspec.structs.asdict(body).items() if v is not None}
        fields.setdefault("name", "")
        fields.setdefault("priority", max((r.priority for r in existing), default=0) + 10)
        rule = validate_rule(Rule(id="", org_id=org.id, **fields))
        try:
            created = await self._store.create_rule(rule)
        except StoreConflict:
            raise Conflict(f"a rule named {rule.name!r} already exists in this org") from None
        await self._changed()
        self._json(proto, 201, created)

    @route("PATCH", "/admin/orgs/{org}/rules/{rule}")
    async def update_rule(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        rule = await self._rule(org.id, p["rule"])
        body: RuleIn = await self._body(proto, RuleIn)
        raw = msgspec.json.decode(msgspec.json.encode(body))
        # An explicit null clears a condition or target; an absent field keeps it.
        updated = validate_rule(msgspec.structs.replace(rule, **raw))
        try:
            await self._store.update_rule(updated)
        except StoreConflict:
            raise Conflict(f"a rule named {updated.name!r} already exists in this org") from None
        await self._changed()
        self._json(proto, 200, updated)

    @route("DELETE", "/admin/orgs/{org}/rules/{rule}")
    async def delete_rule(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        rule = await self._rule(org.id, p["rule"])
        await self._store.delete_rule(org.id, rule.id)
        await self._changed()
        self._json(proto, 200, {"deleted": rule.id})

    @route("POST", "/admin/orgs/{org}/rules/reorder")
    async def reorder_rules(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        body: ReorderIn = await self._body(proto, ReorderIn)
        rules = await self._store.list_rules(org.id)
        ids = [(await self._rule(org.id, ref)).id for ref in body.order]
        if sorted(ids) != sorted(r.id for r in rules):
            raise InvalidRequest("order must name every rule of the org exactly once")
        await self._store.reorder_rules(org.id, ids)
        await self._changed()
        self._json(proto, 200, {"data": await self._store.list_rules(org.id)})

    # --- fallbacks and health ---------------------------------------------

    @route("GET", "/admin/orgs/{org}/fallbacks")
    async def list_fallbacks(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        self._json(proto, 200, {"data": await self._store.list_fallbacks(org.id)})

    @route("PUT", "/admin/orgs/{org}/fallbacks/{scope}")
    async def set_fallback(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        body: FallbackIn = await self._body(proto, FallbackIn)
        chain = validate_chain(
            FallbackChain(
                org_id=org.id, scope=p["scope"], targets=tuple(body.targets), on_status=tuple(body.on_status)
            )
        )
        await self._store.set_fallback(chain)
        await self._changed()
        self._json(proto, 200, chain)

    @route("DELETE", "/admin/orgs/{org}/fallbacks/{scope}")
    async def delete_fallback(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        try:
            await self._store.delete_fallback(org.id, p["scope"])
        except StoreMissing as e:
            raise NotFound(str(e)) from None
        await self._changed()
        self._json(proto, 200, {"deleted": p["scope"]})

    @route("GET", "/admin/health")
    async def provider_health(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        self._json(proto, 200, {"data": self._health.table()})

    # --- request log --------------------------------------------------------

    @route("GET", "/admin/orgs/{org}/requests", admin_only=False)
    async def requests(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        q = dict(parse_qsl(scope.query_string))
        try:
            limit = min(max(int(q.get("limit", "100")), 1), 1000)
        except ValueError:
            raise InvalidRequest("limit must be an integer") from None
        try:
            page, cursor = await self._store.query_requests(log_filter(org.id, q), q.get("cursor"), limit)
        except ValueError as e:
            raise InvalidRequest(str(e)) from None
        self._json(proto, 200, LogPage(page, cursor))

    @route("GET", "/admin/orgs/{org}/requests.csv", admin_only=False)
    async def requests_csv(self, scope: Any, proto: Any, who: Principal, p: dict[str, str]) -> None:
        org = await self._org(p["org"])
        f = log_filter(org.id, dict(parse_qsl(scope.query_string)))
        transport = proto.response_stream(
            200,
            [
                ("content-type", "text/csv; charset=utf-8"),
                ("content-disposition", f'attachment; filename="lectr-{_safe(org.name)}-requests.csv"'),
            ],
        )
        await transport.send_str(export.header())
        async for batch in self._store.export_requests(f):
            await transport.send_str(export.rows(batch))
