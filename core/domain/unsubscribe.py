"""The one-click unsubscribe token every mail carries: signed here, opened here (one module, so
the format has one owner). HMAC-SHA256 over the payload with the platform's unsubscribe secret;
the payload is readable (tenant, address, message id), the signature makes it unforgeable."""

from __future__ import annotations

import base64
import hashlib
import hmac

from core.domain.errors import NotFound


def _signature(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()[:32]


def sign_unsubscribe_token(secret: str, tenant_id: str, email: str, message_id: str) -> str:
    payload = base64.urlsafe_b64encode(f"{tenant_id}\n{email}\n{message_id}".encode()).decode().rstrip("=")
    return f"{payload}.{_signature(secret, payload)}"


def open_unsubscribe_token(secret: str, token: str) -> tuple[str, str, str]:
    """(tenant, email, message id) of a token we signed; NotFound (404) for anything else."""
    payload, _, sig = token.partition(".")
    if not sig or not hmac.compare_digest(sig, _signature(secret, payload)):
        raise NotFound("unknown unsubscribe link")
    try:
        tenant, email, message_id = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode().split("\n")
    except (ValueError, UnicodeDecodeError):
        raise NotFound("unknown unsubscribe link") from None
    return tenant, email, message_id
