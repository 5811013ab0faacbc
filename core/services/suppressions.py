"""Per-tenant suppression list and signed unsubscribe tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from email_validator import EmailNotValidError

from core.domain.errors import InvalidInput, NotFound
from core.domain.privacy import canonical_address
from core.domain.unsubscribe import open_unsubscribe_token
from core.services.ports import CampaignStore


def _normal(email: str) -> str:
    """The form ingest and the sender look up: an IDN domain as punycode, as it is sent."""
    try:
        return canonical_address(email)
    except EmailNotValidError as exc:
        raise InvalidInput(f"not a valid address: {exc}") from None


def add_suppression(store: CampaignStore, tenant_id: str, email: str, reason: str) -> dict[str, Any]:
    e = _normal(email)
    store.suppress(tenant_id, e, reason, "api")
    return get_suppression(store, tenant_id, e)  # an erased address stays suppressed by its hash only


def remove_suppression(store: CampaignStore, tenant_id: str, email: str) -> None:
    if not store.unsuppress(tenant_id, _normal(email)):
        raise NotFound("address is not suppressed")


def get_suppression(store: CampaignStore, tenant_id: str, email: str) -> dict[str, Any]:
    e = _normal(email)
    item = store.get_suppression(tenant_id, e)
    if not item and getattr(store, "hash_suppressed", None) and store.hash_suppressed(tenant_id, e):
        # erased: suppressed by its keyed hash only (core/services/privacy.py); nothing else is held
        return {"email": e, "reason": "erasure", "kept_as": "keyed hash"}
    if not item:
        raise NotFound("address is not suppressed")
    return item


def list_suppressions(store: CampaignStore, tenant_id: str, limit: int, cursor: str | None) -> dict[str, Any]:
    page = store.suppressions_page(tenant_id, limit, cursor)
    return {"items": [{k: v for k, v in i.items() if k not in ("PK", "SK")} for i in page.items],
            "next_cursor": page.cursor}


def unsubscribe(store: CampaignStore, secret: str, token: str, requested_at: datetime | None = None) -> None:
    """Idempotent: a second click finds the address already suppressed and succeeds.
    ``requested_at`` (when the click reached the API) is stored so the compliance report can
    measure how fast unsubscribes are honoured."""
    tenant, email, message_id = open_unsubscribe_token(secret, token)
    store.suppress(tenant, email.lower(), "unsubscribe", message_id, requested_at=requested_at)
