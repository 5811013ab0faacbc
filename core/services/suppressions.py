"""Per-tenant suppression list and signed unsubscribe tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from email_validator import EmailNotValidError, validate_email

from core.domain.errors import InvalidInput, NotFound


def _normal(email: str) -> str:
    try:
        return validate_email(email, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise InvalidInput(f"not a valid address: {exc}") from None


def add_suppression(store: Any, tenant_id: str, email: str, reason: str) -> dict[str, Any]:
    e = _normal(email)
    store.suppress(tenant_id, e, reason, "api")
    return get_suppression(store, tenant_id, e)  # an erased address stays suppressed by its hash only


def remove_suppression(store: Any, tenant_id: str, email: str) -> None:
    if not store.unsuppress(tenant_id, _normal(email)):
        raise NotFound("address is not suppressed")


def get_suppression(store: Any, tenant_id: str, email: str) -> dict[str, Any]:
    e = _normal(email)
    item = store.get_suppression(tenant_id, e)
    if not item and getattr(store, "hash_suppressed", None) and store.hash_suppressed(tenant_id, e):
        # erased: suppressed by its keyed hash only (core/services/privacy.py); nothing else is held
        return {"email": e, "reason": "erasure", "kept_as": "keyed hash"}
    if not item:
        raise NotFound("address is not suppressed")
    return item


def list_suppressions(store: Any, tenant_id: str, limit: int, cursor: str | None) -> dict[str, Any]:
    page = store.suppressions_page(tenant_id, limit, cursor)
    return {"items": [{k: v for k, v in i.items() if k not in ("PK", "SK")} for i in page.items],
            "next_cursor": page.cursor}


def verify_token(secret: str, token: str) -> tuple[str, str, str]:
    """Return (tenant, email, message id) of a token we signed; 404 for anything else."""
    payload, _, sig = token.partition(".")
    good = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()[:32]
    if not sig or not hmac.compare_digest(sig, good):
        raise NotFound("unknown unsubscribe link")
    try:
        tenant, email, message_id = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode().split("\n")
    except (ValueError, UnicodeDecodeError):
        raise NotFound("unknown unsubscribe link") from None
    return tenant, email, message_id


def unsubscribe(store: Any, secret: str, token: str) -> None:
    """Idempotent: a second click finds the address already suppressed and succeeds."""
    tenant, email, message_id = verify_token(secret, token)
    store.suppress(tenant, email.lower(), "unsubscribe", message_id)
