"""What every route needs: the caller's principal (auth + scope) and audit logging."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler.api_gateway import Router

from core.observability import log
from core.services.auth import BearerVerifier, Principal, authenticate_request
from handlers.context import deps

_key_cache: dict[tuple[str, str], tuple[float, Principal]] = {}
_verifier: list[BearerVerifier | None] = []


def _bearer() -> BearerVerifier | None:
    if not _verifier:
        s = deps().settings
        _verifier.append(BearerVerifier(s.oauth_issuer, s.oauth_audience or "", s.oauth_jwks_url or "",
                                        s.oauth_tenant_claim) if s.oauth_issuer else None)
    return _verifier[0]


def principal(router: Router, scope: str) -> Principal:
    """Authenticate the request (X-API-Key, plus a bearer JWT when OAuth is configured) and
    require ``scope``: 401 unknown or missing credentials, 403 missing scope."""
    import time

    headers = router.current_event.headers
    raw = headers.get("x-api-key") or headers.get("X-API-Key")
    bearer = headers.get("authorization") or headers.get("Authorization")
    cache_key = (raw or "", bearer or "")
    hit = _key_cache.get(cache_key)
    if hit and hit[0] > time.monotonic():
        p = hit[1]
    else:
        p = authenticate_request(deps().store, raw, bearer, _bearer(), deps().settings.oauth_required)
        _key_cache[cache_key] = (time.monotonic() + 30, p)  # warm Lambdas re-check every 30 s
    p.require(scope)
    return p


def reset_auth_cache() -> None:
    _key_cache.clear()
    _verifier.clear()


def audit(router: Router, p: Principal, action: str, target: str | None, **fields: Any) -> None:
    ctx = router.current_event.request_context
    log.info("audit", tenant_id=p.tenant_id, key_id=p.key_id, action=action, target=target,
             request_id=getattr(ctx, "request_id", None), **fields)


def limit_param(router: Router) -> tuple[int, str | None]:
    from core.domain.errors import InvalidInput

    q = router.current_event.query_string_parameters or {}
    try:
        limit = int(q.get("limit", 50))
    except ValueError:
        raise InvalidInput("limit must be an integer") from None
    if not 1 <= limit <= 500:
        raise InvalidInput("limit must be between 1 and 500")
    return limit, q.get("cursor") or None
