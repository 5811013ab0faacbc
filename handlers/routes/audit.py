"""The audit log: ``GET /audit`` and the one place API calls are recorded (``record_call``,
called by the dispatch in ``handlers/api.py`` for every authenticated write and sensitive read)."""

from __future__ import annotations

import re
from typing import Any

from aws_lambda_powertools.event_handler.api_gateway import Router

from core.adapters.privacy import AuditRepository
from core.observability import log
from core.services import audit
from core.services.auth import Principal
from handlers.context import deps, memo
from handlers.routes.common import (
    CursorParam,
    Limit,
    answers,
    open_cursor,
    path_param,
    principal,
    requires,
    sealed,
)

router = Router()


def _repo(d: Any) -> AuditRepository:
    return AuditRepository(d.store.table)


@router.get("/audit", summary="This tenant's audit log, newest first (no secrets, bodies or addresses)",
            responses=answers())
@requires("audit:read")
def list_audit(limit: Limit = 50, cursor: CursorParam = None) -> dict:
    d = deps()
    return sealed(d.settings, audit.audit_page(memo("audit_repo", _repo), principal().tenant_id, limit,
                                               open_cursor(d.settings, cursor)))


def record_call(event: dict[str, Any], template: str, scope: str, rule: Any, base: str, caller: Principal | None,
                response: dict[str, Any]) -> None:
    """Record one API call if it is audited. Never fails the request: a lost entry is logged."""
    method = str(event.get("httpMethod") or "GET").upper()
    if caller is None or not audit.audited(method, scope):
        return
    try:
        d = deps()
        found = rule.match(event.get("path") or "")
        params = {k: path_param(v) for k, v in (found.groupdict() if found else {}).items()}
        ctx = event.get("requestContext") or {}
        e = audit.entry(tenant_id=caller.tenant_id, actor=caller.key_id, method=method,
                        route=re.sub(r"<(\w+)>", r"{\1}", template).removeprefix(base) or "/",
                        params=params, status=int(response.get("statusCode") or 0),
                        source_ip=(ctx.get("identity") or {}).get("sourceIp"), request_id=ctx.get("requestId"),
                        at=d.clock.now(), hasher=d.store.address_hasher, answer=response.get("body"))
        audit.record(memo("audit_repo", _repo), d.store, e, d.clock.now())
    except Exception as exc:
        log.warning("audit entry not recorded", route=template, error=str(exc)[:300])
