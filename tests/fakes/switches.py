"""``SwitchRepository`` in memory: the operator's kill switches and the sender's automatic holds on
one item (a probe lifts only the automatic ones), and the half-open probe's schedule."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from core import schema
from core.domain.errors import StaleWrite
from core.domain.models import iso, utcnow
from tests.fakes.base import FakeRepository
from tests.fakes.table import FakeUpdate, fields_of


class FakeSwitches(FakeRepository):
    def sending_paused(self, tenant_id: str) -> str | None:
        holds = self.sending_holds(tenant_id)
        if holds["operator"]:
            return str(holds["operator"])
        if holds["automatic"]:
            return f"{'platform' if 'platform' in holds['automatic'] else 'tenant'} (automatic): {holds['reason']}"
        return None

    def sending_holds(self, tenant_id: str) -> dict[str, Any]:
        item = self.table.get(schema.SENDING_SWITCH_KEY, consistent=False) or {}
        operator = None
        if item.get("paused"):
            operator = f"platform: {item.get('reason', 'paused')}"
        elif tenant_id in (item.get("paused_tenants") or set()):
            operator = f"tenant: {item.get('reason', 'paused')}"
        automatic = []
        if item.get("auto_paused"):
            automatic.append("platform")
        if tenant_id in (item.get("auto_paused_tenants") or set()):
            automatic.append("tenant")
        return {"operator": operator, "automatic": automatic, "reason": item.get("auto_reason")}

    def set_sending_switch(self, *, paused: bool | None = None, tenant_id: str | None = None,
                           tenant_paused: bool | None = None, reason: str = "",
                           source: str = "operator") -> dict[str, Any]:
        auto = source == "automatic"
        flag, tenants, why = ("auto_paused", "auto_paused_tenants", "auto_reason") if auto else (
            "paused", "paused_tenants", "reason")
        add = delete = None
        sets: dict[str, Any] = {"updated_at": iso(utcnow()), why: reason or None}
        if auto:
            sets = {"auto_updated_at": iso(utcnow()), why: reason or None}
        if paused is not None:
            sets[flag] = paused
        if tenant_id is not None:
            if tenant_paused:
                add = {tenants: {tenant_id}}
            else:
                delete = tenant_id
        self.table.update(FakeUpdate(schema.SENDING_SWITCH_KEY, set=sets, add=add))
        if delete is not None:  # DynamoStore sends this DELETE straight to the client: never fenced
            self.table.unfenced().update(FakeUpdate(schema.SENDING_SWITCH_KEY, delete={tenants: {delete}}))
        return fields_of(self.table.get(schema.SENDING_SWITCH_KEY) or {})

    def lift_automatic_hold(self, tenant_id: str, scopes: Iterable[str]) -> None:
        scopes = set(scopes)
        if "platform" in scopes:
            self.table.update(FakeUpdate(schema.SENDING_SWITCH_KEY, set={"auto_paused": False,
                                                                         "auto_updated_at": iso(utcnow())}))
        if "tenant" in scopes:
            self.set_sending_switch(tenant_id=tenant_id, tenant_paused=False, source="automatic")

    def claim_sending_probe(self, scope: str, now: datetime, every_seconds: float) -> bool:
        try:
            self.table.update(FakeUpdate(
                schema.sending_probe_key(scope), set={"next_probe_at": iso(now + timedelta(seconds=every_seconds))},
                condition=lambda i: i is None or "next_probe_at" not in i or i["next_probe_at"] <= iso(now)))
            return True
        except StaleWrite:
            return False

    def delay_sending_probe(self, scope: str, until: datetime) -> None:
        self.table.update(FakeUpdate(schema.sending_probe_key(scope), set={"next_probe_at": iso(until)}))

    def get_flag(self, key: dict[str, str]) -> dict[str, Any] | None:
        return self.table.get(key)
