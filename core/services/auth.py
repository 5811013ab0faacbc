"""API keys: stored as SHA-256 hashes, each mapped to one tenant and a set of scopes."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from core.domain.errors import Forbidden, Unauthorized
from core.domain.models import ApiKey, new_id

SCOPES = ("campaigns:read", "campaigns:write", "templates:write", "suppressions:write", "admin")


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    key_id: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        if scope not in self.scopes and "admin" not in self.scopes:
            raise Forbidden(f"this API key lacks the {scope!r} scope")


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def create_key(store: Any, tenant_id: str, scopes: list[str] | None = None, raw: str | None = None) -> tuple[str, ApiKey]:
    """Create a key; the raw value is returned once and never stored."""
    raw = raw or "ep_" + secrets.token_urlsafe(32)
    key = ApiKey(key_id=new_id("key_"), tenant_id=tenant_id, scopes=list(scopes or SCOPES))
    store.put_api_key(hash_key(raw), key)
    return raw, key


def revoke_key(store: Any, tenant_id: str, key_id: str) -> bool:
    for key_hash, key in store.api_keys(tenant_id):
        if key.key_id == key_id:
            store.revoke_api_key(key_hash)
            return True
    return False


def authenticate(store: Any, raw: str | None) -> Principal:
    if not raw:
        raise Unauthorized("missing X-API-Key header")
    key = store.api_key(hash_key(raw))
    if key is None or key.revoked:
        raise Unauthorized("unknown or revoked API key")
    return Principal(key.tenant_id, key.key_id, frozenset(key.scopes))
