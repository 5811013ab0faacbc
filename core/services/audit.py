"""The audit log: who did what to which target, when, from where, under which request id.

One entry per API write and per admin or privacy action, recorded in one place (the API's
dispatch, ``handlers/api.py``), never per route; operator tools (the admin CLI, the runbooks)
record theirs through ``operator_entry``. An entry holds no secret, no body and no
address: a path parameter that is an address is kept as the tenant's keyed hash of it (the same
hash an erased address is suppressed by), so the log needs no erasure and survives one. Entries
expire after the tenant's ``audit`` retention.
"""

from __future__ import annotations

import getpass
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from core.domain.models import iso
from core.services.ports import AuditLog, CampaignStore, Clock, TenantRepository
from core.services.privacy import expiration, store_retention

# operations audited although they change nothing: they disclose secrets or personal data
SENSITIVE_READ_SCOPES = frozenset({"admin", "audit:read", "privacy:read", "privacy:write"})
# ids a write's answer names (the created resource): kept as the target, the body itself is not
TARGET_KEYS = ("transaction_id", "template_id", "upload_id", "erasure_id")


def audited(method: str, scope: str) -> bool:
    return method not in ("GET", "HEAD", "OPTIONS") or scope in SENSITIVE_READ_SCOPES


def entry(*, tenant_id: str, actor: str, method: str, route: str, params: dict[str, str], status: int,
          source_ip: str | None, request_id: str | None, at: datetime, hasher: Callable[[str, str], str],
          answer: str | None = None, source: str = "api") -> dict[str, Any]:
    target = {k: (f"hmac:{hasher(tenant_id, v)}" if "@" in v else v) for k, v in params.items()}
    if answer and 200 <= status < 300 and not target:
        try:
            body = json.loads(answer)
            target = {k: body[k] for k in TARGET_KEYS if isinstance(body, dict) and isinstance(body.get(k), str)}
        except ValueError:
            pass
    return {"entry_id": uuid.uuid4().hex[:16], "tenant_id": tenant_id, "at": iso(at), "actor": actor,
            "action": f"{method} {route}", "target": target, "status": status,
            "outcome": "ok" if status < 400 else "refused", "source": source, "source_ip": source_ip,
            "request_id": request_id}


def operator_entry(*, tenant_id: str, operator: str, source: str, action: str, target: dict[str, str], at: datetime,
                   hasher: Callable[[str, str], str]) -> dict[str, Any]:
    """An operator's action outside the API (``source``: ``cli`` or ``runbook``): actor
    ``operator:<who>``, action ``<SOURCE> <what>``. ``target`` names ids only, never a secret."""
    return entry(tenant_id=tenant_id, actor=f"operator:{operator}", method=source.upper(), route=action,
                 params=target, status=200, source_ip=None, request_id=f"{source}-{uuid.uuid4().hex[:12]}", at=at,
                 hasher=hasher, source=source)


def record(repo: AuditLog, store: TenantRepository, e: dict[str, Any], now: datetime) -> None:
    repo.put(e, expiration(store_retention(store, e["tenant_id"])["audit"], now))


def record_operator_action(repo: AuditLog, store: CampaignStore, clock: Clock, tenant_id: str, action: str,
                           target: dict[str, str], *, source: str) -> dict[str, Any]:
    """Record an operator tool's action (``source``: ``cli`` for the admin CLI, ``runbook``) in the
    tenant's audit log like an API write, the OS user running the tool as the operator; returns the
    entry. ``target`` holds ids, never a secret."""
    now = clock.now()
    e = operator_entry(tenant_id=tenant_id, operator=getpass.getuser(), source=source, action=action,
                       target=target, at=now, hasher=store.address_hasher)
    record(repo, store, e, now)
    return e


def audit_page(repo: AuditLog, tenant_id: str, limit: int, cursor: str | None) -> dict[str, Any]:
    page = repo.page(tenant_id, limit, cursor)
    return {"items": [{k: v for k, v in i.items() if k != "tenant_id"} for i in page.items], "next_cursor": page.cursor}
