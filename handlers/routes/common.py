"""What every route needs: the caller's principal (auth + scope) and audit logging."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler.api_gateway import Router

from core.observability import log
from core.services.auth import Principal, authenticate
from handlers.context import deps

_key_cache: dict[str, tuple[float, Principal]] = {}


def principal(router: Router, scope: str) -> Principal:
    """Authenticate the X-API-Key header and require ``scope`` (401/403 otherwise)."""
    import time

    raw = router.current_event.headers.get("x-api-key") or router.current_event.headers.get("X-API-Key")
    hit = _key_cache.get(raw or "")
    if hit and hit[0] > time.monotonic():
        p = hit[1]
    else:
        p = authenticate(deps().store, raw)
        _key_cache[raw or ""] = (time.monotonic() + 30, p)  # warm Lambdas re-check every 30 s
    p.require(scope)
    return p


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
