"""Tenants: creation with a first API key and a webhook signing secret, and secret rotation."""

from __future__ import annotations

import base64
import secrets as _secrets
from typing import Any

from core.domain.errors import Conflict
from core.domain.ids import check_tenant_id
from core.services.auth import create_key, hash_key


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(_secrets.token_bytes(32)).decode()


def create_tenant(store: Any, signing: Any, tenant_id: str) -> None:
    """The tenant record and its webhook signing secret (every callback needs one); idempotent."""
    check_tenant_id(tenant_id)
    if store.get_tenant(tenant_id) is None:
        store.put_tenant(tenant_id, {"name": tenant_id})
    if not signing.signing_secrets(tenant_id):
        signing.set_secret(tenant_id, new_webhook_secret(), keep_previous=False)


def ensure_tenant(store: Any, signing: Any, tenant_id: str, *, api_key: str | None = None,
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


def rotate_webhook_secret(signing: Any, tenant_id: str) -> dict[str, Any]:
    fresh = new_webhook_secret()
    signing.set_secret(tenant_id, fresh, keep_previous=True)
    return {"secrets": signing.signing_secrets(tenant_id)}
