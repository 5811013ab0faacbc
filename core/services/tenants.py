"""Tenants: creation with a first API key and a webhook signing secret, and secret rotation."""

from __future__ import annotations

import base64
import secrets as _secrets
from typing import Any

from config.settings import Settings
from core.domain.errors import Conflict, Forbidden, InvalidInput
from core.domain.ids import check_tenant_id
from core.services.auth import create_key, hash_key
from core.services.ports import CampaignStore, SecretStore, TenantRepository


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(_secrets.token_bytes(32)).decode()


def create_tenant(store: CampaignStore, signing: SecretStore, tenant_id: str) -> None:
    """The tenant record and its webhook signing secret (every callback needs one); idempotent."""
    check_tenant_id(tenant_id)
    if store.get_tenant(tenant_id) is None:
        store.put_tenant(tenant_id, {"name": tenant_id})
    if not signing.signing_secrets(tenant_id):
        signing.set_secret(tenant_id, new_webhook_secret(), keep_previous=False)


def ensure_tenant(store: CampaignStore, signing: SecretStore, tenant_id: str, *, api_key: str | None = None,
                  webhook_secret: str | None = None) -> dict[str, Any]:
    """Create (or re-assert) a tenant; idempotent, so a restart with the same values is a no-op."""
    check_tenant_id(tenant_id)
    if store.get_tenant(tenant_id) is None:
        store.put_tenant(tenant_id, {"name": tenant_id})
    existing = store.api_key(hash_key(api_key)) if api_key else None
    if existing is not None:  # a restart never rewrites a key record: a revoked key stays revoked
        if existing.tenant_id != tenant_id:
            raise Conflict("that API key belongs to another tenant")
        raw, key = api_key, existing
    else:
        raw, key = create_key(store, tenant_id, raw=api_key)
    current = signing.signing_secrets(tenant_id)
    wanted = webhook_secret or (current[0] if current else new_webhook_secret())
    if not current or current[0] != wanted:
        signing.set_secret(tenant_id, wanted, keep_previous=False)
    return {"tenant_id": tenant_id, "api_key": raw, "key_id": key.key_id, "webhook_secret": wanted,
            "key_revoked": key.revoked}


def rotate_webhook_secret(signing: SecretStore, tenant_id: str) -> dict[str, Any]:
    fresh = new_webhook_secret()
    signing.set_secret(tenant_id, fresh, keep_previous=True)
    return {"secrets": signing.signing_secrets(tenant_id)}


def sender_entry(value: str) -> str:
    """An authorised sender: a full address, or ``@domain`` for any address at a domain the
    tenant owns (verified as its own SES identity)."""
    v = value.strip().lower()
    local, at, domain = v.rpartition("@")
    if not at or not domain or "." not in domain or any(c.isspace() for c in v):
        raise InvalidInput(f"{value!r} is neither an address nor @domain")
    return v


def allow_sender(store: CampaignStore, tenant_id: str, value: str) -> list[str]:
    tenant = store.get_tenant(check_tenant_id(tenant_id)) or {}
    senders = sorted({*tenant.get("senders", []), sender_entry(value)})
    store.set_tenant_senders(tenant_id, senders)
    return senders


def revoke_sender(store: CampaignStore, tenant_id: str, value: str) -> list[str]:
    tenant = store.get_tenant(check_tenant_id(tenant_id)) or {}
    senders = sorted(set(tenant.get("senders", [])) - {sender_entry(value)})
    store.set_tenant_senders(tenant_id, senders)
    return senders


def check_sender(store: TenantRepository, settings: Settings, tenant_id: str, from_header: str | None) -> None:
    """A tenant may send as the platform's default sender or as a sender authorised for it:
    a shared domain's other local parts belong to other tenants."""
    if not from_header:
        return
    address = from_header.split("<")[-1].rstrip(">").strip().lower()
    if address == settings.default_from.lower():
        return
    allowed = set((store.get_tenant(tenant_id) or {}).get("senders", []))
    if address in allowed or f"@{address.rpartition('@')[2]}" in allowed:
        return
    raise Forbidden(f"this tenant may not send as {address}: an administrator authorises senders "
                    "(`emailplatform senders allow --tenant … ADDRESS`)")
