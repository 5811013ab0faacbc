"""What every route needs: the caller (authenticated before the body is looked at), declared
query parameters, sealed cursors, documented error answers and audit logs.

The gate in ``handlers/api.py`` authenticates and authorises a request *before* the resolver
validates its body (401, then 403, then 422), using the scope each route declares with
``@requires``. Routes read the result with ``principal()``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query
from pydantic import BaseModel

from config.settings import Settings
from core.domain.errors import DomainError, Unauthorized
from core.observability import log
from core.services.auth import BearerVerifier, Principal, authenticate_request
from core.services.ports import TenantRepository

F = TypeVar("F", bound=Callable[..., Any])

PUBLIC = "public"
_caller: ContextVar[Principal | None] = ContextVar("caller", default=None)


def requires(scope: str) -> Callable[[F], F]:
    """Declare the scope a route needs (``PUBLIC`` for none); the gate checks it before validation."""

    def mark(fn: F) -> F:
        fn.required_scope = scope  # type: ignore[attr-defined]
        return fn

    return mark


def principal() -> Principal:
    """The caller of the current request (set by the gate)."""
    p = _caller.get()
    if p is None:
        raise Unauthorized("missing X-API-Key header")
    return p


def current_principal() -> Principal | None:
    """The caller if the gate authenticated one (the audit log reads it), else None."""
    return _caller.get()


def set_principal(p: Principal | None) -> Any:
    return _caller.set(p)


def reset_principal(token: Any) -> None:
    _caller.reset(token)


class BadRequest(DomainError):
    code, http_status = "bad_request", 400


class InvalidCursor(BadRequest):
    code = "invalid_cursor"


# --- authentication cache ------------------------------------------------------------------

AUTH_CACHE_SECONDS = 5.0  # a revoked key stops working within this long on a warm Lambda


class AuthCache:
    """Caller lookups for a few seconds, bounded in size, never past a bearer token's ``exp``."""

    def __init__(self, ttl: float = AUTH_CACHE_SECONDS, size: int = 1024):
        self.ttl, self.size = ttl, size
        self._items: OrderedDict[tuple[str, str], tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> Principal | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is None or hit[0] <= time.time():
                self._items.pop(key, None)
                return None
            self._items.move_to_end(key)
            return hit[1]

    def put(self, key: tuple[str, str], p: Principal, not_after: float | None = None) -> None:
        until = time.time() + self.ttl
        if not_after is not None:
            until = min(until, not_after)
        with self._lock:
            self._items[key] = (until, p)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class Authenticator:
    """API key (hashed lookup) plus an optional OAuth bearer token, cached briefly."""

    def __init__(self, settings: Settings, store: TenantRepository):
        self.settings, self.store = settings, store
        self.cache = AuthCache()
        self.verifier = (BearerVerifier(settings.oauth_issuer, settings.oauth_audience or "",
                                        settings.oauth_jwks_url or "", settings.oauth_tenant_claim)
                         if settings.oauth_issuer else None)

    def authenticate(self, headers: dict[str, str]) -> Principal:
        lower = {k.lower(): v for k, v in (headers or {}).items()}
        raw, bearer = lower.get("x-api-key"), lower.get("authorization")
        key = (raw or "", bearer or "")
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        p = authenticate_request(self.store, raw, bearer, self.verifier, self.settings.oauth_required)
        self.cache.put(key, p, p.expires_at)
        return p


# --- query parameters and cursors ----------------------------------------------------------

Limit = Annotated[int, Query(ge=1, le=500, description="items per page (1–500)")]
CursorParam = Annotated[str | None, Query(max_length=4096, description="opaque cursor from `next_cursor`")]


def _cursor_key(settings: Settings) -> bytes:
    return hmac.new(settings.unsubscribe_secret.encode(), b"pagination-cursor", hashlib.sha256).digest()


def seal_cursor(settings: Settings, inner: str | None) -> str | None:
    """An opaque, signed cursor: clients cannot forge or tamper with pagination state."""
    if not inner:
        return None
    payload = base64.urlsafe_b64encode(inner.encode()).decode().rstrip("=")
    sig = hmac.new(_cursor_key(settings), payload.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{payload}.{sig}"


def open_cursor(settings: Settings, cursor: str | None) -> str | None:
    """The inner cursor of one we sealed; 400 for anything else."""
    if not cursor:
        return None
    payload, _, sig = cursor.partition(".")
    good = hmac.new(_cursor_key(settings), payload.encode(), hashlib.sha256).hexdigest()[:32]
    if not sig or not hmac.compare_digest(sig, good):
        raise InvalidCursor("cursor is not valid: use the next_cursor of a previous page")
    try:
        return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidCursor("cursor is not valid") from None


def sealed(settings: Settings, page: dict[str, Any]) -> dict[str, Any]:
    return {**page, "next_cursor": seal_cursor(settings, page.get("next_cursor"))}


def path_param(value: str) -> str:
    """API Gateway REST passes the raw (percent-encoded) path; decode a parameter once."""
    return unquote(value)


# --- documented answers ----------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]]


class ErrorBody(BaseModel):
    error: ErrorDetail


_DESCRIPTIONS = {
    400: "malformed request (JSON, encoding, cursor)",
    401: "missing, unknown or revoked credentials",
    403: "the credentials lack the scope this operation needs",
    404: "unknown id, or an id of another tenant",
    409: "the resource's status does not allow this",
    413: "payload too large",
    422: "the request does not match the schema or the rules",
    503: "temporarily unavailable: retry later",
}


def answers(*codes: int, ok: int = 200, ok_description: str = "success",
            public: bool = False) -> dict[int, Any]:
    """OpenAPI ``responses`` for a route: the error codes every route can return, plus ``codes``."""
    common = (400, 404, 422, 503) if public else (400, 401, 403, 404, 422, 503)
    out: dict[int, Any] = {c: {"description": _DESCRIPTIONS[c], "content": {"application/json": {"model": ErrorBody}}}
                           for c in sorted({*common, *codes})}
    out[ok] = {"description": ok_description}
    return out


def audit(router: Router, p: Principal, action: str, target: str | None, **fields: Any) -> None:
    ctx = getattr(router.current_event, "request_context", None)
    log.info("audit", tenant_id=p.tenant_id, key_id=p.key_id, action=action, target=target,
             request_id=getattr(ctx, "request_id", None), **fields)
