"""The console's forms: each one change through `control.manage.Manager`,
returning the notice the page shows after it (a key of `frame.DONE`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from lectr.console import forms
from lectr.console.frame import Frame, Page
from lectr.control.manage import NewKey
from lectr.errors import InvalidRequest, NotFound
from lectr.types import OrgEntry

Action = Callable[[Page, OrgEntry], Awaitable[str]]


class Actions:
    """One method per form; `table` maps its path to (page to re-render, method)."""

    def __init__(self, frame: Frame) -> None:
        self._m = frame.m
        self.table: dict[str, tuple[str, Action]] = {
            "/rules/create": ("rules", self.rule_create),
            "/rules/update": ("rules", self.rule_update),
            "/rules/toggle": ("rules", self.rule_toggle),
            "/rules/delete": ("rules", self.rule_delete),
            "/rules/move": ("rules", self.rule_move),
            "/budgets/set": ("limits", self.budget_set),
            "/budgets/delete": ("limits", self.budget_delete),
            "/limits/set": ("limits", self.limit_set),
            "/limits/delete": ("limits", self.limit_delete),
            "/targets/set": ("limits", self.target_set),
            "/targets/delete": ("limits", self.target_delete),
            "/fallbacks/set": ("fallbacks", self.fallback_set),
            "/fallbacks/delete": ("fallbacks", self.fallback_delete),
            "/anomalies/dismiss": ("anomalies", self.anomaly_dismiss),
            "/recommendations/apply": ("recommendations", self.recommendation_apply),
            "/keys/revoke": ("keys", self.key_revoke),
            "/settings/azure": ("keys", self.azure_set),
        }

    # --- rules ------------------------------------------------------------------

    async def rule_create(self, page: Page, org: OrgEntry) -> str:
        await self._m.create_rule(org.id, forms.rule_changes(page.form))
        return "rule_saved"

    async def rule_update(self, page: Page, org: OrgEntry) -> str:
        changes = forms.rule_changes(page.form)
        if changes["priority"] is None:
            changes.pop("priority")
        await self._m.update_rule(org.id, page.form.get("rule", ""), changes)
        return "rule_saved"

    async def rule_toggle(self, page: Page, org: OrgEntry) -> str:
        rule = await self._m.rule(org.id, page.form.get("rule", ""))
        await self._m.update_rule(org.id, rule.id, {"enabled": not rule.enabled})
        return "rule_saved"

    async def rule_delete(self, page: Page, org: OrgEntry) -> str:
        await self._m.delete_rule(org.id, page.form.get("rule", ""))
        return "rule_deleted"

    async def rule_move(self, page: Page, org: OrgEntry) -> str:
        ids = [r.id for r in await self._m.store.list_rules(org.id)]
        rid = page.form.get("rule", "")
        if rid not in ids:
            raise NotFound(f"no rule {rid!r}")
        i = ids.index(rid)
        j = i - 1 if page.form.get("dir") == "up" else i + 1
        if 0 <= j < len(ids):
            ids[i], ids[j] = ids[j], ids[i]
        await self._m.reorder_rules(org.id, ids)
        return "rules_reordered"

    # --- spend limits, rate limits, latency targets ---------------------------

    async def budget_set(self, page: Page, org: OrgEntry) -> str:
        f = page.form
        await self._m.set_budget(
            org.id,
            forms.text(f, "scope"),
            f.get("period", "month"),
            forms.number(f, "soft_usd"),
            forms.number(f, "hard_usd"),
            f.get("action", "reject"),
            forms.text(f, "fallback_model"),
        )
        return "budget_saved"

    async def budget_delete(self, page: Page, org: OrgEntry) -> str:
        await self._m.delete_scoped(
            org.id, "budgets", forms.text(page.form, "scope"), page.form.get("period", "month")
        )
        return "deleted"

    async def limit_set(self, page: Page, org: OrgEntry) -> str:
        f = page.form
        await self._m.set_limit(
            org.id,
            forms.text(f, "scope"),
            forms.whole(f, "requests_per_min"),
            forms.whole(f, "tokens_per_min"),
            forms.whole(f, "concurrent_streams"),
        )
        return "limit_saved"

    async def limit_delete(self, page: Page, org: OrgEntry) -> str:
        await self._m.delete_scoped(org.id, "limits", forms.text(page.form, "scope"))
        return "deleted"

    async def target_set(self, page: Page, org: OrgEntry) -> str:
        p95 = forms.number(page.form, "p95_ms")
        if p95 is None:
            raise InvalidRequest("p95_ms must be positive")
        await self._m.set_target(org.id, forms.text(page.form, "scope"), p95)
        return "target_saved"

    async def target_delete(self, page: Page, org: OrgEntry) -> str:
        await self._m.delete_scoped(org.id, "targets", forms.text(page.form, "scope"))
        return "deleted"

    # --- fallbacks, anomalies, recommendations --------------------------------

    async def fallback_set(self, page: Page, org: OrgEntry) -> str:
        targets, statuses = forms.fallback_steps(page.form)
        await self._m.set_fallback(org.id, forms.text(page.form, "scope"), targets, statuses)
        return "fallback_saved"

    async def fallback_delete(self, page: Page, org: OrgEntry) -> str:
        await self._m.delete_fallback(org.id, forms.text(page.form, "scope"))
        return "deleted"

    async def anomaly_dismiss(self, page: Page, org: OrgEntry) -> str:
        await self._m.dismiss_anomaly(org.id, page.form.get("anomaly", ""))
        return "dismissed"

    async def recommendation_apply(self, page: Page, org: OrgEntry) -> str:
        await self._m.apply_recommendation(
            org.id, page.form.get("rec", ""), forms.whole(page.form, "split_percent")
        )
        return "applied"

    # --- keys and settings --------------------------------------------------------

    async def key_revoke(self, page: Page, org: OrgEntry) -> str:
        await self._m.revoke_key(org.id, page.form.get("prefix", ""))
        return "key_revoked"

    async def azure_set(self, page: Page, org: OrgEntry) -> str:
        await self._m.set_org_azure(
            org.id, forms.text(page.form, "azure_endpoint"), forms.text(page.form, "azure_api_version")
        )
        return "azure_saved"

    async def key_issue(self, page: Page, org: OrgEntry, rotate: bool) -> NewKey:
        """A new key for the org (or one replacing `prefix`): the full key, shown once."""
        if rotate:
            _, new = await self._m.rotate_key(org.id, page.form.get("prefix", ""))
        else:
            _, new = await self._m.create_key(org.id)
        return new
