"""Platform switches: the operator's kill switches, the sender's automatic holds and their probes.

One item holds two kinds of switch. The operator's (``paused``, ``paused_tenants``: the
runbooks) and the automatic holds the sender trips on SES account/configuration errors
(``auto_paused``, ``auto_paused_tenants``). Only a successful probe lifts an automatic hold,
and it never touches the operator's switch.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from core import schema
from core.adapters.dynamodb import Update, serialize
from core.adapters.repositories._base import TableRepository, _fields
from core.domain.errors import StaleWrite
from core.domain.models import iso, utcnow


class DynamoSwitches(TableRepository):
    """Platform switches: the ``PLATFORM``/``SENDING`` item, ``PLATFORM``/``SENDING_PROBE#<scope>`` items, and any ``PLATFORM`` flag read by key."""

    def sending_paused(self, tenant_id: str) -> str | None:
        """Why sending is paused for this tenant (platform-wide or tenant kill switch), or None."""
        holds = self.sending_holds(tenant_id)
        if holds["operator"]:
            return holds["operator"]
        if holds["automatic"]:
            return f"{'platform' if 'platform' in holds['automatic'] else 'tenant'} (automatic): {holds['reason']}"
        return None

    def sending_holds(self, tenant_id: str) -> dict[str, Any]:
        """``operator``: why an operator switch holds this tenant (or None); ``automatic``: the
        automatic holds that apply (``platform``, ``tenant``) and their ``reason``."""
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
        """Set the platform-wide and/or a tenant's kill switch. ``source="automatic"`` sets the
        sender's automatic hold instead, which lives apart from the operator's switch."""
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
        self.table.update(Update(schema.SENDING_SWITCH_KEY, set=sets, add=add))
        if delete is not None:
            self.table.client.update_item(
                TableName=self.table.name, Key=serialize(schema.SENDING_SWITCH_KEY),
                UpdateExpression="DELETE #t :t", ExpressionAttributeNames={"#t": tenants},
                ExpressionAttributeValues={":t": {"SS": [delete]}})
        return _fields(self.table.get(schema.SENDING_SWITCH_KEY) or {})

    def lift_automatic_hold(self, tenant_id: str, scopes: Iterable[str]) -> None:
        """A probe send succeeded: lift the automatic holds in ``scopes`` (never the operator's)."""
        scopes = set(scopes)
        if "platform" in scopes:
            self.table.update(Update(schema.SENDING_SWITCH_KEY, set={"auto_paused": False,
                                                                     "auto_updated_at": iso(utcnow())}))
        if "tenant" in scopes:
            self.set_sending_switch(tenant_id=tenant_id, tenant_paused=False, source="automatic")

    def claim_sending_probe(self, scope: str, now: datetime, every_seconds: float) -> bool:
        """Half-open breaker: at most one probe send per ``scope`` every ``every_seconds``."""
        try:
            self.table.update(Update(
                schema.sending_probe_key(scope),
                set={"next_probe_at": iso(now + timedelta(seconds=every_seconds))},
                condition="attribute_not_exists(next_probe_at) OR next_probe_at <= :now", values={":now": iso(now)},
            ))
            return True
        except StaleWrite:
            return False

    def delay_sending_probe(self, scope: str, until: datetime) -> None:
        """No probe for ``scope`` before ``until`` (a hold was just tripped)."""
        self.table.update(Update(schema.sending_probe_key(scope), set={"next_probe_at": iso(until)}))

    def get_flag(self, key: dict[str, str]) -> dict[str, Any] | None:
        return self.table.get(key)
